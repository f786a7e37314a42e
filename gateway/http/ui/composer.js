// The composer: typing a message to the selected port, and the messages sent and not yet
// acked.
//
// A message typed is kept in the outbox (outbox.js, IndexedDB) before anything else, and
// shown at the end of the conversation, marked: "Waiting for the connection" while the
// gateway is unreachable, "Sending…" once handed to the socket. Each carries a random client
// id: it is sent again on every (re)connection until acked, and the id makes the gateway store
// it once. The ack forgets it (the message itself comes back through the subscription). A
// "try again later" (`rate_limited`, `overloaded`) sends it again after the wait the gateway
// names; any other refusal, or no ack within `settings.ackTimeoutMs` of a send on an open
// socket, marks it "Not sent", with the reason and Retry, Edit and Discard. What a
// sent or acked message means for the view is the conversation's business: `listenComposer`
// and app.js tell it, so this module does not import the conversation (which imports it).

import { live } from "./connection.js";
import { forget, keep, kept, lastUser, oldestFirst, rememberUser, whenUnavailable } from "./outbox.js";
import { h, renderContent } from "./render.js";
import { dom, hideNotice, showNotice, state } from "./state.js";

// Tunable from the console and by tests (window.chatGateway.composer).
export const settings = { ackTimeoutMs: 15000 };
const TRANSIENT = new Set(["rate_limited", "overloaded"]);

// One message in flight at a time, the oldest first, so that messages arrive in the order
// they were typed even when one must wait (a "try again later") or be sent again.
const flight = { id: null, timer: null }; // the message sent and not acked; its ack timer
let holdUntil = 0; // a "try again later" holds the queue until then (ms since the epoch)
let holdTimer = null;

/** Enable, label and explain the box for the selected port (or for no port). */
export function updateComposer() {
  const port = state.selectedPort;
  dom.input.disabled = port === null;
  dom.input.placeholder = port === null ? "Select a port first" : `Message to port ${port}`;
  dom.composerLabel.textContent = port === null ? "Message" : `Message to port ${port}`;
  dom.send.disabled = port === null || !dom.input.value.trim();
  renderOutbox();
}

/** Send on submit and on a plain Enter; `onSent(port)` runs after each message is sent. */
export function listenComposer(onSent) {
  const send = () => {
    const port = sendMessage();
    if (port !== null) onSent(port);
  };
  dom.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  dom.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.ctrlKey &&
        !event.metaKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  dom.input.addEventListener("input", updateComposer);
  dom.outbox.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    const record = button && state.pending.get(button.closest("[data-id]").dataset.id);
    if (record) act(button.dataset.action, record);
  });
  whenUnavailable((text) => showNotice(text, "outbox"));
  // A page opened while the gateway is unreachable still shows what its user left unsent.
  loadOutbox(lastUser());
}

/** Keep and send the box's text to the selected port; the port, or null if there was
 * nothing to send. */
function sendMessage() {
  const port = state.selectedPort;
  const content = dom.input.value;
  if (port === null || !content.trim()) return null;
  const record = { id: uuid(), user: state.user, port, content, created_at: new Date().toISOString(), failed: null };
  state.pending.set(record.id, record);
  keep(record); // before the send: IndexedDB runs the transactions of a store in order
  pump();
  dom.input.value = "";
  hideNotice();
  updateComposer();
  dom.scroller.scrollTop = dom.scroller.scrollHeight;
  return port;
}

/** Send the oldest message that can go, unless one is in flight or the queue is held. It
 * goes if the socket is open and its user is the one signed in; with no ack in time, it is
 * marked "Not sent" and the next one goes. */
function pump() {
  if (flight.id !== null || state.user === null || !live.isOpen) return;
  const wait = holdUntil - Date.now();
  if (wait > 0) {
    clearTimeout(holdTimer);
    holdTimer = setTimeout(pump, wait);
    return;
  }
  const next = [...state.pending.values()]
    .filter((record) => record.failed === null && record.user === state.user)
    .sort(oldestFirst)[0];
  if (!next) return;
  const sent = live.send({
    type: "message",
    ref: next.id,
    id: next.id,
    port: next.port,
    content: next.content,
    role: "user",
    content_type: "markdown",
    timestamp: next.created_at,
  });
  if (!sent) return; // the next connection sends it
  flight.id = next.id;
  flight.timer = setTimeout(() => {
    if (flight.id !== next.id) return;
    land();
    if (live.isOpen) fail(next, "no answer from the gateway"); // else: sent again on return
  }, settings.ackTimeoutMs);
  renderOutbox();
}

/** The message in flight is answered (or given up on): the next may go. */
function land() {
  clearTimeout(flight.timer);
  flight.id = null;
  flight.timer = null;
}

function fail(record, reason) {
  record.failed = reason;
  keep(record);
  renderOutbox();
  showNotice(`Not sent: ${reason}`);
  pump();
}

/** A `welcome`: the connection's user is known. Their unsent messages (those typed before
 * any welcome too) are read from the outbox and all sent again; another user's leave the
 * page (they stay in the outbox for that user's next visit). */
export async function resendPending(user) {
  const changed = user !== state.user;
  state.user = user;
  rememberUser(user);
  if (changed) {
    for (const [id, record] of state.pending) {
      if (record.user !== null && record.user !== user) state.pending.delete(id);
    }
    await loadOutbox(user);
  }
  for (const record of state.pending.values()) {
    if (record.user === null) {
      record.user = user; // typed before the first welcome: this user's
      keep(record);
    }
  }
  land(); // a new connection: whatever was in flight is sent again, in order
  pump();
  renderOutbox();
}

async function loadOutbox(user) {
  const records = [...(user === null ? [] : await kept(user)), ...(await kept(null))];
  for (const record of records) {
    if (!state.pending.has(record.id)) state.pending.set(record.id, record);
  }
  renderOutbox();
}

/** An `ack`: true if it was for a message sent from here (now forgotten). */
export function settleSent(frame) {
  if (!state.pending.delete(frame.ref)) return false;
  if (flight.id === frame.ref) land();
  forget(frame.ref);
  renderOutbox();
  pump();
  return true;
}

/** An `error`: true if it refused a message sent from here: sent again after the wait a
 * "try again later" names (the queue held meanwhile), else marked "Not sent". */
export function refuseSent(frame) {
  const record = state.pending.get(frame.ref);
  if (!record) return false;
  if (flight.id === record.id) land();
  const wait = frame.details?.retry_after_ms;
  if (TRANSIENT.has(frame.code) && Number.isFinite(wait)) {
    holdUntil = Date.now() + Math.max(wait, 50);
    pump();
    return true;
  }
  fail(record, frame.message || frame.code || "refused");
  return true;
}

/** Retry (send again, same client id), Edit (the text back in the box) or Discard. */
function act(action, record) {
  if (action === "retry") {
    record.failed = null;
    keep(record);
    pump();
    hideNotice();
  } else {
    state.pending.delete(record.id);
    if (flight.id === record.id) land();
    forget(record.id);
    if (action === "edit") {
      dom.input.value = dom.input.value ? `${dom.input.value}\n${record.content}` : record.content;
      dom.input.focus();
    }
  }
  updateComposer();
}

/** The selected port's unsent messages, after its active session's (where they will go). */
function renderOutbox() {
  const view = state.view;
  const shown = [...state.pending.values()].filter(
    (record) => view.follow && record.port === view.port && (record.user === state.user || record.user === null),
  );
  dom.outbox.replaceChildren(...shown.map(outgoing));
}

function outgoing(record) {
  const status = record.failed !== null ? "failed" : live.isOpen && state.user !== null ? "sending" : "pending";
  const label = { failed: "Not sent", sending: "Sending…", pending: "Waiting for the connection" }[status];
  return h(
    "article",
    {
      class: `message role-user outgoing ${status}`,
      "data-testid": "outgoing-message",
      "data-state": status,
      "data-id": record.id,
      "aria-label": `Your message, ${label.toLowerCase()}`,
    },
    h(
      "header",
      { class: "message-meta" },
      h("span", { class: "message-role", text: "User" }),
      h("span", { class: "tag outgoing-state", text: label }),
    ),
    renderContent(record.content, "markdown"),
    status === "failed" ? h("p", { class: "outgoing-error", text: `Not sent: ${record.failed}` }) : null,
    status === "failed"
      ? h(
          "div",
          { class: "outgoing-actions" },
          h("button", { type: "button", "data-action": "retry", text: "Retry" }),
          h("button", { type: "button", class: "secondary", "data-action": "edit", text: "Edit" }),
          h("button", { type: "button", class: "secondary", "data-action": "discard", text: "Discard" }),
        )
      : null,
  );
}

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // Plain http on a non-loopback host is not a secure context: no randomUUID there.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
