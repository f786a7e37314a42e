// The conversation: one session's messages, paged in from the newest, kept live.
//
// What is shown, and how it stays right:
// * The view is either the selected port's active session, followed through rotations with a
//   `port` subscription, or an older session picked in the list (`session_id`).
// * A new view subscribes without `since_seq` (live from `last_seq` on) and reads the newest
//   page over HTTP; a reconnection subscribes with `since_seq` = the last seq shown, and the
//   gateway sends exactly what came after it. Messages are keyed by seq, and an incoming copy
//   replaces a shown one only if it is a newer version (edits), so nothing shows twice.
// * The address bar's #port=…&session=… names the view, so a reload shows it again.

import { updateComposer } from "./composer.js";
import { api, live } from "./connection.js";
import { renderMessage } from "./render.js";
import { renderPortLabelAction } from "./port_label.js";
import { renderSessionActions } from "./session_actions.js";
import { savedScroll, scrolledTo, titleShown, viewShown } from "./tabs.js";
import {
  applyPresence,
  applySessionEvent,
  ideTypeFor,
  loadPorts,
  newestPort,
  newestSession,
  renderPorts,
  renderSessions,
  sessionTitle,
  switchSessions,
} from "./sidebar.js";
import { dom, newView, showNotice, state } from "./state.js";

const PAGE = 200;

// ---- what is selected -------------------------------------------------------------------

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

/** Read the ports; with none selected yet, show the one the address names, else the newest. */
export async function refreshPorts() {
  if (!(await loadPorts())) return;
  if (state.selectedPort === null) {
    const wanted = readHash();
    const port = state.ports.has(wanted.port) ? wanted.port : newestPort();
    if (port === null) return;
    const sessionId = wanted.port === port ? wanted.session : null;
    selectPort(port, sessionId);
    state.view.restore = savedScroll(port, sessionId); // a reload: where its tab was scrolled
  }
}

/** Show `port`: its active session (null, followed), or its session `sessionId`. */
export function selectPort(port, sessionId) {
  if (port === state.selectedPort && sessionId === null && state.view.follow) return;
  const previous = state.selectedPort;
  state.selectedPort = port;
  if (previous !== port) switchSessions().then(showHistoryIfIdle);
  showView(port, sessionId);
  renderPorts();
}

/** A followed port with no active session shows its newest session instead of nothing: its
 * history stays in view (marked `idle`, so the port's next active session is followed again). */
function showHistoryIfIdle() {
  const view = state.view;
  if (!view.follow || view.sessionId !== null || view.port !== state.selectedPort) return;
  const port = state.ports.get(view.port);
  const newest = newestSession();
  if (!newest || (port && port.active_session)) return;
  showHistory(newest.id);
}

/** Show `sessionId` of the port shown, which has no active session, as its history: `idle`,
 * so the port's next active session is followed again. */
function showHistory(sessionId) {
  showView(state.view.port, sessionId);
  state.view.idle = true;
  viewShown(state.view.port, null); // the tab still names the port: its next session shows
}

/** A session of the selected port was picked in the list. */
export function openSession(sessionId) {
  const session = state.sessions.get(sessionId);
  const view = state.view;
  if (session && session.status === "active") {
    if (!view.follow) showView(state.selectedPort, null); // else: already shown, and followed
  } else if (view.follow || view.sessionId !== sessionId) {
    showView(state.selectedPort, sessionId);
  }
}

/** The "Back to the active session" and "Load earlier messages" buttons. */
export function listenConversation() {
  dom.follow.addEventListener("click", () => showView(state.selectedPort, null));
  dom.loadOlder.addEventListener("click", loadOlder);
  dom.showNewer.addEventListener("click", showNewer);
  watchEdges();
  let frame = null;
  dom.scroller.addEventListener("scroll", () => {
    if (frame === null) frame = requestAnimationFrame(() => {
      frame = null;
      noteScroll();
    });
  });
}

/** Tell the shown tab where its conversation is scrolled to: the first message in view and
 * its offset from the top, or null when the end is in view (it then follows the end). Not
 * while the view loads or is being put back where it was. */
function noteScroll() {
  const view = state.view;
  if (!view.loaded || view.restore !== null || view.reveal !== null) return;
  const scroller = dom.scroller;
  if (view.hi === null && scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48) {
    scrolledTo(null);
    return;
  }
  const el = firstInView();
  if (el) scrolledTo({ seq: Number(el.dataset.seq), offset: el.offsetTop - scroller.scrollTop });
}

/** Show `port`'s session `sessionId` (null: the active one) scrolled to `scroll` (as
 * `noteScroll` took it; null: the end): a tab is shown again. */
export function showTab(port, sessionId, scroll) {
  selectPort(port, sessionId);
  const view = state.view;
  view.restore = scroll;
  if (view.loaded && scroll) restoreScroll(view); // the same view: nothing reloads
  else if (view.loaded) dom.scroller.scrollTop = dom.scroller.scrollHeight;
}

// ---- events that change the view --------------------------------------------------------

export function onPresence(port, online) {
  applyPresence(port, online);
  if (port === state.selectedPort) renderHead();
}

export function onSessionEvent(event, session, activated = false) {
  applySessionEvent(event, session);
  const view = state.view;
  if (view.port !== session.port) return;
  if (activated && session.status === "active" && view.idle) {
    showView(view.port, null); // the port has an active session again (maybe this one): follow it
  } else if (activated && session.status === "active" && view.follow && session.id !== view.sessionId) {
    // Rotation (or an unarchive, or a switch announced after a resync): the port
    // subscription now sends that session's messages from its first.
    followNewSession(session.id);
  } else if (view.follow && session.id === view.sessionId && session.status !== "active" && event !== "deleted") {
    // The followed session was archived: the port has none active now. Keep showing this
    // one (as history) rather than an empty port.
    showHistory(session.id);
  } else if (event === "deleted" && session.id === view.sessionId) {
    if (view.follow) followNewSession(null);
    else showView(view.port, null);
    showNotice("That session was deleted.");
  } else if (session.id === view.sessionId) {
    renderHead();
  }
}

/** A message sent from here was acked: the first one on a port creates its session, so show
 * that session if no event did already. */
export function showAckedSession(frame) {
  const view = state.view;
  if (view.follow && view.port === frame.port && view.sessionId === null) followNewSession(frame.session_id);
}

/** An `error`: true if it refused the view's subscribe (then the port's active session shows). */
export function refuseView(frame) {
  if (!frame.ref || frame.ref !== state.view.ref) return false;
  // E.g. a session from an old link, deleted since: show the port's active one instead.
  if (!state.view.follow) showView(state.view.port, null);
  showNotice(`Cannot show that session: ${frame.message}`);
  return true;
}

// ---- the view and its subscription ------------------------------------------------------

/** Show `sessionId` of `port`, or (null) the port's active session, following rotations. */
export function showView(port, sessionId) {
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
  viewShown(port, sessionId);
  subscribeView();
}

function followNewSession(sessionId) {
  const view = state.view;
  view.sessionId = sessionId;
  view.messages = new Map();
  view.lo = view.hi = null;
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

/** Subscribe to what the view shows; on a (re)connection, from the last seq shown. */
export function subscribeView() {
  const view = state.view;
  if (view.port === null || !live.isOpen) return; // app.js subscribes when the socket opens
  view.ref = `view-${state.nextRef++}`;
  view.since = view.loaded ? view.lastSeq : null;
  view.target = viewTarget(view);
  const frame = { type: "subscribe", ref: view.ref, ...view.target };
  if (view.since !== null) frame.since_seq = view.since;
  live.send(frame);
}

export function onSubscribed(frame) {
  const view = state.view;
  if (frame.sessions || frame.ref !== view.ref) return; // the list, or an older view's
  const session = frame.session;
  if (session === null) {
    // A port with no active session: its next message creates one (a `created` event);
    // meanwhile its newest session, if it has any, shows.
    followNewSession(null);
    showHistoryIfIdle();
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
  view.lo = view.hi = null;
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

// ---- messages ---------------------------------------------------------------------------

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
  if (view.reveal !== null) {
    view.restore = null; // a search hit wins over where the tab was
    await reveal(view);
  } else if (view.restore !== null) {
    await restoreScroll(view);
  }
}

/** Load earlier pages until the message `seq` is known (or there are none), then show the
 * messages around it if they are not (the window of rendered messages, below, may be
 * elsewhere); false if the view changed meanwhile. */
async function loadUntil(view, seq) {
  while (!view.messages.has(seq) && view.hasOlder && state.view === view) {
    const before = view.messages.size;
    await fetchOlder(view);
    if (view.messages.size === before) break; // the load failed: its notice says so
  }
  if (state.view !== view) return false;
  if (view.messages.has(seq) && !inWindow(view, seq)) showAround(view, seq);
  return true;
}

/** Scroll back to where the tab was: `view.restore`'s message `offset` px below the top. */
async function restoreScroll(view) {
  const { seq, offset } = view.restore;
  if (!(await loadUntil(view, seq))) return;
  const el = dom.messages.querySelector(`[data-seq="${seq}"]`);
  if (el) dom.scroller.scrollTop = el.offsetTop - offset;
  view.restore = null;
}

/** Load earlier pages until the message `view.reveal` is shown, then scroll to it and mark it:
 * to the word `view.revealText` in it when given (a long message's match may be far from its
 * middle), marked with the CSS highlight `search-hit`. */
export async function reveal(view) {
  const seq = view.reveal;
  const text = view.revealText;
  view.reveal = null;
  view.revealText = null;
  if (!(await loadUntil(view, seq))) return;
  const el = dom.messages.querySelector(`[data-seq="${seq}"]`);
  if (!el) return;
  for (const found of dom.messages.querySelectorAll(".found")) found.classList.remove("found");
  el.classList.add("found");
  // A long message shows collapsed: open it, or the match may be in its hidden part.
  if (el.classList.contains("collapsed")) el.querySelector(".show-more")?.click();
  const range = text ? findText(el, text) : null;
  if (!range) {
    el.scrollIntoView({ block: "center" });
    return;
  }
  const box = range.getBoundingClientRect();
  const frame = dom.scroller.getBoundingClientRect();
  dom.scroller.scrollTop += box.top - frame.top - (frame.height - box.height) / 2;
  if (globalThis.CSS && CSS.highlights) CSS.highlights.set("search-hit", new Highlight(range));
}

/** The first occurrence of `text` in `el`'s text, case aside, as a Range; null if none lies
 * within one text node. */
function findText(el, text) {
  const wanted = text.toLowerCase();
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const at = node.data.toLowerCase().indexOf(wanted);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + text.length);
    return range;
  }
  return null;
}

// ---- the window of rendered messages ------------------------------------------------------
//
// Every message of the view that the page has read stays in `view.messages`, but only a window
// of at most MAX_SHOWN of them, in seq order, is on the page: [view.lo, view.hi], `hi` null
// while the window reaches the newest (then live messages join it). A session of 10,000
// messages rendered whole made every scrolled frame cost over 100 ms (docs/benchmarks.md);
// bounded, scrolling costs what it does with a few hundred. Going past either edge moves the
// window: "Load earlier messages" (reading a page from the server once the known ones are
// shown) and "Show newer messages", each also done by scrolling to it, drop what falls out at
// the far edge; the message in view stays where it was on the screen.

const MAX_SHOWN = 5 * PAGE;
let edgeObserver = null;

/** Whether the message `seq` is in the window. */
function inWindow(view, seq) {
  return (view.lo === null || seq >= view.lo) && (view.hi === null || seq <= view.hi);
}

/** Known seqs below `lo` (all, oldest first) and above `hi`, in order. */
function knownOutside(view) {
  const seqs = [...view.messages.keys()].sort((a, b) => a - b);
  return {
    older: view.lo === null ? [] : seqs.filter((seq) => seq < view.lo),
    newer: view.hi === null ? [] : seqs.filter((seq) => seq > view.hi),
  };
}

let olderLoad = null; // the "Load earlier messages" under way: a click and a scroll share it

/** "Load earlier messages": the known messages just below the window, else the page before
 * the oldest known one from the server. */
function loadOlder() {
  olderLoad ??= loadOlderNow().finally(() => {
    olderLoad = null;
  });
  return olderLoad;
}

async function loadOlderNow() {
  const view = state.view;
  if (knownOutside(view).older.length === 0) await fetchOlder(view);
  if (state.view !== view) return;
  const { older } = knownOutside(view);
  if (older.length === 0) return;
  const lo = older[Math.max(0, older.length - PAGE)];
  keepInView(() => {
    view.lo = lo;
    dom.messages.prepend(fragmentOf(view, older.filter((seq) => seq >= lo)));
    trim(view, "newer");
  });
  renderHead();
}

/** "Show newer messages": the next known ones above the window (all the newer messages are
 * known: the newest page and what came live since). */
function showNewer() {
  const view = state.view;
  const { newer } = knownOutside(view);
  if (newer.length === 0) return;
  const taken = newer.slice(0, PAGE);
  keepInView(() => {
    view.hi = taken.length === newer.length ? null : taken[taken.length - 1];
    dom.messages.append(fragmentOf(view, taken));
    trim(view, "older");
  });
  updateEmpty();
}

/** The page before the oldest known message, into `view.messages` (not rendered). */
async function fetchOlder(view) {
  const oldest = Math.min(...view.messages.keys());
  if (!Number.isFinite(oldest) || oldest <= 1) return;
  const sessionId = view.sessionId;
  dom.loadOlder.disabled = true;
  const page = await fetchMessages(sessionId, { before_seq: String(oldest), limit: String(PAGE) });
  dom.loadOlder.disabled = false;
  if (page === null || !stillShowing(view, sessionId)) return;
  view.hasOlder = page.has_more;
  if (view.lo === null && page.messages.length) view.lo = oldest; // the window stops here
  for (const message of page.messages) view.messages.set(message.seq, message);
  updateEmpty();
}

/** Show the messages around `seq` (a search hit, a tab's place), in place of the window. */
function showAround(view, seq) {
  const seqs = [...view.messages.keys()].sort((a, b) => a - b);
  const at = seqs.indexOf(seq);
  const first = Math.max(0, at - PAGE);
  const last = Math.min(seqs.length, first + MAX_SHOWN);
  view.lo = seqs[first];
  view.hi = last >= seqs.length ? null : seqs[last - 1];
  dom.messages.replaceChildren(fragmentOf(view, seqs.slice(first, last)));
  updateEmpty();
}

function fragmentOf(view, seqs) {
  const fragment = document.createDocumentFragment();
  for (const seq of seqs) fragment.append(renderMessage(view.messages.get(seq)));
  return fragment;
}

/** Drop messages past MAX_SHOWN at the `side` ("newer": the bottom, "older": the top). */
function trim(view, side) {
  const children = dom.messages.children;
  let extra = children.length - MAX_SHOWN;
  if (extra <= 0) return;
  if (side === "newer") {
    while (extra-- > 0) dom.messages.lastElementChild.remove();
    view.hi = Number(dom.messages.lastElementChild.dataset.seq);
  } else {
    while (extra-- > 0) dom.messages.firstElementChild.remove();
    view.lo = Number(dom.messages.firstElementChild.dataset.seq);
  }
}

/** Run `change` (which adds or drops messages above or below) keeping the first message in
 * view at the same place on the screen. */
function keepInView(change) {
  const anchor = firstInView();
  const offset = anchor ? anchor.offsetTop - dom.scroller.scrollTop : 0;
  change();
  if (anchor && anchor.isConnected) dom.scroller.scrollTop = anchor.offsetTop - offset;
  else if (anchor) dom.scroller.scrollTop = 0; // what was in view went: show what came
  updateEmpty();
}

/** The first message whose bottom is below the top of the view (binary search: they are in
 * seq order, so in order on the page), or null. Layout positions (offsetTop: the scroller is
 * the messages' offset parent), not the rendered boxes, which a new message's entrance
 * animation moves for a moment. */
function firstInView() {
  const children = dom.messages.children;
  const top = dom.scroller.scrollTop;
  let low = 0;
  let high = children.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    const el = children[mid];
    if (el.offsetTop + el.offsetHeight <= top) low = mid + 1;
    else high = mid;
  }
  return children[low] || null;
}

/** Load earlier or show newer messages as soon as the button for it comes near the view, so
 * scrolling goes on through the whole session. */
function watchEdges() {
  edgeObserver = new IntersectionObserver(
    (entries) => {
      const view = state.view;
      if (!view.loaded || view.reveal !== null || view.restore !== null) return;
      for (const entry of entries) {
        if (!entry.isIntersecting || entry.target.hidden || entry.target.disabled) continue;
        if (entry.target === dom.loadOlder) loadOlder();
        else showNewer();
      }
    },
    { root: dom.scroller, rootMargin: "200px 0px" },
  );
  edgeObserver.observe(dom.loadOlder);
  edgeObserver.observe(dom.showNewer);
}

async function fetchMessages(sessionId, params) {
  try {
    return await api(`/api/sessions/${encodeURIComponent(sessionId)}/messages?${new URLSearchParams(params)}`);
  } catch (error) {
    showNotice(`Could not load messages: ${error.message}`, "load");
    return null;
  }
}

export function onMessage(frame) {
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
  // New messages after the last one rendered (a first page, live ones) go in at once, in one
  // fragment; the others (edits, a message arriving out of order) one by one in their place.
  const tail = document.createDocumentFragment();
  let last = Number(dom.messages.lastElementChild?.dataset.seq ?? 0);
  for (const message of messages) {
    const shown = view.messages.get(message.seq);
    if (shown && version(message) <= version(shown)) continue;
    view.messages.set(message.seq, message);
    if (message.seq > view.lastSeq) view.lastSeq = message.seq;
    if (view.lo === null) view.lo = message.seq;
    if (!inWindow(view, message.seq)) continue; // known, shown when the window gets there
    const el = renderMessage(message);
    if (!shown && message.seq > last) {
      tail.append(el);
      last = message.seq;
    } else if (shown) {
      const old = dom.messages.querySelector(`[data-seq="${message.seq}"]`);
      if (old) old.replaceWith(el);
      else placeMessage(el, message.seq);
    } else {
      placeMessage(el, message.seq);
    }
  }
  dom.messages.append(tail);
  const sticking = stick === true || (stick === null && atEnd);
  if (view.hi === null && dom.messages.children.length > MAX_SHOWN) {
    // Following the end: the oldest go (where the reader is stays put, unless at the end).
    if (sticking) trim(view, "older");
    else keepInView(() => trim(view, "older"));
  }
  updateEmpty();
  if (sticking) scroller.scrollTop = scroller.scrollHeight;
}

/** Show the newest messages (a message was sent from here while the window was further up). */
export function showNewest() {
  const view = state.view;
  if (view.hi === null || view.lastSeq === 0) return;
  showAround(view, view.lastSeq);
  dom.scroller.scrollTop = dom.scroller.scrollHeight;
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
  let older = 0;
  let newer = 0;
  if (view.hi !== null || (view.lo !== null && view.messages.size > dom.messages.children.length)) {
    for (const seq of view.messages.keys()) {
      if (seq < view.lo) older += 1;
      else if (view.hi !== null && seq > view.hi) newer += 1;
    }
  }
  dom.loadOlder.hidden = !view.hasOlder && older === 0;
  dom.showNewer.hidden = newer === 0;
  dom.showNewer.textContent = `Show newer messages (${newer})`;
}

export function renderHead() {
  const view = state.view;
  const port = state.ports.get(view.port);
  // "Back to the active session" only when there is one to go back to.
  dom.follow.hidden = view.follow || view.port === null || Boolean(port && !port.active_session);
  renderSessionActions();
  renderPortLabelAction();
  if (view.port === null) {
    dom.title.textContent = "Select a port";
    dom.info.textContent = "";
    return;
  }
  const session = view.sessionId ? state.sessions.get(view.sessionId) : null;
  dom.title.textContent = session ? sessionTitle(session) : `Port ${view.port}`;
  titleShown(dom.title.textContent);
  const parts = [`:${view.port}`, port ? port.ide_type : ideTypeFor(view.port)];
  if (port && port.label) parts.splice(1, 0, port.label);
  if (port) parts.push(port.online ? "IDE online" : "IDE offline");
  if (!view.sessionId) parts.push("no session yet");
  else if (view.follow) parts.push("active session");
  else if (session) parts.push(session.status === "active" ? "active session" : "archived session");
  if (session && session.pinned) parts.push("pinned");
  dom.info.textContent = parts.join(" · ");
  updateEmpty();
}
