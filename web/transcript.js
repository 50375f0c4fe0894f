// One request as the reader sees it: the question, then the answer in the order it streamed
// (text, tool-call cards, notices, questions), then how it ended. Live messages and stored
// history go through the same `apply`, so both look alike.

import { element } from "./dom.js";
import { setMarkdown } from "./markdown.js";
import { renderQuestion, settleQuestion } from "./questions.js";

/** A server error (SPEC §2.3) in words, with each invalid field. */
export function describeError(error) {
  if (!error) return "the request failed";
  const lines = [`${error.message ?? "the request failed"} (error ${error.code ?? "?"})`];
  for (const invalid of error.data?.validation_errors ?? []) {
    lines.push(`${invalid.field}: ${invalid.message}`);
  }
  const wait = error.data?.retry_after_seconds;
  if (wait !== undefined) lines.push(`try again in ${Math.ceil(wait)} s`);
  return lines.join("\n");
}

const SAFE_IMAGE_TYPE = /^image\/(png|jpeg|gif|webp|bmp|avif)$/;

export class RequestView {
  /** @param {(frame: object) => void} send answers questions (approve / elicit). */
  constructor(requestId, question, send) {
    this.requestId = requestId;
    this.send = send;
    this.root = element("article", "request");
    this.root.dataset.requestId = requestId;
    this.root.dataset.status = "pending";
    this.root.append(element("div", "user", question));
    this.answer = element("div", "answer");
    this.footer = element("div", "footer");
    this.root.append(this.answer, this.footer);
    this.reset();
  }

  /** Forgets what was shown of the answer (a replay re-sends it whole). */
  reset() {
    this.answer.replaceChildren();
    this.footer.textContent = "";
    this.cards = new Map();
    this.questions = new Map();
    this.text = null;
    this.setStatus("pending");
  }

  setStatus(status) {
    this.root.dataset.status = status;
  }

  /** A server message of this request, in seq order without repeats. */
  apply(message) {
    switch (message.status) {
      case "processing":
        this.setStatus("processing");
        this.footer.textContent = "working…";
        break;
      case "chunk":
        this.applyChunk(message.chunk);
        break;
      case "complete":
        this.finish("complete", describeMetadata(message.metadata));
        break;
      case "cancelled":
        this.finish("cancelled", "cancelled: stopped before the answer was complete");
        break;
      case "error":
        this.finish("error", describeError(message.error));
        break;
    }
  }

  /** A problem that does not end the request (a refused cancel or answer). */
  notice(text) {
    this.answer.append(element("p", "notice", text));
    this.text = null;
  }

  finish(status, description) {
    this.setStatus(status);
    this.footer.textContent = description;
    this.flushText();
  }

  applyChunk(chunk) {
    const data = chunk?.data;
    switch (chunk?.type) {
      case "text":
        this.appendText(data);
        break;
      case "tool_call":
        this.addCard(data);
        break;
      case "progress":
        this.card(data.id)?.progress(data);
        break;
      case "tool_result":
        (this.card(data.id) ?? this.addCard(data)).result(data);
        break;
      case "notice":
        this.notice(typeof data === "string" ? data : data?.message ?? JSON.stringify(data));
        break;
      case "approval_request":
      case "elicitation": {
        const question = renderQuestion(chunk.type, data, (frame) => this.send({ ...frame, request_id: this.requestId }));
        this.questions.set(data.id, question);
        this.answer.append(question);
        this.text = null;
        break;
      }
      case "approval":
      case "elicitation_result":
        settleQuestion(this.questions.get(data.id), data);
        break;
    }
  }

  appendText(piece) {
    if (!this.text) {
      this.text = { node: element("div", "markdown"), source: "", pending: false };
      this.answer.append(this.text.node);
    }
    this.text.source += piece;
    // Re-render at most once a frame: a fast stream must not re-parse per word.
    if (!this.text.pending) {
      this.text.pending = true;
      const text = this.text;
      requestAnimationFrame(() => this.renderText(text));
    }
  }

  flushText() {
    if (this.text?.pending) this.renderText(this.text);
  }

  renderText(text) {
    text.pending = false;
    setMarkdown(text.node, text.source);
  }

  card(id) {
    return this.cards.get(id);
  }

  addCard(call) {
    const card = new ToolCard(call);
    this.cards.set(call.id, card);
    this.answer.append(card.root);
    this.text = null;
    return card;
  }
}

class ToolCard {
  constructor(call) {
    this.root = element("details", "tool");
    this.root.open = true;
    this.root.dataset.callId = call.id;
    this.root.dataset.tool = call.name;
    const summary = element("summary");
    summary.append(element("span", "tool-name", call.name), (this.state = element("span", "tool-state", "running…")));
    const args = element("pre", "tool-arguments", JSON.stringify(call.arguments ?? {}, null, 2));
    this.bar = element("progress");
    this.bar.hidden = true;
    this.progressText = element("span", "progress-text");
    this.output = element("div", "tool-result");
    this.root.append(summary, element("div", "label", "Arguments"), args, this.bar, this.progressText, this.output);
  }

  progress({ progress, total, message }) {
    this.bar.hidden = false;
    if (total) {
      this.bar.max = total;
      this.bar.value = progress;
    } else {
      this.bar.removeAttribute("value");
    }
    this.progressText.textContent = message ?? (total ? `${progress} of ${total}` : `${progress}`);
  }

  result(data) {
    this.bar.hidden = true;
    this.progressText.textContent = "";
    this.root.dataset.ok = String(Boolean(data.ok));
    const took = data.duration_ms ? ` in ${Math.round(data.duration_ms)} ms` : "";
    this.state.textContent = data.ok ? `done${took}` : `failed${took}`;
    const parts = [element("div", "label", "Result"), element("pre", "tool-output", data.content ?? "")];
    for (const image of data.images ?? []) {
      if (!SAFE_IMAGE_TYPE.test(image.mime_type)) continue;
      const img = element("img", "tool-image");
      img.alt = `image returned by ${data.name ?? "the tool"}`;
      img.src = `data:${image.mime_type};base64,${image.data}`;
      parts.push(img);
    }
    if (data.structured !== undefined) {
      parts.push(element("div", "label", "Structured"), element("pre", "tool-output", JSON.stringify(data.structured, null, 2)));
    }
    for (const link of data.resource_links ?? []) {
      parts.push(element("div", "resource-link", `${link.name ?? ""} ${link.uri}`.trim()));
    }
    this.output.replaceChildren(...parts);
  }
}

function describeMetadata(metadata) {
  if (!metadata) return "complete";
  const parts = [metadata.model, `${metadata.tokens} tokens`];
  if (metadata.tool_hops) parts.push(`${metadata.tool_hops} tool ${metadata.tool_hops === 1 ? "hop" : "hops"}`);
  const ms = metadata.duration_ms;
  if (ms !== undefined) parts.push(ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);
  if (metadata.finish_reason && metadata.finish_reason !== "stop") parts.push(`ended: ${metadata.finish_reason}`);
  if (metadata.cached) parts.push("from the store");
  return parts.filter(Boolean).join(" · ");
}

/**
 * A stored conversation's events (GET /api/conversations/{id}) as request views, in order.
 * The events are turned into the messages a live request would have sent.
 */
export function historyViews(events, send) {
  const views = [];
  let view = null;
  for (const event of events) {
    if (event.type === "user_message") {
      view = new RequestView(event.request_id ?? event.id, event.content ?? "", send);
      view.apply({ status: "processing" });
      views.push(view);
      continue;
    }
    if (!view) continue;
    const extra = event.extra ?? {};
    if (event.type === "tool_result") {
      view.applyChunk({
        type: "tool_result",
        data: { id: event.tool_call_id, name: extra.name, ok: extra.ok, content: event.content, duration_ms: extra.duration_ms },
      });
      continue;
    }
    if (event.content) view.applyChunk({ type: "text", data: event.content });
    for (const call of event.tool_calls ?? []) view.applyChunk({ type: "tool_call", data: call });
    if (extra.status === "complete") view.apply({ status: "complete", metadata: extra.metadata });
    else if (extra.status === "cancelled") view.apply({ status: "cancelled" });
    else if (extra.status) view.apply({ status: "error", error: extra.error });
  }
  for (const historic of views) {
    for (const card of historic.cards.values()) card.root.open = false;
    if (historic.root.dataset.status === "processing") historic.footer.textContent = "unfinished";
  }
  return views;
}
