// Markdown for model output: marked parses, DOMPurify sanitises (both vendored, see
// vendor/README.md). HTML written by the model is shown as text, never parsed, so a model that
// repeats a tool's HTML cannot inject markup; DOMPurify is the second wall behind that
// (`javascript:` links, event-handler attributes). Under the page's Trusted Types policy,
// DOMPurify's TrustedHTML is the only thing `innerHTML` accepts.

import { Marked } from "./vendor/marked.esm.js";

const purify = globalThis.DOMPurify;

const escapeHtml = (text) =>
  text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    html: ({ text }) => escapeHtml(text),
    // Remote images would be blocked by the CSP (and could track the reader): show them as links.
    image: ({ href, text }) => `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`,
  },
});

purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Replaces `element`'s content with `text` rendered as Markdown. */
export function setMarkdown(element, text) {
  const html = marked.parse(text, { async: false });
  element.innerHTML = purify.sanitize(html, {
    RETURN_TRUSTED_TYPE: true,
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
  });
}
