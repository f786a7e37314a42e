// A port's label: the name a person gives it (the project's, say), shown beside its IDE type
// in the sidebar and the conversation's head, the same in every tab.
//
// "Label port" opens an inline field in the head, as Rename does for a session: Enter saves,
// Escape cancels, an empty label takes it away. The gateway announces the change as a `port`
// event, which is how every other tab (and this one, again, harmlessly) sees it.

import { api } from "./connection.js";
import { ensurePort, renderPorts } from "./sidebar.js";
import { dom, showNotice, state } from "./state.js";

let redraw = () => {};

/** Wire the control; `changed(port)` redraws what shows the port's label. */
export function listenPortLabel(changed) {
  redraw = changed;
  dom.labelPort.addEventListener("click", startEditing);
  dom.portLabelForm.addEventListener("submit", (event) => {
    event.preventDefault();
    finishEditing(true);
  });
  dom.portLabelCancel.addEventListener("click", () => finishEditing(false));
  dom.portLabelInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      finishEditing(false);
    }
  });
}

/** Enable the control for the port shown; name it by what it does. */
export function renderPortLabelAction() {
  const port = state.view.port;
  dom.labelPort.disabled = port === null;
  const label = port === null ? null : state.ports.get(port)?.label;
  dom.labelPort.textContent = label ? "Rename port" : "Label port";
  if (port === null && !dom.portLabelForm.hidden) finishEditing(false);
}

/** A `port` event, or this tab's own change: the port's label is now `label` (null: none). */
export function applyPortLabel(port, label) {
  ensurePort(port).label = label;
  renderPorts();
  redraw(port);
}

function startEditing() {
  const port = state.view.port;
  if (port === null) return;
  dom.portLabelInput.value = state.ports.get(port)?.label || "";
  dom.info.hidden = true;
  dom.portLabelForm.hidden = false;
  dom.portLabelInput.focus();
  dom.portLabelInput.select();
}

async function finishEditing(save) {
  const port = state.view.port;
  dom.portLabelForm.hidden = true;
  dom.info.hidden = false;
  if (!dom.labelPort.disabled) dom.labelPort.focus();
  if (!save || port === null) return;
  const label = dom.portLabelInput.value.trim();
  if (label === (state.ports.get(port)?.label || "")) return;
  try {
    const answer = await api(`/api/ports/${port}`, { method: "PATCH", body: { label: label || null } });
    applyPortLabel(answer.port, answer.label);
  } catch (error) {
    showNotice(`Could not label the port: ${error.message}`);
  }
}
