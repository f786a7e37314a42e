// The sidebar's search: matches listed with their words marked (as text, never HTML), and a
// match opened in its session, scrolled to.

import { api } from "./connection.js";
import { reveal, selectPort } from "./conversation.js";
import { h } from "./render.js";
import { ensurePort, renderPorts } from "./sidebar.js";
import { dom, state } from "./state.js";

const LIMIT = 20;

let searchRun = 0; // the latest search: answers to older ones are dropped

/** Search on submit; clearing the field (its clear button) clears the results. */
export function listenSearch() {
  dom.search.addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch(dom.searchInput.value);
  });
  dom.searchInput.addEventListener("search", () => {
    if (!dom.searchInput.value) runSearch(""); // the field's clear button
  });
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
    answer = await api(`/api/search?${new URLSearchParams({ q, limit: String(LIMIT) })}`);
  } catch (error) {
    if (run === searchRun) dom.searchStatus.textContent = `Search failed: ${error.message}`;
    return;
  }
  if (run !== searchRun) return;
  const results = answer.results;
  dom.searchStatus.textContent = results.length
    ? `${results.length}${results.length === LIMIT ? "+" : ""} match${results.length === 1 ? "" : "es"}`
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
  const port = ensurePort(result.port);
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
