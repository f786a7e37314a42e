// What the page knows, and the elements it draws into: shared by every part of the UI.
//
// One object, mutated in place by the parts (sidebar, conversation, composer, search) and
// read by the others; `window.chatGateway.state` is this object, for tests and the console.
// Nothing here sends, fetches or renders, so every module can import it without a cycle.

const $ = (id) => document.getElementById(id);

// Module scripts run after the document is parsed, so every element exists by now.
export const dom = {
  connection: $("connection"),
  ports: $("ports"),
  portsEmpty: $("ports-empty"),
  title: $("conversation-title"),
  info: $("conversation-info"),
  follow: $("follow"),
  renameForm: $("rename-form"),
  renameInput: $("rename-input"),
  renameCancel: $("rename-cancel"),
  labelPort: $("label-port"),
  portLabelForm: $("port-label-form"),
  portLabelInput: $("port-label-input"),
  portLabelCancel: $("port-label-cancel"),
  newChat: $("new-chat"),
  rename: $("rename"),
  pin: $("pin"),
  archive: $("archive"),
  deleteSession: $("delete"),
  exportButton: $("export"),
  exportMenu: $("export-menu"),
  scroller: $("scroller"),
  loadOlder: $("load-older"),
  showNewer: $("show-newer"),
  messages: $("messages"),
  messagesEmpty: $("messages-empty"),
  outbox: $("outbox"),
  composer: $("composer"),
  composerLabel: $("composer-label"),
  input: $("composer-input"),
  send: $("send"),
  notice: $("notice"),
  search: $("search"),
  searchInput: $("search-input"),
  searchPort: $("search-port"),
  searchStatus: $("search-status"),
  searchResults: $("search-results"),
};

/** What the conversation shows: one session of a port, or the port's active one. */
export function newView(port, sessionId) {
  return {
    port,
    sessionId, // the session shown (null: the port has none yet, or not known yet)
    follow: true, // true: the port's active session, through rotations (a port subscription)
    messages: new Map(), // seq -> message, every one read (those rendered: lo to hi)
    lo: null, // the oldest seq rendered (null: none yet)
    hi: null, // the newest seq rendered, or null while the newest are (live ones join)
    lastSeq: 0,
    loaded: false, // true once what is shown is complete up to lastSeq (since_seq is valid)
    hasOlder: false,
    ref: null, // the ref of the latest subscribe sent for this view; older replies are stale
    since: null, // the since_seq that subscribe carried
    target: null, // what the subscription names: {port} or {session_id}
    reveal: null, // a seq to scroll to once loaded (a search result that was opened)
    revealText: null, // and the matched word in it to bring into view
    restore: null, // {seq, offset}: where to scroll once loaded (a tab shown again, a reload)
    idle: false, // history shown because the port has no active session (follow the next one)
  };
}

export const state = {
  ports: new Map(), // port -> {port, ide_type, online, active_session, last_activity_at}
  portItems: new Map(), // port -> its <li>
  selectedPort: null,
  sessions: new Map(), // session id -> session, for the selected port
  sessionItems: new Map(), // session id -> its <li>
  sessionsCursor: null,
  sessionsExpanded: false, // the selected port's whole list shown, not its first few
  view: newView(null, null),
  pending: new Map(), // client id -> outbox record (outbox.js) of a message not acked yet
  user: null, // the user the connection's `welcome` named; null before the first
  nextRef: 1,
  probed: false, // the API was asked why the socket is down (once per outage)
};

/** One notice at a time; `kind` lets a later success clear only the notice it resolves. */
export function showNotice(text, kind = "") {
  dom.notice.textContent = text;
  dom.notice.dataset.kind = kind;
  dom.notice.hidden = false;
}

export function hideNotice(kind = null) {
  if (kind !== null && dom.notice.dataset.kind !== kind) return;
  dom.notice.hidden = true;
  dom.notice.textContent = "";
}
