// The web UI: ports and their sessions on the left, one session's messages on the right, a
// composer below them, all kept live over one WebSocket.
//
// What is shown, and how it stays right:
// * Ports and sessions are read over HTTP on every (re)connection, then kept current by the
//   `sessions: true` subscription (`session` and `presence` events).
// * The conversation is either the selected port's active session, followed through rotations
//   with a `port` subscription, or an older session picked in the list (`session_id`).
//   A new view subscribes without `since_seq` (live from `last_seq` on) and reads the newest
//   page over HTTP; a reconnection subscribes with `since_seq` = the last seq shown, and the
//   gateway sends exactly what came after it. Messages are keyed by seq, and an incoming copy
//   replaces a shown one only if it is a newer version (edits), so nothing shows twice.
// * Sent messages carry a random client id and stay queued until acked: after a reconnection
//   they are sent again, and the id makes the gateway store them once.

import { LiveSocket } from "./live.js";
import { h, renderMessage } from "./render.js";

const PAGE = 200;
const IDE_PORTS = [[9222, 9231, "cursor"], [9232, 9241, "vscode"], [9242, 9251, "windsurf"]];

const $ = (id) => document.getElementById(id);
const dom = {
  connection: $("connection"),
  ports: $("ports"),
  portsEmpty: $("ports-empty"),
  title: $("conversation-title"),
  info: $("conversation-info"),
  follow: $("follow"),
  scroller: $("scroller"),
  loadOlder: $("load-older"),
  messages: $("messages"),
  messagesEmpty: $("messages-empty"),
  composer: $("composer"),
  composerLabel: $("composer-label"),
  input: $("composer-input"),
  send: $("send"),
  notice: $("notice"),
  search: $("search"),
  searchInput: $("search-input"),
  searchStatus: $("search-status"),
  searchResults: $("search-results"),
};

const token = takeToken();

const state = {
  ports: new Map(), // port -> {port, ide_type, online, active_session, last_activity_at}
  portItems: new Map(), // port -> its <li>
  selectedPort: null,
  sessions: new Map(), // session id -> session, for the selected port
  sessionItems: new Map(), // session id -> its <li>
  sessionsCursor: null,
  view: newView(null, null),
  pending: new Map(), // ref -> message frame sent and not yet acked
  nextRef: 1,
  probed: false, // the API was asked why the socket is down (once per outage)
};

function newView(port, sessionId) {
  return {
    port,
    sessionId, // the session shown (null: the port has none yet, or not known yet)
    follow: true, // true: the port's active session, through rotations (a port subscription)
    messages: new Map(), // seq -> message
    lastSeq: 0,
    loaded: false, // true once what is shown is complete up to lastSeq (since_seq is valid)
    hasOlder: false,
    ref: null, // the ref of the latest subscribe sent for this view; older replies are stale
    since: null, // the since_seq that subscribe carried
    target: null, // what the subscription names: {port} or {session_id}
    reveal: null, // a seq to scroll to once loaded (a search result that was opened)
  };
}

const live = new LiveSocket(socketUrl(), {
  onOpen: connected,
  onFrame: handleFrame,
  onState: showConnection,
});

// For tests and the console: the live socket, and what is shown.
window.chatGateway = {
  get socket() {
    return live.socket;
  },
  state,
};

// ---- set-up -----------------------------------------------------------------------------

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

async function api(path) {
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

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const port = Number(params.get("port"));
  return { port: Number.isInteger(port) && port > 0 ? port : null, session: params.get("session") };
}

function writeHash() {
  const params = new URLSearchParams();
  if (state.selectedPort !== null) params.set("port", String(state.selectedPort));
  if (!state.view.follow && state.view.sessionId) params.set("session", state.view.sessionId);
  const hash = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (hash ? `#${hash}` : ""));
}

// ---- connection -------------------------------------------------------------------------

function showConnection(connectionState, detail) {
  const labels = {
    connecting: "Connecting…",
    open: "Live",
    waiting: `Reconnecting in ${Math.max(1, Math.round((detail.retryInMs || 0) / 1000))} s…`,
    closed: "Disconnected",
  };
  dom.connection.dataset.state = connectionState;
  dom.connection.querySelector(".label").textContent = labels[connectionState] || connectionState;
  dom.connection.title = detail.code ? `Last close code: ${detail.code}` : "";
  updateComposer();
  if (connectionState === "open") {
    state.probed = false;
  } else if (connectionState === "waiting" && !state.probed) {
    // A refused handshake looks like any network error from here; the API says why (a 401
    // shows as "Not authorized"), and while the socket is down the ports are still shown.
    state.probed = true;
    loadPorts();
  }
}

async function connected() {
  live.send({ type: "subscribe", sessions: true });
  if (state.selectedPort !== null) subscribeView();
  for (const frame of state.pending.values()) live.send(frame);
  await Promise.all([loadPorts(), state.selectedPort !== null ? loadSessions() : null]);
}

function handleFrame(frame) {
  switch (frame.type) {
    case "subscribed":
      onSubscribed(frame);
      break;
    case "message":
      onMessage(frame);
      break;
    case "session":
      onSessionEvent(frame.event, frame.session, Boolean(frame.activated));
      break;
    case "presence":
      onPresence(frame.port, frame.online);
      break;
    case "ack":
      onAck(frame);
      break;
    case "error":
      onError(frame);
      break;
    case "resync":
      onResync();
      break;
    default:
      break; // welcome, pong, unsubscribed
  }
}

/** The gateway may have lost events of this feed (its pub/sub connection was reset): the
 * messages of a followed session or port come anyway (the gateway reads them from storage,
 * and announces a rotation it missed with an `activated` session event), but the session
 * list and presence do not, so fetch them again. */
function onResync() {
  loadPorts();
  if (state.selectedPort !== null) loadSessions();
}

// ---- ports ------------------------------------------------------------------------------

async function loadPorts() {
  let body;
  try {
    body = await api("/api/ports");
  } catch (error) {
    showNotice(`Could not load ports: ${error.message}`, "load");
    return;
  }
  hideNotice("load");
  for (const port of body.ports) state.ports.set(port.port, port);
  renderPorts();
  if (state.selectedPort === null) {
    const wanted = readHash();
    const port = state.ports.has(wanted.port) ? wanted.port : newestPort();
    if (port !== null) selectPort(port, wanted.port === port ? wanted.session : null);
  }
}

function newestPort() {
  let best = null;
  for (const p of state.ports.values()) {
    if (best === null || (p.last_activity_at || "") > (best.last_activity_at || "")) best = p;
  }
  return best ? best.port : null;
}

function ensurePort(port, ideType) {
  let entry = state.ports.get(port);
  if (!entry) {
    entry = { port, ide_type: ideType || ideTypeFor(port), online: false, active_session: null, last_activity_at: null };
    state.ports.set(port, entry);
  }
  return entry;
}

function ideTypeFor(port) {
  const range = IDE_PORTS.find(([first, last]) => port >= first && port <= last);
  return range ? range[2] : "unknown";
}

function renderPorts() {
  const ports = [...state.ports.values()].sort((a, b) => a.port - b.port);
  dom.portsEmpty.hidden = ports.length > 0;
  ports.forEach((port, index) => {
    let li = state.portItems.get(port.port);
    if (!li) {
      li = h(
        "li",
        { class: "port" },
        h(
          "button",
          {
            type: "button",
            class: "port-button",
            "data-testid": "port-item",
            "data-port": port.port,
            onclick: () => selectPort(port.port, null),
          },
          h("span", { class: "port-number" }),
          h("span", { class: "ide-type" }),
          h("span", { class: "badge", "data-testid": "port-online" }),
        ),
        h("ul", { class: "sessions", hidden: true }),
      );
      state.portItems.set(port.port, li);
    }
    if (dom.ports.children[index] !== li) dom.ports.insertBefore(li, dom.ports.children[index] || null);
    const button = li.firstChild;
    const selected = port.port === state.selectedPort;
    button.setAttribute("aria-expanded", String(selected));
    button.classList.toggle("selected", selected);
    button.querySelector(".port-number").textContent = `:${port.port}`;
    button.querySelector(".ide-type").textContent = port.ide_type;
    const badge = button.querySelector(".badge");
    badge.textContent = port.online ? "online" : "offline";
    badge.dataset.online = String(Boolean(port.online));
    badge.classList.toggle("online", Boolean(port.online));
    button.setAttribute("aria-label", `Port ${port.port}, ${port.ide_type}, ${port.online ? "online" : "offline"}`);
    li.lastChild.hidden = !selected;
  });
}

function onPresence(port, online) {
  ensurePort(port).online = online;
  renderPorts();
  if (port === state.selectedPort) renderHead();
}

// ---- sessions ---------------------------------------------------------------------------

function selectPort(port, sessionId) {
  if (port === state.selectedPort && sessionId === null && state.view.follow) return;
  const previous = state.selectedPort;
  state.selectedPort = port;
  if (previous !== port) {
    state.sessions.clear();
    for (const li of state.sessionItems.values()) li.remove();
    state.sessionItems.clear();
    state.sessionsCursor = null;
    loadSessions();
  }
  showView(port, sessionId);
  renderPorts();
}

async function loadSessions(cursor = null) {
  const port = state.selectedPort;
  let body;
  try {
    const query = new URLSearchParams({ port: String(port), limit: "50" });
    if (cursor) query.set("cursor", cursor);
    body = await api(`/api/sessions?${query}`);
  } catch (error) {
    showNotice(`Could not load sessions: ${error.message}`, "load");
    return;
  }
  if (port !== state.selectedPort) return; // another port was picked meanwhile
  state.sessionsCursor = body.next_cursor;
  if (!cursor) {
    // The first page again (a reconnection): sessions deleted meanwhile go, later pages too.
    const fresh = new Set(body.sessions.map((session) => session.id));
    for (const [id, item] of state.sessionItems) {
      if (fresh.has(id) || id === state.view.sessionId) continue;
      item.remove();
      state.sessionItems.delete(id);
      state.sessions.delete(id);
    }
  }
  for (const session of body.sessions) state.sessions.set(session.id, session);
  renderSessions();
}

function activity(session) {
  return session.last_message_at || session.created_at || "";
}

function renderSessions() {
  const li = state.portItems.get(state.selectedPort);
  if (!li) return;
  const list = li.lastChild;
  const sessions = [...state.sessions.values()].sort(
    (a, b) => (activity(b) > activity(a) ? 1 : activity(b) < activity(a) ? -1 : b.id > a.id ? 1 : -1),
  );
  sessions.forEach((session, index) => {
    let item = state.sessionItems.get(session.id);
    if (!item) {
      item = h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: "session-button",
            "data-testid": "session-item",
            "data-session-id": session.id,
            onclick: () => openSession(session.id),
          },
          h("span", { class: "session-title" }),
          h("span", { class: "session-meta" }),
        ),
      );
      state.sessionItems.set(session.id, item);
    }
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
    const button = item.firstChild;
    const active = session.status === "active";
    const shown = session.id === state.view.sessionId;
    button.dataset.active = String(active);
    button.classList.toggle("active", active);
    if (shown) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
    button.querySelector(".session-title").textContent = sessionTitle(session);
    const count = `${session.message_count} message${session.message_count === 1 ? "" : "s"}`;
    button.querySelector(".session-meta").textContent = active ? `active · ${count}` : count;
  });
  let more = list.querySelector(".more");
  if (state.sessionsCursor && !more) {
    more = h("li", { class: "more" }, h("button", {
      type: "button", class: "secondary", text: "More sessions",
      onclick: () => loadSessions(state.sessionsCursor),
    }));
  }
  if (more) {
    if (state.sessionsCursor) list.append(more);
    else more.remove();
  }
}

function sessionTitle(session) {
  if (session.title) return session.title;
  const date = new Date(session.created_at);
  return Number.isNaN(date.getTime())
    ? "Session"
    : `Session of ${date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" })}`;
}

function openSession(sessionId) {
  const session = state.sessions.get(sessionId);
  const view = state.view;
  if (session && session.status === "active") {
    if (!view.follow) showView(state.selectedPort, null); // else: already shown, and followed
  } else if (view.follow || view.sessionId !== sessionId) {
    showView(state.selectedPort, sessionId);
  }
}

function onSessionEvent(event, session, activated = false) {
  const port = ensurePort(session.port, session.ide_type);
  if (session.status === "active" && event !== "deleted") {
    port.active_session = session;
  } else if (port.active_session && port.active_session.id === session.id) {
    port.active_session = null;
  }
  const at = session.last_message_at || session.updated_at;
  if (at && (!port.last_activity_at || at > port.last_activity_at)) port.last_activity_at = at;
  renderPorts();

  if (session.port === state.selectedPort) {
    if (event === "deleted") {
      state.sessions.delete(session.id);
      const item = state.sessionItems.get(session.id);
      if (item) item.remove();
      state.sessionItems.delete(session.id);
    } else {
      state.sessions.set(session.id, session);
    }
    renderSessions();
  }

  const view = state.view;
  if (view.port !== session.port) return;
  if (activated && session.status === "active" && view.follow && session.id !== view.sessionId) {
    // Rotation (or an unarchive, or a switch announced after a resync): the port
    // subscription now sends that session's messages from its first.
    followNewSession(session.id);
  } else if (event === "deleted" && session.id === view.sessionId) {
    if (view.follow) followNewSession(null);
    else showView(view.port, null);
    showNotice("That session was deleted.");
  } else if (session.id === view.sessionId) {
    renderHead();
  }
}

// ---- search -----------------------------------------------------------------------------

let searchRun = 0; // the latest search: answers to older ones are dropped

async function runSearch(q) {
  const run = ++searchRun;
  dom.searchResults.replaceChildren();
  dom.searchResults.hidden = true;
  if (!q.trim()) {
    dom.searchStatus.hidden = true;
    return;
  }
  dom.searchStatus.hidden = false;
  dom.searchStatus.textContent = "Searching…";
  let answer;
  try {
    answer = await api(`/api/search?${new URLSearchParams({ q, limit: "20" })}`);
  } catch (error) {
    if (run === searchRun) dom.searchStatus.textContent = `Search failed: ${error.message}`;
    return;
  }
  if (run !== searchRun) return;
  const results = answer.results;
  dom.searchStatus.textContent = results.length
    ? `${results.length}${results.length === 20 ? "+" : ""} match${results.length === 1 ? "" : "es"}`
    : "No messages match.";
  dom.searchResults.replaceChildren(...results.map(renderResult));
  dom.searchResults.hidden = results.length === 0;
}

function renderResult(result) {
  const date = new Date(result.created_at);
  const when = Number.isNaN(date.getTime())
    ? ""
    : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  return h(
    "li",
    {},
    h(
      "button",
      {
        type: "button",
        class: "search-result",
        "data-testid": "search-result",
        "data-session": result.session_id,
        "data-seq": result.seq,
        onclick: () => openResult(result),
      },
      h("span", { class: "search-result-meta", text: `:${result.port} · ${result.role} · ${when}` }),
      h("span", { class: "search-result-snippet" }, ...highlighted(result.snippet, result.highlights)),
    ),
  );
}

/** The snippet as text nodes and <mark>s. Offsets count code points, so slice the array of
 * them (a JavaScript string counts UTF-16 units: they differ after an emoji). */
function highlighted(snippet, highlights) {
  const points = Array.from(snippet);
  const parts = [];
  let at = 0;
  for (const [start, end] of highlights) {
    if (start < at || end <= start) continue;
    parts.push(points.slice(at, start).join(""));
    parts.push(h("mark", { text: points.slice(start, end).join("") }));
    at = end;
  }
  parts.push(points.slice(at).join(""));
  return parts;
}

function openResult(result) {
  const port = ensurePort(result.port, ideTypeFor(result.port));
  renderPorts();
  const view = state.view;
  if (view.port === result.port && view.sessionId === result.session_id && view.loaded) {
    view.reveal = result.seq; // already shown: scroll to it
    reveal(view);
    return;
  }
  // The port's active session is shown as the port (following rotations), others by id.
  const active = port.active_session !== null && port.active_session.id === result.session_id;
  selectPort(result.port, active ? null : result.session_id);
  state.view.reveal = result.seq; // loadNewest reveals it once the newest page is in
}

// ---- the conversation -------------------------------------------------------------------

/** Show `sessionId` of `port`, or (null) the port's active session, following rotations. */
function showView(port, sessionId) {
  const old = state.view;
  state.view = newView(port, sessionId);
  state.view.follow = sessionId === null;
  if (old.target && live.isOpen && !sameTarget(old.target, viewTarget(state.view))) {
    live.send({ type: "unsubscribe", ...old.target });
  }
  clearMessages();
  renderHead();
  renderSessions();
  updateComposer();
  writeHash();
  subscribeView();
}

function followNewSession(sessionId) {
  const view = state.view;
  view.sessionId = sessionId;
  view.messages = new Map();
  view.lastSeq = 0;
  view.loaded = true; // a new session: everything in it arrives over the subscription
  view.hasOlder = false;
  clearMessages();
  renderHead();
  renderSessions();
}

function viewTarget(view) {
  return view.follow ? { port: view.port } : { session_id: view.sessionId };
}

function sameTarget(a, b) {
  return a.port === b.port && a.session_id === b.session_id;
}

function subscribeView() {
  const view = state.view;
  if (view.port === null || !live.isOpen) return; // connected() subscribes when it opens
  view.ref = `view-${state.nextRef++}`;
  view.since = view.loaded ? view.lastSeq : null;
  view.target = viewTarget(view);
  const frame = { type: "subscribe", ref: view.ref, ...view.target };
  if (view.since !== null) frame.since_seq = view.since;
  live.send(frame);
}

function onSubscribed(frame) {
  const view = state.view;
  if (frame.sessions || frame.ref !== view.ref) return; // the list, or an older view's
  const session = frame.session;
  if (session === null) {
    // A port with no session yet: its first message creates one (a `created` event).
    followNewSession(null);
    return;
  }
  if (session.port === state.selectedPort) {
    state.sessions.set(session.id, session);
    renderSessions();
  }
  if (session.id === view.sessionId && view.since !== null) return; // catch-up follows
  const since = view.since;
  view.sessionId = session.id;
  view.messages = new Map();
  view.lastSeq = 0;
  view.loaded = false;
  clearMessages();
  renderHead();
  renderSessions();
  if (since === 0) {
    view.loaded = true; // since_seq 0: the catch-up that follows is the whole session
    return;
  }
  if (since !== null) {
    // since_seq was about another session (the port rotated while we were away): the
    // gateway would skip this one's first messages. Start this view over.
    subscribeView();
    return;
  }
  loadNewest(view, frame.last_seq);
}

/** Still showing what it showed when `sessionId` was read (no other view, no rotation)? */
function stillShowing(view, sessionId) {
  return state.view === view && view.sessionId === sessionId;
}

/** The newest page up to `lastSeq` (the subscription sends what comes after it). */
async function loadNewest(view, lastSeq) {
  const sessionId = view.sessionId;
  if (lastSeq > 0) {
    const page = await fetchMessages(sessionId, { before_seq: String(lastSeq + 1), limit: String(PAGE) });
    if (page === null || !stillShowing(view, sessionId)) return;
    view.hasOlder = page.has_more;
    addMessages(page.messages, true);
  }
  if (!stillShowing(view, sessionId)) return;
  view.loaded = true;
  renderHead();
  updateEmpty();
  if (view.reveal !== null) await reveal(view);
}

/** Load earlier pages until the message `view.reveal` is shown, then scroll to it and mark it. */
async function reveal(view) {
  const seq = view.reveal;
  view.reveal = null;
  while (!view.messages.has(seq) && view.hasOlder && state.view === view) {
    const before = view.messages.size;
    await loadOlder();
    if (view.messages.size === before) break; // the load failed: its notice says so
  }
  if (state.view !== view) return;
  const el = dom.messages.querySelector(`[data-seq="${seq}"]`);
  if (!el) return;
  for (const found of dom.messages.querySelectorAll(".found")) found.classList.remove("found");
  el.classList.add("found");
  el.scrollIntoView({ block: "center" });
}

async function loadOlder() {
  const view = state.view;
  const oldest = Math.min(...view.messages.keys());
  if (!Number.isFinite(oldest) || oldest <= 1) return;
  const sessionId = view.sessionId;
  dom.loadOlder.disabled = true;
  const page = await fetchMessages(sessionId, { before_seq: String(oldest), limit: String(PAGE) });
  dom.loadOlder.disabled = false;
  if (page === null || !stillShowing(view, sessionId)) return;
  view.hasOlder = page.has_more;
  const before = dom.scroller.scrollHeight - dom.scroller.scrollTop;
  addMessages(page.messages, false);
  dom.scroller.scrollTop = dom.scroller.scrollHeight - before; // keep what was in view
  renderHead();
}

async function fetchMessages(sessionId, params) {
  try {
    return await api(`/api/sessions/${encodeURIComponent(sessionId)}/messages?${new URLSearchParams(params)}`);
  } catch (error) {
    showNotice(`Could not load messages: ${error.message}`, "load");
    return null;
  }
}

function onMessage(frame) {
  const view = state.view;
  if (frame.session_id !== view.sessionId || view.sessionId === null) return;
  addMessages([frame.message], null);
}

function version(message) {
  return message.edited_at ? Date.parse(message.edited_at) || 0 : 0;
}

/** Show messages by seq: a new seq is inserted in order, a known one replaced only by a newer
 * version. `stick`: true scrolls to the end, null does so only if the end was in view. */
function addMessages(messages, stick) {
  const view = state.view;
  const scroller = dom.scroller;
  const atEnd = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48;
  for (const message of messages) {
    const shown = view.messages.get(message.seq);
    if (shown && version(message) <= version(shown)) continue;
    view.messages.set(message.seq, message);
    const el = renderMessage(message);
    if (shown) {
      const old = dom.messages.querySelector(`[data-seq="${message.seq}"]`);
      if (old) old.replaceWith(el);
      else placeMessage(el, message.seq);
    } else {
      placeMessage(el, message.seq);
    }
    if (message.seq > view.lastSeq) view.lastSeq = message.seq;
  }
  updateEmpty();
  if (stick === true || (stick === null && atEnd)) scroller.scrollTop = scroller.scrollHeight;
}

function placeMessage(el, seq) {
  // Children are in seq order: binary search for the first one with a larger seq.
  const children = dom.messages.children;
  let low = 0;
  let high = children.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (Number(children[mid].dataset.seq) < seq) low = mid + 1;
    else high = mid;
  }
  dom.messages.insertBefore(el, children[low] || null);
}

function clearMessages() {
  dom.messages.replaceChildren();
  updateEmpty();
}

function updateEmpty() {
  const view = state.view;
  dom.messagesEmpty.hidden = view.port === null || view.messages.size > 0;
  dom.loadOlder.hidden = !view.hasOlder;
}

function renderHead() {
  const view = state.view;
  dom.follow.hidden = view.follow || view.port === null;
  if (view.port === null) {
    dom.title.textContent = "Select a port";
    dom.info.textContent = "";
    return;
  }
  const port = state.ports.get(view.port);
  const session = view.sessionId ? state.sessions.get(view.sessionId) : null;
  dom.title.textContent = session ? sessionTitle(session) : `Port ${view.port}`;
  const parts = [`:${view.port}`, port ? port.ide_type : ideTypeFor(view.port)];
  if (port) parts.push(port.online ? "IDE online" : "IDE offline");
  if (!view.sessionId) parts.push("no session yet");
  else if (view.follow) parts.push("active session");
  else if (session) parts.push(session.status === "active" ? "active session" : "archived session");
  dom.info.textContent = parts.join(" · ");
  updateEmpty();
}

// ---- sending ----------------------------------------------------------------------------

function updateComposer() {
  const port = state.selectedPort;
  dom.input.disabled = port === null;
  dom.input.placeholder = port === null ? "Select a port first" : `Message to port ${port}`;
  dom.composerLabel.textContent = port === null ? "Message" : `Message to port ${port}`;
  dom.send.disabled = port === null || !dom.input.value.trim();
}

function sendMessage() {
  const port = state.selectedPort;
  const content = dom.input.value;
  if (port === null || !content.trim()) return;
  const id = uuid();
  const frame = { type: "message", ref: id, port, content, role: "user", content_type: "markdown", id };
  state.pending.set(id, frame);
  live.send(frame); // if the socket is down, connected() sends it on the next connection
  dom.input.value = "";
  hideNotice();
  if (!state.view.follow) showView(port, null); // a message goes to the active session
  updateComposer();
}

function onAck(frame) {
  if (!state.pending.delete(frame.ref)) return;
  const view = state.view;
  // The first message on a port creates its session: show it if no event did already.
  if (view.follow && view.port === frame.port && view.sessionId === null) followNewSession(frame.session_id);
}

function onError(frame) {
  const sent = state.pending.get(frame.ref);
  if (sent) {
    state.pending.delete(frame.ref);
    if (!dom.input.value) dom.input.value = sent.content; // give the text back to fix or retry
    updateComposer();
    showNotice(`Not sent: ${frame.message}`);
  } else if (frame.ref && frame.ref === state.view.ref) {
    // E.g. a session from an old link, deleted since: show the port's active one instead.
    if (!state.view.follow) showView(state.view.port, null);
    showNotice(`Cannot show that session: ${frame.message}`);
  } else {
    showNotice(frame.message);
  }
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

/** One notice at a time; `kind` lets a later success clear only the notice it resolves. */
function showNotice(text, kind = "") {
  dom.notice.textContent = text;
  dom.notice.dataset.kind = kind;
  dom.notice.hidden = false;
}

function hideNotice(kind = null) {
  if (kind !== null && dom.notice.dataset.kind !== kind) return;
  dom.notice.hidden = true;
  dom.notice.textContent = "";
}

// ---- wiring -----------------------------------------------------------------------------

dom.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});
dom.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.ctrlKey &&
      !event.metaKey && !event.isComposing) {
    event.preventDefault();
    sendMessage();
  }
});
dom.input.addEventListener("input", updateComposer);
dom.follow.addEventListener("click", () => showView(state.selectedPort, null));
dom.loadOlder.addEventListener("click", loadOlder);
dom.search.addEventListener("submit", (event) => {
  event.preventDefault();
  runSearch(dom.searchInput.value);
});
dom.searchInput.addEventListener("search", () => {
  if (!dom.searchInput.value) runSearch(""); // the field's clear button
});

updateComposer();
live.start();
