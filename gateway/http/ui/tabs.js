// Tabs inside the page: several open chats, one shown at a time, as a browser's tabs are.
//
// Each tab names a view (a port's active session, followed, or one session of it) and
// remembers where its conversation was scrolled to. A click in the sidebar opens its port or
// session in the shown tab; Ctrl/Cmd+click or a middle click, or the "+" button (the shown
// chat again), opens a new tab. Tabs live in sessionStorage: a reload (or a crash the browser
// restores) brings back the same tabs, the same one shown, each scrolled where it was; another
// browser tab has its own.
//
// Only the shown tab is live: switching tabs shows the other tab's view (newest page, then
// its scroll position, loading earlier pages if it was further up). The conversation does
// the showing, through `listenTabs`'s `show(port, sessionId, scroll)`; this module keeps the
// list, draws the bar and is told what the conversation shows (`viewShown`, `scrolledTo`).

import { h } from "./render.js";
import { state } from "./state.js";

const STORAGE_KEY = "chat-gateway-tabs";
const bar = document.getElementById("chat-tabs");
const newTabButton = document.getElementById("new-tab");

let tabs = []; // {id, port, session (null: the port's active session), title, scroll}
let activeId = null;
let nextId = 1;
let show = (_port, _sessionId, _scroll) => {};

/** Read the saved tabs; `show(port, sessionId, scroll)` shows a tab's view in the
 * conversation and scrolls it to `scroll` ({seq, offset}, or null for the newest). Returns
 * the shown tab, or null if there were no saved tabs. */
export function listenTabs(showView) {
  show = showView;
  newTabButton.addEventListener("click", () => {
    const tab = active();
    if (tab) openTab(tab.port, tab.session);
  });
  bar.addEventListener("click", (event) => {
    const close = event.target.closest(".tab-close");
    const button = event.target.closest("[role=tab]");
    if (close) closeTab(Number(close.dataset.tab));
    else if (button) activate(Number(button.dataset.tab));
  });
  bar.addEventListener("keydown", onKey);
  window.addEventListener("pagehide", save);
  const saved = load();
  render();
  return saved;
}

function load() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
  } catch {
    saved = null; // unreadable: start with no tabs
  }
  if (!saved || !Array.isArray(saved.tabs) || saved.tabs.length === 0) return null;
  tabs = saved.tabs
    .filter((tab) => Number.isInteger(tab.port) && tab.port > 0)
    .map((tab, index) => ({
      id: index + 1,
      port: tab.port,
      session: typeof tab.session === "string" ? tab.session : null,
      title: typeof tab.title === "string" ? tab.title : `Port ${tab.port}`,
      scroll: tab.scroll && Number.isInteger(tab.scroll.seq) ? tab.scroll : null,
    }));
  if (tabs.length === 0) return null;
  nextId = tabs.length + 1;
  const shown = tabs[Math.min(Math.max(Number(saved.active) || 0, 0), tabs.length - 1)];
  activeId = shown.id;
  return shown;
}

function save() {
  try {
    const index = tabs.findIndex((tab) => tab.id === activeId);
    const kept = tabs.map(({ port, session, title, scroll }) => ({ port, session, title, scroll }));
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ tabs: kept, active: index }));
  } catch {
    // no storage (or full): the tabs last as long as the page
  }
}

function active() {
  return tabs.find((tab) => tab.id === activeId) || null;
}

/** Where the shown tab was scrolled to, if it shows `port`'s `sessionId` (a reload). */
export function savedScroll(port, sessionId) {
  const tab = active();
  return tab && tab.port === port && tab.session === sessionId ? tab.scroll : null;
}

/** The conversation now shows `port`'s session `sessionId` (null: its active one, followed):
 * that is the shown tab's view, a first tab made if there is none. */
export function viewShown(port, sessionId) {
  if (port === null) return;
  let tab = active();
  if (!tab) {
    tab = { id: nextId++, port, session: sessionId, title: `Port ${port}`, scroll: null };
    tabs.push(tab);
    activeId = tab.id;
  }
  if (tab.port !== port || tab.session !== sessionId) {
    tab.port = port;
    tab.session = sessionId;
    tab.scroll = null;
  }
  render();
  save();
}

/** The shown tab's title, as the conversation's head says it. */
export function titleShown(title) {
  const tab = active();
  if (!tab) return;
  const changed = tab.title !== title;
  tab.title = title;
  render(); // and a port's new label
  if (changed) save();
}

/** Where the shown tab's conversation is scrolled to: the first message in view and how far
 * below the top of the view it starts (px), or null at the newest (follow the end). */
export function scrolledTo(scroll) {
  const tab = active();
  if (!tab) return;
  tab.scroll = scroll;
  save();
}

/** Open `port`'s session `sessionId` (null: the active one) in a new tab, and show it. */
export function openTab(port, sessionId) {
  const tab = { id: nextId++, port, session: sessionId, title: `Port ${port}`, scroll: null };
  const at = tabs.findIndex((other) => other.id === activeId);
  tabs.splice(at + 1, 0, tab);
  activate(tab.id);
}

function activate(id) {
  const tab = tabs.find((other) => other.id === id);
  if (!tab) return;
  if (id === activeId) {
    render();
    return;
  }
  activeId = id;
  render();
  save();
  show(tab.port, tab.session, tab.scroll);
}

function closeTab(id) {
  if (tabs.length < 2) return; // the last tab stays: it is what the page shows
  const at = tabs.findIndex((tab) => tab.id === id);
  if (at < 0) return;
  tabs.splice(at, 1);
  if (id === activeId) {
    activeId = null;
    activate(tabs[Math.min(at, tabs.length - 1)].id);
    bar.querySelector("[aria-selected=true]")?.focus();
  } else {
    render();
    save();
  }
}

/** Left and Right move between tabs (and show them), Home and End to the first and last,
 * Delete closes the focused one: the ARIA tabs pattern. */
function onKey(event) {
  const button = event.target.closest("[role=tab]");
  if (!button) return;
  const at = tabs.findIndex((tab) => tab.id === Number(button.dataset.tab));
  const moves = { ArrowLeft: at - 1, ArrowRight: at + 1, Home: 0, End: tabs.length - 1 };
  if (event.key in moves) {
    const next = tabs[(moves[event.key] + tabs.length) % tabs.length];
    event.preventDefault();
    activate(next.id);
    bar.querySelector(`[data-tab="${next.id}"][role=tab]`)?.focus();
  } else if (event.key === "Delete") {
    event.preventDefault();
    closeTab(tabs[at].id);
  }
}

function render() {
  const closable = tabs.length > 1;
  // Redrawn whole (a few buttons), so the focus is handed to the new copy of its button.
  const focused = bar.contains(document.activeElement) ? document.activeElement : null;
  const refocus = focused && `.${focused.className.split(" ")[0]}[data-tab="${focused.dataset.tab}"]`;
  bar.replaceChildren(
    ...tabs.map((tab) => {
      const selected = tab.id === activeId;
      const name = tabName(tab);
      return h(
        "div",
        { class: `chat-tab${selected ? " selected" : ""}`, role: "presentation" },
        h("button", {
          type: "button",
          role: "tab",
          class: "tab-button",
          "data-testid": "chat-tab",
          "data-tab": tab.id,
          "data-port": tab.port,
          "aria-selected": String(selected),
          tabindex: selected ? "0" : "-1",
          title: name,
          text: name,
        }),
        closable
          ? h("button", {
              type: "button",
              class: "tab-close",
              "data-tab": tab.id,
              "aria-label": `Close ${name}`,
              title: "Close tab",
              text: "×",
            })
          : null,
      );
    }),
  );
  if (refocus) bar.querySelector(refocus)?.focus();
}

/** A tab is called by its port (label, else number) and what it shows. */
function tabName(tab) {
  const port = state.ports.get(tab.port);
  const where = port && port.label ? port.label : `:${tab.port}`;
  return tab.title === `Port ${tab.port}` ? where : `${where} · ${tab.title}`;
}
