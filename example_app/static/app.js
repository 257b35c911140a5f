// The example app's page. It keeps nothing itself: every conversation, message and
// rating comes from the server (agentsession's HTTP API under /api/v1, and the
// stand-in agent's route), so a reload or a server restart shows the same thing.
"use strict";

const API = "/api/v1";
const PAGE_SIZE = 100;
// Search as the user types, once they pause this long (milliseconds).
const SEARCH_DELAY_MS = 250;
const SEARCH_PAGE_SIZE = 20;
// A word as the server reads one: letters and digits (agentsession.search.words).
const WORD = /[\p{L}\p{N}]+/gu;
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
  conversations: [], // pinned ones first, each part most recently updated first
  currentId: null,
  tasks: [],
  ratings: new Map(), // taskId -> "up" | "down"
  pendingReload: null,
  found: null, // the search result opened: { taskId, terms, reveal }
  search: { query: "", results: [], cursor: null, timer: null, serial: 0 },
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

/** The sidebar's list: the pinned conversations, then the others. */
async function loadConversations() {
  const [pinned, others] = await Promise.all([
    everything(`${API}/sessions?pinned=true`),
    everything(`${API}/sessions?pinned=false`),
  ]);
  state.conversations = [...pinned, ...others];
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
  state.conversations = sorted([created, ...state.conversations]);
  state.currentId = created.id; // POST /sessions makes it the current one
  state.tasks = [];
  state.ratings = new Map();
  state.found = null;
  render();
  return created;
}

async function switchTo(id) {
  state.found = null;
  if (id === state.currentId) {
    render();
    return;
  }
  await call("PUT", `${API}/session/current`, { sessionId: id });
  state.currentId = id;
  await loadHistory();
}

async function rename(id, name) {
  const renamed = await call("PATCH", `${API}/sessions/${encodeURIComponent(id)}`, { name });
  replaceConversation(renamed);
}

async function setPinned(id, pinned) {
  const changed = await call("PATCH", `${API}/sessions/${encodeURIComponent(id)}`, { pinned });
  replaceConversation(changed);
}

// Search: the user's conversations and messages, as the server finds them.

/** The words of a query, as the server reads them (it is the judge: this only marks). */
function termsOf(text) {
  return (text.match(WORD) || []).map((word) => word.toLowerCase());
}

/** Search once the user pauses typing; an empty box shows the conversations again. */
function scheduleSearch() {
  clearTimeout(state.search.timer);
  const query = $("search").value.trim();
  if (!query) {
    closeSearch();
    return;
  }
  state.search.timer = setTimeout(() => attempt(() => runSearch(query)), SEARCH_DELAY_MS);
}

/** The first page of results for ``query`` (or, with ``more``, the next page). */
async function runSearch(query, more = false) {
  const serial = ++state.search.serial; // an older query's late answer is dropped
  $("search-results").hidden = false;
  $("conversation-list").hidden = true;
  if (termsOf(query).length === 0) {
    showResults(query, [], null, "Type a word (letters or digits) to search for.");
    return;
  }
  const params = new URLSearchParams({ q: query, limit: String(SEARCH_PAGE_SIZE) });
  if (more && state.search.cursor) params.set("cursor", state.search.cursor);
  let page;
  try {
    page = await call("GET", `${API}/search?${params}`);
  } catch (error) {
    if (error.status !== 422 || error.field !== "q") throw error;
    if (serial === state.search.serial) showResults(query, [], null, error.message);
    return;
  }
  if (serial !== state.search.serial) return;
  const results = more ? [...state.search.results, ...page.data] : page.data;
  showResults(query, results, page.meta.nextCursor);
}

function showResults(query, results, cursor, message) {
  Object.assign(state.search, { query, results, cursor });
  $("results").replaceChildren(...results.map((result) => resultItem(result, query)));
  $("more-results").hidden = !cursor;
  const count = results.length === 1 ? "1 result" : `${results.length}${cursor ? "+" : ""} results`;
  $("search-status").textContent = message || (results.length ? count : `Nothing found for “${query}”.`);
}

function closeSearch() {
  clearTimeout(state.search.timer);
  state.search.serial += 1;
  Object.assign(state.search, { query: "", results: [], cursor: null });
  $("results").replaceChildren();
  $("search-results").hidden = true;
  $("conversation-list").hidden = false;
}

/** One result: a button that opens the conversation at the message that matched. */
function resultItem(result, query) {
  const item = element("li", "result");
  const open = element("button", "open-result");
  open.type = "button";
  open.dataset.sessionId = result.sessionId;
  if (result.taskId) open.dataset.taskId = result.taskId;
  const name = result.sessionName || "New conversation";
  if (result.taskId === null) {
    // The name matched: the name, its words marked, is the title.
    open.append(marked("result-title", result.snippet), element("span", "result-kind", "Conversation"));
  } else {
    open.append(element("span", "result-title", name), marked("snippet", result.snippet));
  }
  open.addEventListener("click", () => attempt(() => openResult(result, query)));
  item.append(open);
  return item;
}

/** A span of snippet parts, the matched words as <mark> elements (all of it as text). */
function marked(className, parts) {
  const span = element("span", className);
  span.append(...parts.map((part) => (part.match ? element("mark", "", part.text) : document.createTextNode(part.text))));
  return span;
}

async function openResult(result, query) {
  await switchTo(result.sessionId);
  const { taskId } = result;
  if (taskId && !state.tasks.some((task) => task.taskId === taskId)) {
    await loadHistory(); // the current conversation, since grown on another device
  }
  state.found = taskId ? { taskId, terms: termsOf(query), reveal: true } : null;
  render();
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
  state.found = null;
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
  state.conversations = sorted(state.conversations.map((item) => (item.id === conversation.id ? conversation : item)));
  render();
}

/** The server's order: pinned first, then the most recently updated, then by id. */
function sorted(conversations) {
  return [...conversations].sort(
    (a, b) =>
      Number(b.pinned) - Number(a.pinned) ||
      b.updatedTime - a.updatedTime ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
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
  if (conversation.pinned) item.classList.add("pinned");
  if (conversation.id === state.currentId) item.setAttribute("aria-current", "true");
  const open = element("button", "open", conversation.name || "New conversation");
  open.type = "button";
  if (!conversation.name) open.classList.add("untitled");
  open.addEventListener("click", () => attempt(() => switchTo(conversation.id)));
  const pinButton = iconButton("icon pin", "pin", "Pin");
  pinButton.title = conversation.pinned ? "Unpin" : "Pin to the top";
  pinButton.setAttribute("aria-pressed", String(Boolean(conversation.pinned)));
  pinButton.addEventListener("click", () => attempt(async () => {
    await setPinned(conversation.id, !conversation.pinned);
    // The list was drawn anew: keep the keyboard on this conversation's pin.
    const again = document.querySelector(`.conversation[data-id="${CSS.escape(conversation.id)}"] .pin`);
    if (again) again.focus();
  }));
  const renameButton = iconButton("icon rename", "rename", "Rename");
  renameButton.addEventListener("click", () => startRename(item, conversation));
  const deleteButton = iconButton("icon delete", "delete", "Delete");
  deleteButton.addEventListener("click", () => {
    const name = conversation.name || "this conversation";
    if (!window.confirm(`Delete “${name}” and all its messages?`)) return;
    attempt(() => remove(conversation.id));
  });
  item.append(open, pinButton, renameButton, deleteButton);
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
  const found = state.found && list.querySelector(".turn.found");
  if (found) {
    if (state.found.reveal) {
      // Once, when opened from a search: the message in view, and the keyboard on it.
      state.found.reveal = false;
      found.scrollIntoView({ block: "center" });
      found.focus({ preventScroll: true });
    }
    return; // stay where the user is reading
  }
  const scroller = list.parentElement;
  scroller.scrollTop = scroller.scrollHeight;
}

function turn(task) {
  const item = element("li", "turn");
  if (task.taskId) item.dataset.taskId = task.taskId;
  const terms = state.found && task.taskId === state.found.taskId ? state.found.terms : null;
  if (terms) {
    item.classList.add("found");
    item.tabIndex = -1;
    item.setAttribute("aria-label", "The message found by your search");
  }
  if (task.userMessage) item.append(highlighted("div", "bubble user", task.userMessage, terms));
  if (isPending(task)) {
    const text = isInterrupted(task) ? "No reply: the agent was interrupted." : "The agent is typing…";
    item.append(element("div", "bubble agent pending", text));
    return item;
  }
  const reply = element("div", "bubble agent");
  const bubbles = Array.isArray(task.messageBubbles) ? task.messageBubbles : [];
  reply.append(highlighted("div", "reply-text", bubbles.map(bubbleText).join("\n\n"), terms));
  reply.append(feedbackButtons(task));
  item.append(reply);
  return item;
}

/** ``text`` in an element, the words that start with one of ``terms`` as <mark>s. */
function highlighted(tag, className, text, terms) {
  if (!terms || terms.length === 0) return element(tag, className, text);
  const node = element(tag, className);
  let at = 0;
  for (const match of text.matchAll(WORD)) {
    const word = match[0].toLowerCase();
    if (!terms.some((term) => word.startsWith(term))) continue;
    node.append(document.createTextNode(text.slice(at, match.index)), element("mark", "", match[0]));
    at = match.index + match[0].length;
  }
  node.append(document.createTextNode(text.slice(at)));
  return node;
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

/** Up and Down move between the results (Up from the first goes back to the box). */
function moveAmongResults(event) {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  const buttons = [...$("results").querySelectorAll(".open-result")];
  const index = buttons.indexOf(document.activeElement);
  if (index < 0) return;
  event.preventDefault();
  const next = event.key === "ArrowDown" ? buttons[index + 1] : buttons[index - 1] || $("search");
  if (next) next.focus();
}

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
  $("search").addEventListener("input", scheduleSearch);
  $("search").addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      $("search").value = "";
      closeSearch();
    } else if (event.key === "Enter") {
      event.preventDefault(); // search now, without waiting for the pause
      clearTimeout(state.search.timer);
      const query = $("search").value.trim();
      if (query) attempt(() => runSearch(query));
    } else if (event.key === "ArrowDown") {
      const first = $("results").querySelector(".open-result");
      if (first) {
        event.preventDefault();
        first.focus();
      }
    }
  });
  $("results").addEventListener("keydown", moveAmongResults);
  $("more-results").addEventListener("click", () => attempt(() => runSearch(state.search.query, true)));
  $("logout-everywhere").addEventListener("click", () => attempt(logoutEverywhere));
  $("delete-data").addEventListener("click", () => {
    if (window.confirm("Delete every conversation, message and rating of yours?")) {
      attempt(deleteMyData);
    }
  });
  attempt(loadEverything).then(() => $("message").focus());
});
