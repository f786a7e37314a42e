// The composer: typing a message to the selected port, and the frames sent and not yet acked.
//
// Sent messages carry a random client id and stay queued until acked: after a reconnection
// they are sent again (`resendPending`), and the id makes the gateway store them once. What a
// sent or acked message means for the view is the conversation's business: `listenComposer`
// and app.js tell it, so this module does not import the conversation (which imports it).

import { live } from "./connection.js";
import { dom, hideNotice, showNotice, state } from "./state.js";

/** Enable, label and explain the box for the selected port (or for no port). */
export function updateComposer() {
  const port = state.selectedPort;
  dom.input.disabled = port === null;
  dom.input.placeholder = port === null ? "Select a port first" : `Message to port ${port}`;
  dom.composerLabel.textContent = port === null ? "Message" : `Message to port ${port}`;
  dom.send.disabled = port === null || !dom.input.value.trim();
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
}

/** Send the box's text to the selected port; the port, or null if there was nothing to send. */
function sendMessage() {
  const port = state.selectedPort;
  const content = dom.input.value;
  if (port === null || !content.trim()) return null;
  const id = uuid();
  const frame = { type: "message", ref: id, port, content, role: "user", content_type: "markdown", id };
  state.pending.set(id, frame);
  live.send(frame); // if the socket is down, resendPending() sends it on the next connection
  dom.input.value = "";
  hideNotice();
  updateComposer();
  return port;
}

/** On a (re)connection: send again every message not acked yet. */
export function resendPending() {
  for (const frame of state.pending.values()) live.send(frame);
}

/** An `ack`: true if it was for a message sent from here (now no longer pending). */
export function settleSent(frame) {
  return state.pending.delete(frame.ref);
}

/** An `error`: true if it refused a message sent from here, whose text goes back in the box. */
export function refuseSent(frame) {
  const sent = state.pending.get(frame.ref);
  if (!sent) return false;
  state.pending.delete(frame.ref);
  if (!dom.input.value) dom.input.value = sent.content; // give the text back to fix or retry
  updateComposer();
  showNotice(`Not sent: ${frame.message}`);
  return true;
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
