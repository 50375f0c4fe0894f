// The chat page (SPEC §9): sign-in, the conversation list, the transcript of the conversation
// shown, and the composer. The credential lives in this tab's sessionStorage only: never in
// localStorage, a cookie or the URL.

import { getJson, ApiError } from "./api.js";
import { Connection } from "./connection.js";
import { element } from "./dom.js";
import { Requests } from "./requests.js";
import { RequestView, historyViews } from "./transcript.js";

const CREDENTIAL_KEY = "mcp-platform.credential";
const $ = (id) => document.getElementById(id);

const ui = {
  status: $("status"),
  error: $("error"),
  signin: $("signin"),
  credential: $("credential"),
  signout: $("signout"),
  sidebar: $("sidebar"),
  toggleSidebar: $("toggle-sidebar"),
  conversations: $("conversations"),
  newConversation: $("new-conversation"),
  transcripts: $("transcripts"),
  composer: $("composer"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
};

const state = {
  credential: sessionStorage.getItem(CREDENTIAL_KEY),
  /** The conversation shown; a new one gets its id here, before its first message. */
  conversationId: null,
  /** conversation id -> its transcript element, kept so running answers go on in the background. */
  transcripts: new Map(),
  /** conversation id -> the first question asked in it, as its title. */
  titles: new Map(),
  /** request id -> conversation id, for the Stop button of the conversation shown. */
  requestConversation: new Map(),
  /** The last answer of GET /api/conversations. */
  listed: [],
};

const connection = new Connection({
  onOpen: () => {
    showError(null);
    requests.resumeAll();
  },
  onMessage: (message) => requests.handle(message),
  onState: showConnectionState,
  whyNotOpened: async () => {
    try {
      await getJson("/api/conversations", state.credential);
      return null;
    } catch (error) {
      return error instanceof ApiError && (error.status === 401 || error.status === 403) ? error.message : null;
    }
  },
});
const requests = new Requests(connection, updateButtons);

function send(frame) {
  if (!connection.send(frame)) showError("not connected: wait for the connection to come back, then answer again");
}

function showConnectionState(connectionState, detail) {
  ui.status.dataset.state = connectionState;
  ui.status.textContent = {
    connecting: "connecting…",
    open: "connected",
    waiting: `connection lost; retrying in ${detail} s`,
    refused: "not connected",
  }[connectionState];
  if (connectionState === "refused") showError(detail);
}

function showError(text) {
  ui.error.hidden = !text;
  ui.error.textContent = text ?? "";
}

function newConversationId() {
  return `c-${requests.newId().slice(4)}`;
}

function transcriptOf(conversationId) {
  let transcript = state.transcripts.get(conversationId);
  if (!transcript) {
    transcript = element("section", "transcript");
    transcript.dataset.conversationId = conversationId;
    transcript.setAttribute("aria-live", "polite");
    state.transcripts.set(conversationId, transcript);
  }
  return transcript;
}

async function showConversation(conversationId, { fromStore }) {
  state.conversationId = conversationId;
  const known = state.transcripts.has(conversationId);
  const transcript = transcriptOf(conversationId);
  ui.transcripts.replaceChildren(transcript);
  closeSidebarOnPhone();
  markCurrent();
  updateButtons();
  if (fromStore && !known) {
    transcript.dataset.loading = "true";
    try {
      const body = await getJson(`/api/conversations/${encodeURIComponent(conversationId)}`, state.credential);
      const views = historyViews(body.events ?? [], send);
      transcript.prepend(...views.map((view) => view.root));
      const first = (body.events ?? []).find((event) => event.type === "user_message");
      if (first) state.titles.set(conversationId, first.content);
      renderConversationList(state.listed);
    } catch (error) {
      transcript.prepend(element("p", "notice", `could not load this conversation: ${error.message}`));
    } finally {
      delete transcript.dataset.loading;
    }
  }
  ui.input.focus();
}

async function loadConversations() {
  try {
    const body = await getJson("/api/conversations", state.credential);
    renderConversationList(body.conversations ?? []);
  } catch (error) {
    showError(`could not list conversations: ${error.message}`);
  }
}

function renderConversationList(conversations) {
  state.listed = conversations;
  const listed = [...conversations].sort((a, b) => b.last_timestamp.localeCompare(a.last_timestamp));
  if (state.conversationId && !listed.some((c) => c.conversation_id === state.conversationId) && state.titles.has(state.conversationId)) {
    listed.unshift({ conversation_id: state.conversationId, last_timestamp: new Date().toISOString() });
  }
  ui.conversations.replaceChildren(
    ...listed.map((conversation) => {
      const id = conversation.conversation_id;
      const item = element("li");
      const open = element("button", "conversation", state.titles.get(id) ?? `Conversation ${id.slice(0, 8)}`);
      open.type = "button";
      open.dataset.conversationId = id;
      open.title = `last message ${new Date(conversation.last_timestamp).toLocaleString()}`;
      open.addEventListener("click", () => showConversation(id, { fromStore: true }));
      item.append(open);
      return item;
    }),
  );
  markCurrent();
}

function markCurrent() {
  for (const button of ui.conversations.querySelectorAll("button")) {
    button.toggleAttribute("aria-current", button.dataset.conversationId === state.conversationId);
  }
}

function submit() {
  const text = ui.input.value.trim();
  if (!text) return;
  ui.input.value = "";
  const conversationId = state.conversationId;
  const view = new RequestView(requests.newId(), text, send);
  transcriptOf(conversationId).append(view.root);
  view.root.scrollIntoView({ block: "end" });
  if (!state.titles.has(conversationId)) {
    state.titles.set(conversationId, text);
    renderConversationList(state.listed);
  }
  state.requestConversation.set(view.requestId, conversationId);
  requests.chat(view, { text, conversation_id: conversationId });
}

function stopShown() {
  for (const [requestId, conversationId] of state.requestConversation) {
    if (conversationId === state.conversationId && requests.isRunning(requestId)) requests.cancel(requestId);
  }
}

function updateButtons() {
  let running = false;
  for (const [requestId, conversationId] of state.requestConversation) {
    if (!requests.isRunning(requestId)) {
      state.requestConversation.delete(requestId);
      // A finished request may have started a conversation the list does not have yet.
      loadConversations();
    } else if (conversationId === state.conversationId) {
      running = true;
    }
  }
  ui.stop.hidden = !running;
}

function closeSidebarOnPhone() {
  document.body.classList.remove("sidebar-open");
  ui.toggleSidebar.setAttribute("aria-expanded", "false");
}

function showSignedIn() {
  ui.signout.hidden = !state.credential;
  ui.credential.hidden = Boolean(state.credential);
  $("signin-button").hidden = Boolean(state.credential);
}

ui.signin.addEventListener("submit", (event) => {
  event.preventDefault();
  const credential = ui.credential.value.trim();
  if (!credential) return;
  ui.credential.value = "";
  sessionStorage.setItem(CREDENTIAL_KEY, credential);
  state.credential = credential;
  showSignedIn();
  showError(null);
  connection.start(credential);
  loadConversations();
});

ui.signout.addEventListener("click", () => {
  sessionStorage.removeItem(CREDENTIAL_KEY);
  state.credential = null;
  showSignedIn();
  connection.start(null);
  loadConversations();
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});

ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submit();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") stopShown();
});

ui.stop.addEventListener("click", stopShown);
ui.newConversation.addEventListener("click", () => showConversation(newConversationId(), { fromStore: false }));
ui.toggleSidebar.addEventListener("click", () => {
  const open = document.body.classList.toggle("sidebar-open");
  ui.toggleSidebar.setAttribute("aria-expanded", String(open));
});

showSignedIn();
showConversation(newConversationId(), { fromStore: false });
connection.start(state.credential);
loadConversations();
ui.input.disabled = false;
ui.send.disabled = false;
ui.input.focus();
performance.mark("input-ready");
