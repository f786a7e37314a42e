// The web UI: ports and their sessions on the left, one session's messages on the right, a
// composer below them, all kept live over one WebSocket. Native ES modules, no build step:
//
//   state.js         the shared state object, the page's elements, the notice
//   highlight.js     syntax highlighting of code blocks (Prism in highlight_worker.js)
//   render.js        message content to DOM nodes, never through HTML
//   connection.js    the token, HTTP `api()`, the WebSocket (`live`, from live.js), its indicator
//   signin.js        token mode: the sign-in form, who is signed in, signing out
//   sidebar.js       ports and their sessions (ide-ports.js, generated from gateway/ws/protocol.py)
//   outbox.js        unsent messages kept in IndexedDB
//   composer.js      typing, sending, the messages not acked yet (shown, retried)
//   session_actions.js  the shown session's controls: new chat, rename, pin, archive, delete
//   port_label.js    the shown port's label: editing it, applying `port` events
//   tabs.js          tabs inside the page: open chats, their scroll positions, kept per tab
//   conversation.js  the message view: what is selected, its subscription, paging, following
//   search.js        search and opening a match
//
// Each imports only modules listed above it (state.js, highlight.js, live.js and ide-ports.js
// import none), so there is no cycle. This one wires them together: what happens when the
// socket opens, where each frame goes, and which clicks and keys do what.

import {
  listenComposer,
  refuseSent,
  resendPending,
  settleSent,
  settings as composerSettings,
  updateComposer,
} from "./composer.js";
import { live, showConnectionState, startLive } from "./connection.js";
import {
  listenConversation,
  onMessage,
  onPresence,
  onSessionEvent,
  onSubscribed,
  openSession,
  refreshPorts,
  refuseView,
  renderHead,
  selectPort,
  showAckedSession,
  showNewest,
  showTab,
  showView,
  subscribeView,
} from "./conversation.js";
import { applyPortLabel, listenPortLabel } from "./port_label.js";
import { listenSearch } from "./search.js";
import { listenSessionActions } from "./session_actions.js";
import { listenSignIn, showAccount, showSignIn } from "./signin.js";
import { listenSidebar, loadSessions } from "./sidebar.js";
import { listenTabs, openTab } from "./tabs.js";
import { showNotice, state } from "./state.js";

// For tests and the console: the live socket, and what is shown.
window.chatGateway = {
  get socket() {
    return live.socket;
  },
  state,
  composer: composerSettings,
};

function showConnection(connectionState, detail) {
  showConnectionState(connectionState, detail);
  updateComposer();
  if (connectionState === "open") {
    state.probed = false;
  } else if (connectionState === "waiting" && !state.probed) {
    // A refused handshake looks like any network error from here; the API says why (a 401,
    // say a token that expired meanwhile, stops the socket and shows the sign-in), and
    // while the socket is down the ports are still shown.
    state.probed = true;
    refreshPorts();
  }
}

async function connected() {
  live.send({ type: "subscribe", sessions: true });
  if (state.selectedPort !== null) subscribeView();
  await Promise.all([refreshPorts(), state.selectedPort !== null ? loadSessions() : null]);
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
    case "port":
      applyPortLabel(frame.port, frame.label);
      break;
    case "ack":
      if (settleSent(frame)) showAckedSession(frame);
      break;
    case "error":
      // It answers a message sent from here, or the view's subscribe, or neither.
      if (!refuseSent(frame) && !refuseView(frame)) showNotice(frame.message);
      break;
    case "resync":
      onResync();
      break;
    case "welcome":
      showAccount(frame.user_id);
      resendPending(frame.user_id); // unsent messages, this tab's and the outbox's
      break;
    default:
      break; // pong, unsubscribed
  }
}

/** The gateway may have lost events of this feed (its pub/sub connection was reset): the
 * messages of a followed session or port come anyway (the gateway reads them from storage,
 * and announces a rotation it missed with an `activated` session event), but the session
 * list and presence do not, so fetch them again. */
function onResync() {
  refreshPorts();
  if (state.selectedPort !== null) loadSessions();
}

listenTabs(showTab);
listenSidebar({
  pickPort: (port, newTab) => (newTab ? openTab(port, null) : selectPort(port, null)),
  pickSession: (sessionId, newTab) => {
    if (!newTab) {
      openSession(sessionId);
      return;
    }
    const session = state.sessions.get(sessionId);
    openTab(state.selectedPort, session && session.status === "active" ? null : sessionId);
  },
});
listenConversation();
listenComposer((port) => {
  if (!state.view.follow) showView(port, null); // a message goes to the active session
  else showNewest(); // where it will show
});
listenSearch();
listenSignIn();
listenPortLabel((port) => {
  if (port === state.selectedPort) renderHead();
});
listenSessionActions({
  applied: onSessionEvent,
  showActive: () => showView(state.selectedPort, null),
});

updateComposer();
startLive({
  onOpen: connected,
  onFrame: handleFrame,
  onState: showConnection,
  onUnauthorized: showSignIn,
});
