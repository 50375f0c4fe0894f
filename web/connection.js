// The socket to /ws/chat: opens it with the subprotocols of SPEC §8, reconnects by itself with
// exponential backoff, and notices a dead connection with the application-level ping (a
// browser can neither send WebSocket pings nor see a half-open TCP connection).

export const SUBPROTOCOL = "mcp-platform.v1";

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 15000;
const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;

export class Connection {
  /**
   * @param {object} handlers `onOpen()`, `onMessage(message)`, `onState(state, detail)` where
   *   state is "connecting" | "open" | "waiting" (detail: seconds until the next try) |
   *   "refused" (detail: the reason), and `whyNotOpened()`: resolves to a reason to stop
   *   retrying (a refused credential) or null.
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.credential = null;
    this.socket = null;
    this.failures = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.pingCount = 0;
  }

  /** (Re)connects with this credential (null: none). */
  start(credential) {
    this.credential = credential;
    this.failures = 0;
    this.stop();
    this.open();
  }

  stop() {
    clearTimeout(this.retryTimer);
    this.stopPing();
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.onclose = socket.onmessage = socket.onopen = null;
      socket.close(1000, "reconnecting");
    }
  }

  isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  /** Sends a frame; false when not connected (the caller resumes it on the next open). */
  send(frame) {
    if (!this.isOpen()) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const protocols = this.credential ? [SUBPROTOCOL, `bearer.${this.credential}`] : [SUBPROTOCOL];
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/ws/chat`, protocols);
    } catch (error) {
      this.handlers.onState("refused", "the credential contains characters a WebSocket cannot carry; check it and sign in again");
      return;
    }
    this.socket = socket;
    let opened = false;
    this.handlers.onState("connecting");
    socket.onopen = () => {
      opened = true;
      this.failures = 0;
      this.handlers.onState("open");
      this.startPing();
      this.handlers.onOpen();
    };
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.status === "pong") {
        clearTimeout(this.pongTimer);
        return;
      }
      this.handlers.onMessage(message);
    };
    socket.onclose = async () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.stopPing();
      if (!opened) {
        const refusal = await this.handlers.whyNotOpened();
        if (refusal) {
          this.handlers.onState("refused", refusal);
          return;
        }
      }
      this.retry();
    };
  }

  retry() {
    const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** this.failures);
    this.failures += 1;
    // Jitter, so that many pages of a restarted server do not all come back at once.
    const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
    this.handlers.onState("waiting", Math.ceil(jittered / 1000));
    this.retryTimer = setTimeout(() => this.open(), jittered);
  }

  startPing() {
    this.pingTimer = setInterval(() => {
      this.pingCount += 1;
      if (!this.send({ action: "ping", request_id: `ping-${this.pingCount}` })) return;
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => this.socket?.close(4000, "no pong"), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  stopPing() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }
}
