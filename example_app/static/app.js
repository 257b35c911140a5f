// The example app's page. It keeps nothing itself: every conversation, message and
// rating comes from the server (agentsession's HTTP API under /api/v1, and the
// stand-in agent's route), so a reload or a server restart shows the same thing.
"use strict";

const API = "/api/v1";
const PAGE_SIZE = 100;
// A reply still pending after this long was interrupted (the server stopped mid-reply).
const PENDING_TIMEOUT_MS = 60_000;

/** An error answered by the server, or a server that could not be reached (status 0). */
class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** One HTTP call; resolves to the JSON body (null for 204), rejects with an ApiError. */
async function call(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "unreachable", "The server could not be reached. Is it running?");
  }
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const error = payload && payload.error;
    throw new ApiError(
      response.status,
      (error && error.code) || "http_error",
      (error && error.message) || `${response.status} ${response.statusText}`.trim(),
      error && error.field,
    );
  }
  return payload;
}

/** Every item of a paged list, following meta.nextCursor to the end. */
async function everything(path) {
  const items = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor) query.set("cursor", cursor);
    const separator = path.includes("?") ? "&" : "?";
    const page = await call("GET", `${path}${separator}${query}`);
    items.push(...page.data);
    cursor = page.meta.nextCursor;
  } while (cursor);
  return items;
}

const state = {
  conversations: [],
  currentId: null,
  tasks: [],
  ratings: new Map(), // taskId -> "up" | "down"
  pendingReload: null,
};

const $ = (id) => document.getElementById(id);

/** An icon from the page's SVG sprites (no emoji: not every machine has their font). */
function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "svg-icon");
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS("http://www.w3.org/2000/svg", "use");
  use.setAttribute("href", `#icon-${name}`);
  svg.append(use);
  return svg;
}

/** A button that shows an icon, named by ``label`` for screen readers and tooltips. */
function iconButton(className, iconName, label) {
  const button = element("button", className);
  button.type = "button";
  button.title = label;
  button.setAttribute("aria-label", label);
  button.append(icon(iconName));
  return button;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // never innerHTML: messages are text
  return node;
}

// Errors: shown until dismissed or until the next action succeeds.

function showError(error) {
  const where = error.field ? ` (${error.field})` : "";
  const status = error.status ? `Error ${error.status}: ` : "";
  $("error-text").textContent = `${status}${error.message}${where}`;
  $("error").dataset.code = error.code || "error";
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

/** Run an action; any failure is shown to the user, never swallowed. */
async function attempt(action) {
  clearError();
  try {
    await action();
    return true;
  } catch (error) {
    if (!(error instanceof ApiError)) console.error(error);
    showError(error instanceof ApiError ? error : new ApiError(0, "bug", String(error)));
    if (error.status === 404) {
      // Deleted elsewhere (another tab, another device): show what is there now.
      await loadEverything().catch(() => {});
    }
    return false;
  }
}

// Loading from the server.

async function loadConversations() {
  state.conversations = await everything(`${API}/sessions`);
  render(); // the title is the current conversation's name, which the list holds
}

/** Who this browser is and its current conversation, then the list and that history. */
async function loadEverything() {
  // Alone first: on a first visit this response sets the cookie (the client id) that the
  // other calls then carry; sent alongside it, each would be given a client id of its own.
  const current = await call("GET", `${API}/session/current`);
  $("client-id").textContent = current.clientId;
  state.currentId = current.sessionId;
  await Promise.all([loadConversations(), openCurrent()]);
}

async function openCurrent() {
  try {
    await loadHistory();
  } catch (error) {
    if (error.status !== 404) throw error;
    // Deleted on another device of the same user: start from no conversation.
    await call("PUT", `${API}/session/current`, { sessionId: null });
    state.currentId = null;
    await loadHistory();
  }
}

async function loadHistory() {
  clearTimeout(state.pendingReload);
  const id = state.currentId;
  if (!id) {
    state.tasks = [];
    state.ratings = new Map();
  } else {
    const encoded = encodeURIComponent(id);
    const [tasks, feedback] = await Promise.all([
      everything(`${API}/sessions/${encoded}/chat-tasks`),
      everything(`${API}/feedback?sessionId=${encoded}`),
    ]);
    if (state.currentId !== id) return; // switched away meanwhile
    state.tasks = tasks;
    state.ratings = new Map(feedback.map((item) => [item.taskId, item.feedbackType]));
  }
  render();
  // A reply that was on its way when the page loaded: look again shortly.
  if (state.tasks.some((task) => isPending(task) && !isInterrupted(task))) {
    state.pendingReload = setTimeout(() => attempt(loadHistory), 1000);
  }
}

// Actions.

async function newConversation(name) {
  const created = await call("POST", `${API}/sessions`, name ? { name } : {});
  state.conversations.unshift(created);
  state.currentId = created.id; // POST /sessions makes it the current one
  state.tasks = [];
  state.ratings = new Map();
  render();
  return created;
}

async function switchTo(id) {
  if (id === state.currentId) return;
  await call("PUT", `${API}/session/current`, { sessionId: id });
  state.currentId = id;
  await loadHistory();
}

async function rename(id, name) {
  const renamed = await call("PATCH", `${API}/sessions/${encodeURIComponent(id)}`, { name });
  replaceConversation(renamed);
}

async function remove(id) {
  await call("DELETE", `${API}/sessions/${encodeURIComponent(id)}`);
  state.conversations = state.conversations.filter((item) => item.id !== id);
  if (state.currentId === id) {
    state.currentId = null; // the server forgot it too
    state.tasks = [];
  }
  render();
}

async function send(text) {
  let conversation = currentConversation();
  if (!conversation) {
    conversation = await newConversation(titleFrom(text));
  } else if (!conversation.name) {
    await rename(conversation.id, titleFrom(text));
  }
  const sessionId = conversation.id;
  const draft = { taskId: null, userMessage: text, messageBubbles: [], taskMetadata: { status: "pending" }, createdTime: Date.now() };
  state.tasks.push(draft);
  render();
  let task = null;
  try {
    task = await call("POST", `/agent/sessions/${encodeURIComponent(sessionId)}/messages`, { message: text });
  } finally {
    // The reply takes the draft's place; a failed message's draft goes. (Not there any
    // more if the user switched conversations meanwhile.)
    const index = state.tasks.indexOf(draft);
    if (index >= 0) state.tasks.splice(index, 1, ...(task ? [task] : []));
    render();
  }
}

async function rate(task, feedbackType) {
  await call("POST", `${API}/feedback`, { taskId: task.taskId, sessionId: task.sessionId, feedbackType });
  state.ratings.set(task.taskId, feedbackType);
  render();
}

// Helpers.

function currentConversation() {
  return state.conversations.find((item) => item.id === state.currentId) || null;
}

function replaceConversation(conversation) {
  state.conversations = state.conversations.map((item) => (item.id === conversation.id ? conversation : item));
  render();
}

function titleFrom(text) {
  const line = text.trim().split("\n")[0];
  return line.length > 60 ? `${line.slice(0, 57)}…` : line;
}

function isPending(task) {
  return Boolean(task.taskMetadata && task.taskMetadata.status === "pending");
}

function isInterrupted(task) {
  return isPending(task) && task.taskId !== null && Date.now() - task.createdTime > PENDING_TIMEOUT_MS;
}

// Rendering: the whole view from `state`, every time.

function render() {
  renderSidebar();
  renderMessages();
}

function renderSidebar() {
  const list = $("conversations");
  if (list.querySelector(".rename-input")) return; // don't interrupt a rename
  list.replaceChildren(...state.conversations.map(conversationItem));
  $("no-conversations").hidden = state.conversations.length > 0;
}

function conversationItem(conversation) {
  const item = element("li", "conversation");
  item.dataset.id = conversation.id;
  if (conversation.id === state.currentId) item.setAttribute("aria-current", "true");
  const open = element("button", "open", conversation.name || "New conversation");
  open.type = "button";
  if (!conversation.name) open.classList.add("untitled");
  open.addEventListener("click", () => attempt(() => switchTo(conversation.id)));
  const renameButton = iconButton("icon rename", "rename", "Rename");
  renameButton.addEventListener("click", () => startRename(item, conversation));
  const deleteButton = iconButton("icon delete", "delete", "Delete");
  deleteButton.addEventListener("click", () => {
    const name = conversation.name || "this conversation";
    if (!window.confirm(`Delete “${name}” and all its messages?`)) return;
    attempt(() => remove(conversation.id));
  });
  item.append(open, renameButton, deleteButton);
  return item;
}

function startRename(item, conversation) {
  const input = element("input", "rename-input");
  input.value = conversation.name || "";
  input.maxLength = 255;
  input.setAttribute("aria-label", "New name");
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    input.remove(); // lets the sidebar render again
    const name = input.value.trim();
    if (save && name !== (conversation.name || "")) {
      await attempt(() => rename(conversation.id, name || null));
    }
    renderSidebar();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  item.replaceChildren(input);
  input.focus();
  input.select();
}

function renderMessages() {
  const conversation = currentConversation();
  $("conversation-title").textContent = conversation
    ? conversation.name || "New conversation"
    : "agentsession example";
  document.title = conversation && conversation.name ? `${conversation.name} · agentsession` : "agentsession example";
  const list = $("messages");
  list.replaceChildren(...state.tasks.map(turn));
  $("empty").hidden = state.tasks.length > 0;
  $("empty").textContent = conversation
    ? "No messages yet. Say hello to the agent."
    : "Type a message below to start a conversation.";
  const scroller = list.parentElement;
  scroller.scrollTop = scroller.scrollHeight;
}

function turn(task) {
  const item = element("li", "turn");
  if (task.taskId) item.dataset.taskId = task.taskId;
  if (task.userMessage) item.append(element("div", "bubble user", task.userMessage));
  if (isPending(task)) {
    const text = isInterrupted(task) ? "No reply: the agent was interrupted." : "The agent is typing…";
    item.append(element("div", "bubble agent pending", text));
    return item;
  }
  const reply = element("div", "bubble agent");
  const bubbles = Array.isArray(task.messageBubbles) ? task.messageBubbles : [];
  reply.append(element("div", "reply-text", bubbles.map(bubbleText).join("\n\n")));
  reply.append(feedbackButtons(task));
  item.append(reply);
  return item;
}

function bubbleText(bubble) {
  if (typeof bubble === "string") return bubble;
  if (bubble && typeof bubble.text === "string") return bubble.text;
  return JSON.stringify(bubble);
}

function feedbackButtons(task) {
  const box = element("div", "feedback");
  for (const [type, label] of [["up", "Good reply"], ["down", "Bad reply"]]) {
    const button = iconButton(`thumb ${type}`, type, label);
    button.setAttribute("aria-pressed", String(state.ratings.get(task.taskId) === type));
    button.addEventListener("click", () => attempt(() => rate(task, type)));
    box.append(button);
  }
  return box;
}

// Wiring.

function submit() {
  const box = $("message");
  const text = box.value;
  if (!text.trim()) return;
  box.value = "";
  attempt(() => send(text)).then((ok) => {
    if (!ok && !box.value) box.value = text; // a failed message is kept to send again
  });
}

// The account: every session of this user ends (copies of the cookie too); or the
// user's data goes, and every session with it. Either way the page starts afresh.

async function logoutEverywhere() {
  await call("POST", `${API}/session/logout`, { everywhere: true });
  await loadEverything();
}

async function deleteMyData() {
  await call("DELETE", `${API}/me`);
  await loadEverything();
}

document.addEventListener("DOMContentLoaded", () => {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  $("new-conversation").addEventListener("click", () => attempt(async () => {
    await newConversation();
    $("message").focus();
  }));
  $("error-dismiss").addEventListener("click", clearError);
  $("logout-everywhere").addEventListener("click", () => attempt(logoutEverywhere));
  $("delete-data").addEventListener("click", () => {
    if (window.confirm("Delete every conversation, message and rating of yours?")) {
      attempt(deleteMyData);
    }
  });
  attempt(loadEverything).then(() => $("message").focus());
});
