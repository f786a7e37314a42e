// The sidebar's search: matches listed as you type, with their session and port and their
// words marked (as text, never HTML), on all ports or one; a match opened in its session,
// scrolled to. Sessions whose name matches are listed first, and open on a click. Ctrl/Cmd+K, or "/" outside a text field, goes to the field; Escape closes
// the results.

import { api } from "./connection.js";
import { reveal, selectPort } from "./conversation.js";
import { h } from "./render.js";
import { ensurePort, renderPorts, sessionTitle } from "./sidebar.js";
import { dom, state } from "./state.js";

const LIMIT = 20;
const TYPING_PAUSE_MS = 200; // a search starts once typing pauses this long

let searchRun = 0; // the latest search: answers to older ones are dropped
let typingTimer = null;

/** Search as the query is typed (after a pause), at once on Enter or a change of port. */
export function listenSearch() {
  dom.search.addEventListener("submit", (event) => {
    event.preventDefault();
    searchNow();
  });
  dom.searchInput.addEventListener("input", () => {
    clearTimeout(typingTimer);
    typingTimer = setTimeout(searchNow, TYPING_PAUSE_MS);
  });
  dom.searchInput.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.preventDefault(); // and not the field's own clearing: done here, once
    dom.searchInput.value = "";
    searchNow();
  });
  // The filter lists the ports the sidebar lists: redrawn when its list changes.
  new MutationObserver(listPorts).observe(dom.ports, { childList: true });
  dom.searchPort.addEventListener("change", searchNow);
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, textarea, select, [contenteditable]");
    const modified = event.ctrlKey || event.metaKey;
    if ((modified && !event.altKey && event.key.toLowerCase() === "k") || (event.key === "/" && !modified && !typing)) {
      event.preventDefault();
      dom.searchInput.focus();
      dom.searchInput.select();
    }
  });
  listPorts();
}

/** The port filter's choices: every known port, the choice kept. */
function listPorts() {
  const chosen = dom.searchPort.value;
  const ports = [...state.ports.keys()].sort((a, b) => a - b);
  const listed = [...dom.searchPort.options].slice(1).map((option) => Number(option.value));
  if (listed.length === ports.length && listed.every((port, i) => port === ports[i])) return;
  dom.searchPort.replaceChildren(
    h("option", { value: "", text: "All ports" }),
    ...ports.map((port) => h("option", { value: String(port), text: `Port ${port}` })),
  );
  dom.searchPort.value = ports.includes(Number(chosen)) ? chosen : "";
}

function searchNow() {
  clearTimeout(typingTimer);
  runSearch(dom.searchInput.value);
}

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
    const query = new URLSearchParams({ q, limit: String(LIMIT) });
    if (dom.searchPort.value) query.set("port", dom.searchPort.value);
    answer = await api(`/api/search?${query}`);
  } catch (error) {
    if (run === searchRun) dom.searchStatus.textContent = `Search failed: ${error.message}`;
    return;
  }
  if (run !== searchRun) return;
  const results = answer.results;
  const sessions = answer.sessions ?? [];
  dom.searchStatus.textContent = searchSummary(sessions.length, results.length);
  const items = [];
  if (sessions.length) items.push(groupLabel("Sessions"), ...sessions.map(renderSessionMatch));
  if (sessions.length && results.length) items.push(groupLabel("Messages"));
  items.push(...results.map(renderResult));
  dom.searchResults.replaceChildren(...items);
  dom.searchResults.hidden = items.length === 0;
}

function searchSummary(sessions, messages) {
  if (!sessions && !messages) return "Nothing matches.";
  const parts = [];
  if (sessions) parts.push(`${sessions} session${sessions === 1 ? "" : "s"}`);
  if (messages) {
    parts.push(`${messages}${messages === LIMIT ? "+" : ""} message${messages === 1 ? "" : "s"}`);
  }
  return parts.join(", ");
}

function groupLabel(text) {
  return h("li", { class: "search-group", role: "presentation", text });
}

/** A session named by the query: its name with the matches marked, its port and status. */
function renderSessionMatch(match) {
  const session = match.session;
  const count = `${session.message_count} message${session.message_count === 1 ? "" : "s"}`;
  const status = session.status === "archived" ? " · archived" : "";
  return h(
    "li",
    {},
    h(
      "button",
      {
        type: "button",
        class: "search-result",
        "data-testid": "search-session",
        "data-session": session.id,
        onclick: () => openSession(session.port, session.id),
      },
      h("span", { class: "search-result-session" }, ...highlighted(match.name, match.highlights)),
      h("span", { class: "search-result-meta", text: `:${session.port} · ${count}${status}` }),
    ),
  );
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
      h("span", { class: "search-result-session", text: resultSession(result) }),
      h("span", { class: "search-result-meta", text: `:${result.port} · ${result.role} · ${when}` }),
      h("span", { class: "search-result-snippet" }, ...highlighted(...plainText(result.snippet, result.highlights))),
    ),
  );
}

/** The name of the hit's session, as the session list names it. */
function resultSession(result) {
  return sessionTitle({
    title: result.session_title,
    auto_title: result.session_auto_title,
    created_at: result.session_created_at,
  });
}

/** The snippet without markdown's code marks (fences with their language, backticks) and
 * with line breaks as spaces, the highlights moved to match: a result reads as text. */
function plainText(snippet, highlights) {
  const points = Array.from(snippet);
  const keep = points.map(() => true);
  for (let i = 0; i < points.length; i++) {
    if (points[i] !== "`") continue;
    let end = i;
    while (end < points.length && points[end] === "`") end++;
    if (end - i >= 3) {
      while (end < points.length && /[\w+#.-]/.test(points[end])) end++; // a fence's language
    }
    for (let j = i; j < end; j++) keep[j] = false;
    i = end - 1;
  }
  const at = []; // old offset -> new offset
  const kept = [];
  points.forEach((point, i) => {
    at.push(kept.length);
    if (!keep[i]) return;
    const text = point === "\n" || point === "\r" || point === "\t" ? " " : point;
    if (text === " " && (kept.length === 0 || kept[kept.length - 1] === " ")) {
      keep[i] = false; // no run of spaces where a fence or a line break was
      return;
    }
    kept.push(text);
  });
  at.push(kept.length);
  const moved = highlights
    .map(([start, end]) => [at[start], at[end]])
    .filter(([start, end]) => end > start);
  return [kept.join(""), moved];
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
  const view = state.view;
  const [start, end] = result.highlights[0] || [0, 0];
  const word = Array.from(result.snippet).slice(start, end).join("") || null;
  if (view.port === result.port && view.sessionId === result.session_id && view.loaded) {
    view.reveal = result.seq; // already shown: scroll to it
    view.revealText = word;
    reveal(view);
    return;
  }
  openSession(result.port, result.session_id);
  state.view.reveal = result.seq; // loadNewest reveals it once the newest page is in
  state.view.revealText = word;
}

/** Show a session: the port's active one as the port (following rotations), others by id. */
function openSession(portNumber, sessionId) {
  const port = ensurePort(portNumber);
  renderPorts();
  const active = port.active_session !== null && port.active_session.id === sessionId;
  selectPort(portNumber, active ? null : sessionId);
}
