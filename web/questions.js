// Questions a running request asks the reader (SPEC §2.6): approve a tool call, or give an MCP
// server the input it asks for. They are shown in the answer where they arose and answered with
// `approve` / `elicit`; the `approval` / `elicitation_result` chunk then records the outcome. A
// server that does not know these actions answers with an error, which the request shows as a
// notice; the request itself goes on.

import { button, element } from "./dom.js";

/** The dialog for an `approval_request` or `elicitation` chunk. */
export function renderQuestion(type, data, send) {
  const box = element("section", "question");
  box.setAttribute("role", "dialog");
  box.dataset.questionId = data.id;
  const answered = (text) => {
    for (const control of box.querySelectorAll("button, input, select")) control.disabled = true;
    box.querySelector(".question-state").textContent = text;
  };
  if (type === "approval_request") {
    box.setAttribute("aria-label", "Approve a tool call");
    box.append(
      element("h3", null, `Allow ${data.name}${data.server ? ` (server ${data.server})` : ""}?`),
      element("pre", "tool-arguments", JSON.stringify(data.arguments ?? {}, null, 2)),
    );
    if (data.timeout_seconds) box.append(element("p", "hint", `Not answering within ${data.timeout_seconds} s denies it.`));
    const decide = (decision) => () => {
      send({ action: "approve", payload: { call_id: data.id, decision } });
      answered(`you chose: ${decision}`);
    };
    box.append(element("div", "buttons"));
    box.lastChild.append(button("Allow", decide("allow")), button("Deny", decide("deny")));
  } else {
    box.setAttribute("aria-label", "A tool asks for input");
    box.append(element("h3", null, `${data.server ?? "A tool"} asks: ${data.message ?? ""}`));
    const form = data.mode === "url" ? urlPart(data, box) : formPart(data.requested_schema, box);
    const reply = (action) => () => {
      const payload = { elicitation_id: data.id, action };
      if (action === "accept" && form) payload.content = form();
      send({ action: "elicit", payload });
      answered(`you chose: ${action}`);
    };
    box.append(element("div", "buttons"));
    box.lastChild.append(button("Accept", reply("accept")), button("Decline", reply("decline")), button("Cancel", reply("cancel")));
  }
  box.append(element("p", "question-state"));
  return box;
}

/** Records the outcome chunk (`approval` / `elicitation_result`) on its dialog. */
export function settleQuestion(box, data) {
  if (!box) return;
  for (const control of box.querySelectorAll("button, input, select")) control.disabled = true;
  const outcome = data.decision ?? data.action ?? "answered";
  const by = data.by ? ` by ${data.by}` : "";
  const reason = data.reason ? `: ${data.reason}` : "";
  box.querySelector(".question-state").textContent = `${outcome}${by}${reason}`;
}

function urlPart(data, box) {
  let url;
  try {
    url = new URL(data.url);
  } catch {
    url = null;
  }
  if (url && (url.protocol === "https:" || url.protocol === "http:")) {
    const link = element("a", null, url.href);
    link.href = url.href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    box.append(link);
  } else {
    box.append(element("p", "hint", `The server gave an address the page will not open: ${data.url}`));
  }
  return null;
}

/** Inputs for the top-level properties of a flat `requested_schema`; returns the reader. */
function formPart(schema, box) {
  const fields = [];
  const required = new Set(schema?.required ?? []);
  for (const [name, property] of Object.entries(schema?.properties ?? {})) {
    const label = element("label", "field", property.title ?? name);
    let input;
    if (Array.isArray(property.enum)) {
      input = element("select");
      for (const value of property.enum) input.append(new Option(String(value), String(value)));
    } else {
      input = element("input");
      input.type = property.type === "boolean" ? "checkbox" : property.type === "number" || property.type === "integer" ? "number" : "text";
    }
    input.required = required.has(name);
    label.append(input);
    if (property.description) label.append(element("span", "hint", property.description));
    box.append(label);
    fields.push({ name, property, input });
  }
  return () => {
    const content = {};
    for (const { name, property, input } of fields) {
      if (property.type === "boolean") content[name] = input.checked;
      else if (input.value === "" && !required.has(name)) continue;
      else if (property.type === "number" || property.type === "integer") content[name] = Number(input.value);
      else content[name] = input.value;
    }
    return content;
  };
}
