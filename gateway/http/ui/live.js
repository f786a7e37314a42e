// The page's one WebSocket to the gateway, reconnecting by itself.
//
// After a drop it waits 0.5 s, then twice as long after each failed attempt, at most 5 s
// (with a little jitter so many tabs do not come back in lockstep); a connection that got its
// `welcome` resets the wait. `onOpen` runs on every (re)connection, after `hello` is sent: the
// app re-subscribes there, with `since_seq` so nothing is missed or shown twice.
//
// A connection can die without a close (laptop sleep, network change): a `ping` goes out
// every 25 s and a connection that does not answer within 10 s is dropped and replaced.

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 5000;
const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;

export class LiveSocket {
  /**
   * @param {string} url  ws(s) URL of /ws, with ?token= when the gateway wants one
   * @param {{onOpen: () => void, onFrame: (frame: object) => void,
   *          onState: (state: string, detail: object) => void}} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.socket = null;
    this.state = "idle";
    this._delay = MIN_DELAY_MS;
    this._retry = null;
    this._pinger = null;
    this._pongDue = null;
    this._stopped = false;
    window.addEventListener("online", () => this.reconnectNow());
  }

  /** True if the frame was handed to an open socket. */
  send(frame) {
    if (this.socket === null || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  get isOpen() {
    return this.state === "open";
  }

  start() {
    this._stopped = false;
    this._connect();
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._retry);
    this._stopHeartbeat();
    if (this.socket) this.socket.close(1000);
    this._setState("closed", {});
  }

  /** Skip the remaining back-off (the browser says the network is back). */
  reconnectNow() {
    if (this._stopped || this.state !== "waiting") return;
    clearTimeout(this._retry);
    this._connect();
  }

  _connect() {
    this._retry = null;
    this._setState("connecting", {});
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this._scheduleRetry({ reason: String(error) });
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      if (this.socket !== socket) return;
      this.send({ type: "hello", kind: "ui", client: { name: "chat-gateway-ui", version: "1" } });
      this._setState("open", {});
      this._startHeartbeat();
      this.handlers.onOpen();
    });
    socket.addEventListener("message", (event) => {
      if (this.socket !== socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // the gateway only sends JSON; ignore anything else
      }
      clearTimeout(this._pongDue);
      this._pongDue = null;
      if (frame.type === "welcome") this._delay = MIN_DELAY_MS;
      this.handlers.onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      this._drop(socket, { code: event.code, reason: event.reason });
    });
    // An `error` event is always followed by `close`, which does the work.
  }

  /** Forget `socket` (if it is still the current one) and plan the next attempt. */
  _drop(socket, detail) {
    if (this.socket !== socket) return;
    this.socket = null;
    this._stopHeartbeat();
    if (!this._stopped) this._scheduleRetry(detail);
  }

  _scheduleRetry(detail) {
    const delay = Math.min(this._delay, MAX_DELAY_MS) * (0.9 + Math.random() * 0.2);
    this._delay = Math.min(this._delay * 2, MAX_DELAY_MS);
    this._setState("waiting", { ...detail, retryInMs: delay });
    this._retry = setTimeout(() => this._connect(), delay);
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    this._pinger = setInterval(() => {
      if (!this.send({ type: "ping" }) || this._pongDue !== null) return;
      const socket = this.socket;
      this._pongDue = setTimeout(() => {
        // No frame at all since the ping: the connection is dead. A close handshake would
        // not complete either, so do not wait for its `close` event.
        if (this.socket !== socket || socket === null) return;
        this._drop(socket, { reason: "no answer to ping" });
        socket.close(4000, "no pong");
      }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  _stopHeartbeat() {
    clearInterval(this._pinger);
    clearTimeout(this._pongDue);
    this._pinger = null;
    this._pongDue = null;
  }

  _setState(state, detail) {
    this.state = state;
    this.handlers.onState(state, detail);
  }
}
