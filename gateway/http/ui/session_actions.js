// The shown session's controls: New chat, Rename (inline), Pin / Unpin, Archive / Unarchive,
// Delete (after a confirmation), Export (a list of three downloads), and the New chat shortcut.
//
// Each control calls the HTTP API and applies the session it returns at once; the gateway
// also publishes the change as a `session` event, which is how every other tab (and this one,
// again, harmlessly) sees it. The conversation passes its callbacks in `listenSessionActions`,
// so this module never imports it (it imports this one, to redraw the controls).
//
// The shortcut is Ctrl+Shift+O (Cmd+Shift+O on a Mac), as in ChatGPT: browsers keep
// Ctrl/Cmd+T and Ctrl/Cmd+N for themselves and never hand them to a page, and Ctrl+Shift+N
// opens a private window in Chrome.

import { api, fetchFile, hasToken } from "./connection.js";
import { messageCount, sessionTitle } from "./sidebar.js";
import { dom, showNotice, state } from "./state.js";

let callbacks = { applied: (_event, _session, _activated) => {}, showActive: () => {} };

/** The session the conversation shows, if the page knows it. */
function shownSession() {
  const id = state.view.sessionId;
  return id ? state.sessions.get(id) || null : null;
}

/** Wire the controls. `applied(event, session, activated)` takes a session the API returned
 * as the `session` event announcing it would; `showActive()` shows the selected port's
 * active session. */
export function listenSessionActions(given) {
  callbacks = given;
  dom.newChat.addEventListener("click", newChat);
  dom.rename.addEventListener("click", startRename);
  dom.renameForm.addEventListener("submit", (event) => {
    event.preventDefault();
    finishRename(true);
  });
  dom.renameCancel.addEventListener("click", () => finishRename(false));
  dom.renameInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      finishRename(false);
    }
  });
  dom.pin.addEventListener("click", () => {
    const session = shownSession();
    if (session) change(session, { pinned: !session.pinned });
  });
  dom.archive.addEventListener("click", () => {
    const session = shownSession();
    if (session) change(session, { status: session.status === "archived" ? "active" : "archived" });
  });
  dom.deleteSession.addEventListener("click", deleteShown);
  listenExport();
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.shiftKey && !event.altKey && event.code === "KeyO") {
      event.preventDefault();
      newChat();
    }
  });
}

/** Enable and name the controls for what is shown. */
export function renderSessionActions() {
  const session = shownSession();
  dom.newChat.disabled = state.view.port === null;
  for (const button of [dom.rename, dom.pin, dom.archive, dom.deleteSession, dom.exportButton]) {
    button.disabled = !session;
  }
  for (const link of dom.exportMenu.querySelectorAll("a")) {
    if (session) link.href = exportPath(session, link.dataset.format);
    else link.removeAttribute("href");
  }
  if (!session) showExportMenu(false);
  dom.pin.textContent = session && session.pinned ? "Unpin" : "Pin";
  dom.archive.textContent = session && session.status === "archived" ? "Unarchive" : "Archive";
  if (!session && !dom.renameForm.hidden) finishRename(false);
}

async function newChat() {
  const port = state.view.port;
  if (port === null) return;
  try {
    const session = await api("/api/sessions", { method: "POST", body: { port } });
    // Shown at once: the `created` event that follows finds it in place.
    if (!state.view.follow) callbacks.showActive();
    callbacks.applied("created", session, true);
  } catch (error) {
    showNotice(`Could not start a new chat: ${error.message}`);
  }
}

async function change(session, body) {
  try {
    const changed = await api(`/api/sessions/${encodeURIComponent(session.id)}`, {
      method: "PATCH",
      body,
    });
    callbacks.applied("updated", changed, body.status === "active"); // an unarchive activates
  } catch (error) {
    showNotice(`Could not change the session: ${error.message}`);
  }
}

function startRename() {
  const session = shownSession();
  if (!session) return;
  dom.renameInput.value = session.title || "";
  dom.renameInput.placeholder = sessionTitle({ ...session, title: null });
  dom.title.hidden = true;
  dom.renameForm.hidden = false;
  dom.renameInput.focus();
  dom.renameInput.select();
}

/** Close the inline rename; `save`: send the title typed (empty: back to the derived one). */
function finishRename(save) {
  const session = shownSession();
  dom.renameForm.hidden = true;
  dom.title.hidden = false;
  if (!dom.rename.disabled) dom.rename.focus();
  if (!save || !session) return;
  const title = dom.renameInput.value.trim();
  if (title === (session.title || "")) return;
  change(session, { title: title || null });
}

async function deleteShown() {
  const session = shownSession();
  if (!session) return;
  const title = sessionTitle(session);
  if (!confirm(`Delete “${title}” and its ${messageCount(session)}? It disappears from every tab.`)) return;
  try {
    await api(`/api/sessions/${encodeURIComponent(session.id)}`, { method: "DELETE" });
    callbacks.applied("deleted", session, false);
  } catch (error) {
    showNotice(`Could not delete the session: ${error.message}`);
  }
}

// ---- export --------------------------------------------------------------------------------

function listenExport() {
  dom.exportButton.addEventListener("click", () => showExportMenu(dom.exportMenu.hidden));
  for (const element of [dom.exportButton, dom.exportMenu]) {
    element.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || dom.exportMenu.hidden) return;
      event.preventDefault();
      showExportMenu(false);
      dom.exportButton.focus();
    });
  }
  document.addEventListener("click", (event) => {
    if (!dom.exportMenu.hidden && !event.target.closest(".export")) showExportMenu(false);
  });
  for (const link of dom.exportMenu.querySelectorAll("a")) {
    link.addEventListener("click", (event) => exportAs(event, link));
  }
}

/** Show (and focus the first format of) or hide the list of formats. */
function showExportMenu(open) {
  dom.exportMenu.hidden = !open;
  dom.exportButton.setAttribute("aria-expanded", String(open));
  if (open) dom.exportMenu.querySelector("a[href]")?.focus();
}

function exportPath(session, format) {
  return `/api/sessions/${encodeURIComponent(session.id)}/export?format=${format}`;
}

/** A tab without a token of its own downloads by the link itself: the browser streams it to
 * disk (with the local token's cookie, if the gateway wants one). A link cannot carry a
 * bearer token, so a tab holding one fetches the file with it and saves the Blob. */
async function exportAs(event, link) {
  showExportMenu(false);
  dom.exportButton.focus();
  if (!hasToken()) return;
  event.preventDefault();
  try {
    const { blob, name } = await fetchFile(link.href);
    const url = URL.createObjectURL(blob);
    const save = document.createElement("a");
    save.href = url;
    save.download = name;
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000); // once the download has taken it
  } catch (error) {
    showNotice(`Could not export the session: ${error.message}`);
  }
}
