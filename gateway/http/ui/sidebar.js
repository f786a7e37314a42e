// The sidebar: every port with its presence, and the selected port's sessions under it.
//
// Ports and sessions are read over HTTP on every (re)connection, then kept current by the
// `sessions: true` subscription: the conversation passes each `session` and `presence` event
// here first (`applySessionEvent`, `applyPresence`), then does what the event means for the
// view. What a click does is the conversation's too: `listenSidebar` takes it as callbacks,
// so this module never imports the conversation (which imports it).

import { api } from "./connection.js";
import { IDE_PORT_RANGES } from "./ide-ports.js"; // served from gateway/ws/protocol.py
import { h } from "./render.js";
import { dom, hideNotice, showNotice, state } from "./state.js";

/** The IDE type a port implies when no session or port record says (the gateway's rule). */
export function ideTypeFor(port) {
  const range = IDE_PORT_RANGES.find(([first, last]) => port >= first && port <= last);
  return range ? range[2] : "unknown";
}

/** The port's entry, made (offline, no session) if the page did not know it yet. */
export function ensurePort(port, ideType) {
  let entry = state.ports.get(port);
  if (!entry) {
    entry = { port, ide_type: ideType || ideTypeFor(port), online: false, active_session: null, last_activity_at: null };
    state.ports.set(port, entry);
  }
  return entry;
}

/** Read the ports and show them; true if they were read (else a notice says why not). */
export async function loadPorts() {
  let body;
  try {
    body = await api("/api/ports");
  } catch (error) {
    showNotice(`Could not load ports: ${error.message}`, "load");
    return false;
  }
  hideNotice("load");
  for (const port of body.ports) state.ports.set(port.port, port);
  renderPorts();
  return true;
}

/** The port with the latest activity, or null if there is none. */
export function newestPort() {
  let best = null;
  for (const p of state.ports.values()) {
    if (best === null || (p.last_activity_at || "") > (best.last_activity_at || "")) best = p;
  }
  return best ? best.port : null;
}

/** Clicks on a port (`pickPort(port, newTab)`) or on a session (`pickSession(sessionId,
 * newTab)`); `newTab` for Ctrl/Cmd+click and a middle click, as links open in a new tab. */
export function listenSidebar({ pickPort, pickSession }) {
  // One listener for the list, not one per button: the buttons come and go as ports and
  // sessions do, and each carries what it names in a data attribute.
  const pick = (event, newTab) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.classList.contains("port-button")) pickPort(Number(button.dataset.port), newTab);
    else if (button.classList.contains("session-button")) pickSession(button.dataset.sessionId, newTab);
  };
  dom.ports.addEventListener("click", (event) => pick(event, event.ctrlKey || event.metaKey));
  dom.ports.addEventListener("auxclick", (event) => {
    if (event.button === 1) pick(event, true);
  });
  // Up and Down move between the ports and sessions shown, as in a list; Enter (or Space)
  // opens the focused one, as any button does. Tab still leaves the list.
  dom.ports.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const buttons = [...dom.ports.querySelectorAll("button")].filter((b) => b.offsetParent !== null);
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    const next = buttons[at + (event.key === "ArrowDown" ? 1 : -1)];
    if (!next) return;
    event.preventDefault(); // no scrolling of the sidebar as well
    next.focus();
  });
}

/** The most recently active port first (a port with no activity last), then by number. */
function portOrder(a, b) {
  const at = (p) => p.last_activity_at || "";
  return at(b) > at(a) ? 1 : at(b) < at(a) ? -1 : a.port - b.port;
}

export function renderPorts() {
  const ports = [...state.ports.values()].sort(portOrder);
  dom.portsEmpty.hidden = ports.length > 0;
  ports.forEach((port, index) => {
    let li = state.portItems.get(port.port);
    if (!li) {
      li = h(
        "li",
        { class: "port" },
        h(
          "button",
          { type: "button", class: "port-button", "data-testid": "port-item", "data-port": port.port },
          // The button's name is its text (":PORT label cursor offline"), read as "Port :PORT ...":
          // a name that differs from the visible text fails people who speak it (voice
          // control says what it sees) and axe's label-content-name-mismatch.
          h("span", { class: "visually-hidden" }, "Port "),
          h("span", { class: "port-number" }),
          h("span", { class: "port-label", "data-testid": "port-label" }),
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
    const label = button.querySelector(".port-label");
    label.textContent = port.label || "";
    label.hidden = !port.label;
    button.querySelector(".ide-type").textContent = port.ide_type;
    const badge = button.querySelector(".badge");
    badge.textContent = port.online ? "online" : "offline";
    badge.dataset.online = String(Boolean(port.online));
    badge.classList.toggle("online", Boolean(port.online));
    li.lastChild.hidden = !selected;
  });
}

export function applyPresence(port, online) {
  ensurePort(port).online = online;
  renderPorts();
}

/** Forget the previous port's sessions and load the selected one's; resolves once loaded. */
export function switchSessions() {
  state.sessions.clear();
  for (const li of state.sessionItems.values()) li.remove();
  state.sessionItems.clear();
  state.sessionsCursor = null;
  state.sessionsExpanded = false;
  return loadSessions();
}

/** A page of the selected port's sessions: the first (null) or the one after `cursor`. */
export async function loadSessions(cursor = null) {
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

/** Archived (and not pinned): listed apart, under "Archived". */
function inArchive(session) {
  return session.status !== "active" && !session.pinned;
}

// A port's list, in order: its pinned sessions under "Pinned", its active session, then
// its history under "Archived", by the day of each session's latest activity (the browser's
// calendar days) under Today, Yesterday, Previous 7 days and Older.
const DAYS = [
  ["today", "Today"],
  ["yesterday", "Yesterday"],
  ["week", "Previous 7 days"],
  ["older", "Older"],
];
const DAY_MS = 24 * 60 * 60 * 1000;

/** Where a session is listed: its place's rank, and the headings above its place. */
function placeOf(session, today) {
  if (session.pinned) return { rank: 0, group: "pinned" };
  if (!inArchive(session)) return { rank: 1, group: null };
  const day = dayOf(activity(session), today);
  return { rank: 2 + DAYS.findIndex(([key]) => key === day), group: "archived", day };
}

/** The day group of an instant. */
function dayOf(when, today) {
  const at = Date.parse(when);
  if (Number.isNaN(at) || at >= today) return "today"; // a clock ahead of ours: today
  if (at >= today - DAY_MS) return "yesterday";
  if (at >= today - 8 * DAY_MS) return "week"; // the 7 days before yesterday
  return "older";
}

function startOfToday() {
  const now = new Date();
  return new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
}

/** The newest session of the selected port by activity, or null if it has none loaded. */
export function newestSession() {
  let best = null;
  for (const session of state.sessions.values()) {
    if (best === null || activity(session) > activity(best)) best = session;
  }
  return best;
}

/** A heading of the port's list ("Pinned", "Archived", or a day of the archive at level
 * 4), made once per list. */
function heading(list, key, text, level = 3) {
  let item = list.querySelector(`.session-group[data-group="${key}"]`);
  if (!item) {
    const testid = key === "archived" ? "archived-heading" : "session-group";
    item = h(
      "li",
      { class: `session-group level-${level}`, "data-group": key, "data-level": level, "data-testid": testid },
      h(`h${level}`, { class: "session-group-title", text }),
    );
  }
  return item;
}

/** The selected port's sessions: pinned ones, the active one, then the archived ones by
 * day, each group the newest first, under its headings; the one shown marked. */
export function renderSessions() {
  const li = state.portItems.get(state.selectedPort);
  if (!li) return;
  const list = li.lastChild;
  const today = startOfToday();
  const placed = [...state.sessions.values()].map((session) => ({ session, ...placeOf(session, today) }));
  placed.sort((a, b) => a.rank - b.rank || newestFirst(a.session, b.session));
  const items = [];
  let rank = null;
  let group = null;
  for (const { session, rank: at, group: into, day } of placed) {
    if (into !== group && into === "pinned") items.push(heading(list, "pinned", "Pinned"));
    if (into !== group && into === "archived") items.push(heading(list, "archived", "Archived"));
    if (at !== rank && day) items.push(heading(list, `archived-${day}`, DAYS.find(([key]) => key === day)[1], 4));
    rank = at;
    group = into;
    items.push(sessionItem(session));
  }
  for (const old of list.querySelectorAll(".session-group")) {
    if (!items.includes(old)) old.remove();
  }
  items.forEach((item, index) => {
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
  });
  const hidden = foldLongList(list, items, placed.length);
  let more = list.querySelector(".more");
  if (state.sessionsCursor && !more) {
    more = h("li", { class: "more" }, h("button", {
      type: "button", class: "secondary", text: "More sessions",
      onclick: () => loadSessions(state.sessionsCursor),
    }));
  }
  if (more) {
    more.hidden = hidden > 0; // a further page only once the whole list is shown
    if (state.sessionsCursor) list.append(more);
    else more.remove();
  }
}

function newestFirst(a, b) {
  return activity(b) > activity(a) ? 1 : activity(b) < activity(a) ? -1 : b.id > a.id ? 1 : -1;
}

// A port's list shows this many sessions until asked for all: a port with 50 sessions must
// not push the other ports off screen.
const FOLDED_SESSIONS = 8;

/** Hide all but the first few sessions (the shown one always stays) behind a "Show all"
 * toggle; returns how many are hidden. */
function foldLongList(list, items, count) {
  let toggle = list.querySelector(".fold");
  const folding = count > FOLDED_SESSIONS;
  if (!folding) {
    if (toggle) toggle.remove();
    for (const item of items) item.hidden = false;
    return 0;
  }
  let shown = 0;
  let hidden = 0;
  for (const item of items) {
    const button = item.querySelector(".session-button");
    if (!button) continue; // a heading: decided below
    const keep = state.sessionsExpanded || shown < FOLDED_SESSIONS || button.hasAttribute("aria-current");
    item.hidden = !keep;
    if (keep) shown += 1;
    else hidden += 1;
  }
  // A heading shows if a session it covers does: those up to the next heading of its level
  // or above ("Archived" covers its days).
  items.forEach((item, index) => {
    if (!item.classList.contains("session-group")) return;
    const level = Number(item.dataset.level);
    let shows = false;
    for (const next of items.slice(index + 1)) {
      if (next.classList.contains("session-group")) {
        if (Number(next.dataset.level) <= level) break;
      } else if (!next.hidden) {
        shows = true;
        break;
      }
    }
    item.hidden = !shows;
  });
  if (!toggle) {
    toggle = h("li", { class: "fold" }, h("button", {
      type: "button", class: "secondary", "data-testid": "fold-sessions",
      onclick: () => {
        state.sessionsExpanded = !state.sessionsExpanded;
        renderSessions();
      },
    }));
  }
  toggle.firstChild.textContent = state.sessionsExpanded ? "Show fewer sessions" : `Show all ${count} sessions`;
  toggle.firstChild.setAttribute("aria-expanded", String(state.sessionsExpanded));
  list.append(toggle);
  return hidden;
}

/** A session's list item, made or updated. */
function sessionItem(session) {
  let item = state.sessionItems.get(session.id);
  if (!item) {
    item = h(
      "li",
      { class: "session" },
      h(
        "button",
        {
          type: "button",
          class: "session-button",
          "data-testid": "session-item",
          "data-session-id": session.id,
        },
        h("span", { class: "session-title" }),
        h("span", { class: "session-preview" }),
        h("span", { class: "session-meta" }),
      ),
    );
    state.sessionItems.set(session.id, item);
  }
  const button = item.firstChild;
  const active = session.status === "active";
  const shown = session.id === state.view.sessionId;
  button.dataset.active = String(active);
  button.dataset.pinned = String(Boolean(session.pinned));
  button.classList.toggle("active", active);
  if (shown) button.setAttribute("aria-current", "true");
  else button.removeAttribute("aria-current");
  button.querySelector(".session-title").textContent = sessionTitle(session);
  const preview = button.querySelector(".session-preview");
  preview.textContent = session.preview ? `${session.preview_role === "user" ? "You: " : ""}${session.preview}` : "";
  preview.hidden = !session.preview;
  const count = messageCount(session);
  const standing = active ? "active" : session.pinned ? "archived" : null; // else: under "Archived"
  const meta = [session.pinned ? "pinned" : null, standing, count];
  button.querySelector(".session-meta").textContent = meta.filter(Boolean).join(" · ");
  return item;
}

/** "1 message", "7 messages": a session's count as the list and the controls say it. */
export function messageCount(session) {
  return `${session.message_count} message${session.message_count === 1 ? "" : "s"}`;
}

/** What a session is called: its title, else its first user message's line (the gateway's
 * `auto_title`), else when it started. */
export function sessionTitle(session) {
  if (session.title) return session.title;
  if (session.auto_title) return session.auto_title;
  const date = new Date(session.created_at);
  return Number.isNaN(date.getTime())
    ? "Session"
    : `Session of ${date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" })}`;
}

/** A `session` event's effect on the lists: the port's active session and activity, and
 * the session's entry if it is the selected port's. What it means for the view is not here. */
export function applySessionEvent(event, session) {
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
}
