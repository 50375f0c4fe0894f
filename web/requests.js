// The requests this page has sent and not yet seen end, and the rule that keeps their answers
// exact across lost connections (SPEC §2.4): every message is numbered by `seq`; after a
// reconnect the page asks for what follows the last one it showed (`resume` with `after_seq`),
// skips any it already has, and when the server instead replays a finished request whole
// (`"replayed": true`) it drops what it had and shows the replay. A `chat` the server never
// acknowledged is sent again with the same `request_id`, which the server never runs twice.

import { describeError } from "./transcript.js";

export class Requests {
  /** @param {Connection} connection  @param {() => void} onChange a request started or ended. */
  constructor(connection, onChange) {
    this.connection = connection;
    this.onChange = onChange;
    this.unfinished = new Map();
    /** Stops asked for while disconnected, sent on the next open. */
    this.pendingCancels = [];
    this.counter = 0;
  }

  /** A new request id, unique across tabs and reloads (a plain-HTTP page has no randomUUID). */
  newId() {
    const random = crypto.getRandomValues(new Uint32Array(2));
    this.counter += 1;
    return `web-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}-${this.counter}`;
  }

  /** Sends a chat whose messages go to `view`. */
  chat(view, payload) {
    const request = { view, payload, lastSeq: -1, resuming: false };
    this.unfinished.set(view.requestId, request);
    this.connection.send({ action: "chat", request_id: view.requestId, payload });
    this.onChange();
  }

  cancel(requestId) {
    if (!this.connection.send({ action: "cancel", request_id: requestId })) {
      this.unfinished.get(requestId)?.view.notice("not connected: the stop is sent once the connection is back");
      this.pendingCancels.push(requestId);
    }
  }

  /** The socket (re)opened: pick every unfinished request up where it was left. */
  resumeAll() {
    for (const [requestId, request] of this.unfinished) {
      if (request.lastSeq < 0) {
        this.connection.send({ action: "chat", request_id: requestId, payload: request.payload });
      } else {
        request.resuming = true;
        this.connection.send({ action: "resume", request_id: requestId, after_seq: request.lastSeq });
      }
    }
    const cancels = this.pendingCancels;
    this.pendingCancels = [];
    for (const requestId of cancels) this.cancel(requestId);
  }

  isRunning(requestId) {
    return this.unfinished.has(requestId);
  }

  handle(message) {
    const request = this.unfinished.get(message.request_id);
    if (!request) return;
    if (message.status === "error" && message.seq === undefined) {
      this.rejected(request, message);
      return;
    }
    if (message.status === "processing" && message.replayed) {
      request.lastSeq = -1;
      request.view.reset();
    }
    if (message.seq <= request.lastSeq) return;
    if (message.seq !== request.lastSeq + 1) {
      // Never expected: ask again from the last message shown rather than show a hole.
      request.resuming = true;
      this.connection.send({ action: "resume", request_id: message.request_id, after_seq: request.lastSeq });
      return;
    }
    request.lastSeq = message.seq;
    request.resuming = false;
    request.view.apply(message);
    if (["complete", "cancelled", "error"].includes(message.status)) this.finished(message.request_id);
  }

  /** An error without `seq`: the server refused an action before (or instead of) running it. */
  rejected(request, message) {
    const words = describeError(message.error);
    if (request.lastSeq < 0 || request.resuming) {
      // The chat itself (or its resume) was refused: it will not run, so it is over.
      request.view.apply({ status: "error", error: message.error });
      this.finished(message.request_id);
    } else {
      request.view.notice(words);
    }
  }

  finished(requestId) {
    this.unfinished.delete(requestId);
    this.onChange();
  }
}
