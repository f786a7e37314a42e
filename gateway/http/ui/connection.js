// The page's two ways to the gateway, both carrying the user's token: `api()` over HTTP and
// `live`, the one WebSocket (live.js reconnects it). Also the indicator that shows its state.
//
// `live` exists from the start so every part can send on it, but it only connects once
// app.js has said, through `startLive`, what to do on open, on a frame and on a state change:
// those handlers reach every part, and importing them here would make a cycle.

import { LiveSocket } from "./live.js";
import { dom } from "./state.js";

const token = takeToken();

const handlers = { onOpen() {}, onFrame() {}, onState() {} };

export const live = new LiveSocket(socketUrl(), {
  onOpen: () => handlers.onOpen(),
  onFrame: (frame) => handlers.onFrame(frame),
  onState: (connectionState, detail) => handlers.onState(connectionState, detail),
});

/** Connect `live` (and keep it connected), calling `given` from now on. */
export function startLive(given) {
  Object.assign(handlers, given);
  live.start();
}

function takeToken() {
  // ?token= from the link the user opened, then kept for this tab only and taken out of the
  // address bar, so it does not end up in bookmarks, history or screenshots.
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given) {
    sessionStorage.setItem("chat-gateway-token", given);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
    return given;
  }
  return sessionStorage.getItem("chat-gateway-token");
}

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/ws${query}`;
}

/** The API's JSON answer to GET `path`; throws an Error with the API's message otherwise. */
export async function api(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch {
      // not the API's error shape
    }
    if (response.status === 401) message = `Not authorized (${message}). Open the page with ?token=…`;
    throw new Error(message);
  }
  return response.json();
}

/** The top bar's indicator for a LiveSocket state ("connecting", "open", "waiting", "closed"). */
export function showConnectionState(connectionState, detail) {
  const labels = {
    connecting: "Connecting…",
    open: "Live",
    waiting: `Reconnecting in ${Math.max(1, Math.round((detail.retryInMs || 0) / 1000))} s…`,
    closed: "Disconnected",
  };
  dom.connection.dataset.state = connectionState;
  dom.connection.querySelector(".label").textContent = labels[connectionState] || connectionState;
  dom.connection.title = detail.code ? `Last close code: ${detail.code}` : "";
}
