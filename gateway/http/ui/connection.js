// The page's two ways to the gateway, both carrying the user's token: `api()` over HTTP and
// `live`, the one WebSocket (live.js reconnects it). Also the indicator that shows its state.
//
// `live` exists from the start so every part can send on it, but it only connects once
// app.js has said, through `startLive`, what to do on open, on a frame, on a state change and
// when the gateway wants a token: those handlers reach every part, and importing them here
// would make a cycle. In token mode, a page without an accepted token never opens the
// socket: `startLive` asks the API first and hands the refusal to `onUnauthorized` (the
// sign-in), instead of a reconnect loop that can only fail.

import { LiveSocket } from "./live.js";
import { dom } from "./state.js";

const TOKEN_KEY = "chat-gateway-token";
const token = takeToken();

const handlers = { onOpen() {}, onFrame() {}, onState() {}, onUnauthorized() {} };

export const live = new LiveSocket(socketUrl(), {
  onOpen: () => handlers.onOpen(),
  onFrame: (frame) => handlers.onFrame(frame),
  onState: (connectionState, detail) => handlers.onState(connectionState, detail),
});

/** Connect `live` (and keep it connected), calling `given` from now on; unless the gateway
 * refuses this tab's token (or its lack of one), which goes to `given.onUnauthorized`. */
export async function startLive(given) {
  Object.assign(handlers, given);
  const refusal = await refusalOf(token);
  if (refusal !== null) {
    refused(refusal);
    return;
  }
  live.start();
}

/** Whether this tab holds a token of its own (token mode), rather than none. */
export function hasToken() {
  return token !== null;
}

/** null if the gateway takes `candidate` (or wants no token), else why it refuses it. */
export async function refusalOf(candidate) {
  let response;
  try {
    response = await fetch("/api/stats", { headers: authHeaders(candidate), cache: "no-store" });
  } catch {
    return null; // unreachable: the socket's reconnecting says so
  }
  return response.status === 401 ? errorMessage(response) : null;
}

/** Keep `candidate` for this tab; the page then reloads to start over with it. */
export function keepToken(candidate) {
  sessionStorage.setItem(TOKEN_KEY, candidate);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function refused(message) {
  live.stop();
  handlers.onUnauthorized(message, token !== null);
}

function authHeaders(candidate) {
  return candidate ? { Authorization: `Bearer ${candidate}` } : {};
}

async function errorMessage(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `${response.status} ${response.statusText}`; // not the API's error shape
  }
}

function takeToken() {
  // ?token= from the link the user opened, then kept for this tab only and taken out of the
  // address bar, so it does not end up in bookmarks, history or screenshots.
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
    return given;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/ws${query}`;
}

/** Call the HTTP API: GET by default, or `method` with `body` sent as JSON; the JSON reply
 * (null for 204), or an Error with the API's message. */
export async function api(path, { method = "GET", body = undefined } = {}) {
  const headers = authHeaders(token);
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const message = await errorMessage(response);
    // The token expired (or was revoked) while the page was open: sign in again.
    if (response.status === 401) refused(message);
    throw new Error(response.status === 401 ? `Not authorized (${message})` : message);
  }
  return response.status === 204 ? null : response.json();
}

/** A file from the API, fetched with this tab's token (a link cannot carry one): its Blob
 * and the name the gateway gave it (Content-Disposition), or an Error with the API's message. */
export async function fetchFile(path) {
  const response = await fetch(path, { headers: authHeaders(token), cache: "no-store" });
  if (!response.ok) {
    const message = await errorMessage(response);
    if (response.status === 401) refused(message);
    throw new Error(message);
  }
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] || "export";
  return { blob: await response.blob(), name };
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
