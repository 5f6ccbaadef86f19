// The ragtune web UI: plain DOM code, no build step. Text from the server (answers, documents,
// reports) is only ever inserted with textContent / text nodes, never parsed as HTML; HTML
// reports go into a sandboxed iframe that runs no scripts. The API key lives in sessionStorage
// (this tab, until it closes).
"use strict";

const KEY_NAME = "ragtune-api-key";
const CHAT_MODEL = "ragtune-rag";
const $ = (id) => document.getElementById(id);
let history = [];        // chat turns sent with the next question
let turnCount = 0;
let documentsOffset = 0;

// el("a", {className: "x", href: "#"}, "text", childNode): children are text or nodes, never HTML.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function setStatus(id, text, isError = false) {
  const box = $(id);
  box.textContent = text;
  box.classList.toggle("error", isError);
}

function apiKey() { return sessionStorage.getItem(KEY_NAME) || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, {Authorization: "Bearer " + apiKey()});
  const response = await fetch(path, Object.assign({}, options, {headers}));
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message || message; } catch (e) { /* not JSON */ }
    if (response.status === 401) showKeyState(false, message);
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

// --- the key ------------------------------------------------------------------------------------
function showKeyState(ok, message) {
  $("key-state").textContent = message;
  $("key-state").className = ok ? "ok" : "error";
  $("key-forget").hidden = !apiKey();
  $("key-form").hidden = ok;
}

async function checkKey() {
  if (!apiKey()) { showKeyState(false, "Enter an API key (ragtune keys create)."); return; }
  try {
    await api("/v1/models");
    showKeyState(true, "Key accepted (kept for this tab only).");
  } catch (e) { /* showKeyState already called on 401 */ if (e.status !== 401) showKeyState(false, e.message); }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_NAME, $("key-input").value.trim());
  $("key-input").value = "";
  checkKey();
});
$("key-forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_NAME);
  showKeyState(false, "Key forgotten.");
});

// --- tabs ---------------------------------------------------------------------------------------
for (const button of document.querySelectorAll("#tabs button")) {
  button.addEventListener("click", () => {
    for (const other of document.querySelectorAll("#tabs button")) other.classList.toggle("active", other === button);
    for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== "tab-" + button.dataset.tab;
    if (button.dataset.tab === "documents") loadDocuments(true);
    if (button.dataset.tab === "reports") loadReports();
  });
}

// --- ask ----------------------------------------------------------------------------------------
// Text with [n] markers as text nodes and links to the sources of this turn.
function answerNodes(text, turn) {
  const out = [];
  const marker = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
  let last = 0, match;
  while ((match = marker.exec(text)) !== null) {
    out.push(document.createTextNode(text.slice(last, match.index)));
    const numbers = match[1].split(",").map((n) => n.trim());
    out.push(el("sup", {}, "[", ...numbers.flatMap((n, i) => [
      ...(i ? [", "] : []),
      el("a", {className: "cite", href: "#src-" + turn + "-" + n, "data-n": n}, n)]), "]"));
    last = match.index + match[0].length;
  }
  out.push(document.createTextNode(text.slice(last)));
  return out;
}

// The source text with the quoted span marked (found exactly, else ignoring case and spacing).
function highlighted(text, quote) {
  const box = el("p", {className: "source-text"});
  let start = -1, length = 0;
  if (quote) {
    start = text.indexOf(quote);
    length = quote.length;
    if (start < 0) {
      const words = quote.trim().split(/\s+/).map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
      const found = new RegExp(words.join("\\s+"), "i").exec(text);
      if (found) { start = found.index; length = found[0].length; }
    }
  }
  if (start < 0) { box.textContent = text; return box; }
  box.append(text.slice(0, start), el("mark", {className: "quote"}, text.slice(start, start + length)),
             text.slice(start + length));
  return box;
}

function sourceList(extra, turn) {
  const quotes = new Map(extra.citations.map((c) => [c.number, c.quote]));
  const list = el("ol", {className: "sources"});
  for (const source of extra.sources) {
    const heading = source.section && source.title && source.section.startsWith(source.title) ? source.section
      : [source.title, source.section].filter(Boolean).join(" › ");
    const where = [heading, source.page ? "page " + source.page : null].filter(Boolean).join(" › ");
    list.append(el("li", {id: "src-" + turn + "-" + source.number, className: "source" + (source.cited ? " cited" : ""),
                          "data-document-id": source.document_id, "data-chunk-id": source.chunk_id},
      el("div", {className: "source-head"}, "[" + source.number + "] ", el("strong", {}, where || source.document_id),
         " ", el("span", {className: "muted"}, source.document_id + " · score " + source.score.toFixed(3))),
      highlighted(source.text, quotes.get(source.number))));
  }
  return list;
}

function renderTurn(turn, question) {
  const answer = el("div", {className: "answer"});
  const block = el("article", {className: "turn", id: "turn-" + turn},
                   el("p", {className: "question"}, question), answer, el("div", {className: "turn-sources"}));
  $("conversation").prepend(block);
  return block;
}

function finishTurn(block, turn, text, extra) {
  const answer = block.querySelector(".answer");
  answer.replaceChildren(...answerNodes(text, turn));
  if (extra.abstained) answer.classList.add("abstained");
  block.querySelector(".turn-sources").replaceChildren(
    extra.sources.length ? el("h3", {}, "Sources") : "", sourceList(extra, turn));
  block.dataset.done = "true";
}

async function streamChat(body, block) {
  const response = await api("/v1/chat/completions", {method: "POST", headers: {"Content-Type": "application/json"},
                                                       body: JSON.stringify(Object.assign({}, body, {stream: true}))});
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", text = "", extra = null;
  const answer = block.querySelector(".answer");
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) { text += choice.delta.content; answer.textContent = text; }
      }
      if (chunk.ragtune) extra = chunk.ragtune;
    }
  }
  if (!extra) throw new Error("the stream ended without its sources");
  return {text, extra};
}

async function ask(question) {
  const turn = ++turnCount;
  const block = renderTurn(turn, question);
  const body = {model: CHAT_MODEL, messages: history.concat([{role: "user", content: question}])};
  setStatus("ask-status", "Thinking…");
  try {
    let text, extra;
    if ($("ask-stream").checked) {
      ({text, extra} = await streamChat(body, block));
    } else {
      const result = await (await api("/v1/chat/completions", {method: "POST", headers: {"Content-Type": "application/json"},
                                                               body: JSON.stringify(body)})).json();
      text = result.choices[0].message.content;
      extra = result.ragtune;
    }
    // The checked answer (invalid citations removed) replaces what was streamed.
    finishTurn(block, turn, extra.text || text, extra);
    history.push({role: "user", content: question}, {role: "assistant", content: text});
    history = history.slice(-8);
    setStatus("ask-status", extra.abstained ? "No answer in the sources." : "");
  } catch (e) {
    block.remove();
    setStatus("ask-status", e.message, true);
  }
}

$("ask-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("ask-question").value.trim();
  if (question) ask(question);
});
$("ask-reset").addEventListener("click", () => {
  history = [];
  $("conversation").replaceChildren();
  setStatus("ask-status", "New conversation.");
});
$("conversation").addEventListener("click", (event) => {
  const link = event.target.closest("a.cite");
  if (!link) return;
  event.preventDefault();
  const target = document.querySelector(link.getAttribute("href"));
  if (!target) return;
  for (const other of document.querySelectorAll(".source.active")) other.classList.remove("active");
  target.classList.add("active");
  target.scrollIntoView({block: "nearest"});
});

// --- search -------------------------------------------------------------------------------------
$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {query: $("search-query").value, k: Number($("search-k").value) || 10};
  if ($("search-mode").value) body.mode = $("search-mode").value;
  setStatus("search-status", "Searching…");
  try {
    const result = await (await api("/search", {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify(body)})).json();
    $("search-results").replaceChildren(...result.hits.map((hit) => el("li", {className: "hit", "data-document-id": hit.document_id},
      el("div", {className: "source-head"}, el("strong", {}, hit.document_id),
         hit.section ? " › " + hit.section : "", " ", el("span", {className: "muted"}, "score " + hit.score.toFixed(4))),
      el("p", {className: "hit-text"}, hit.text))));
    setStatus("search-status", result.hits.length + " hits (" + result.mode + ")");
  } catch (e) { setStatus("search-status", e.message, true); }
});

// --- documents ----------------------------------------------------------------------------------
async function loadDocuments(reset) {
  if (reset) { documentsOffset = 0; $("documents-table").tBodies[0].replaceChildren(); }
  try {
    const result = await (await api("/documents?limit=100&offset=" + documentsOffset)).json();
    for (const doc of result.documents) {
      const view = el("button", {type: "button"}, "View");
      view.addEventListener("click", () => showDocument(doc.id));
      const remove = el("button", {type: "button", className: "danger"}, "Delete");
      remove.addEventListener("click", () => deleteDocument(doc.id));
      $("documents-table").tBodies[0].append(el("tr", {"data-document-id": doc.id},
        el("td", {}, doc.id), el("td", {}, doc.title || ""), el("td", {}, doc.groups.join(", ") || "everyone"),
        el("td", {}, doc.chunk_count), el("td", {}, view, " ", remove)));
    }
    documentsOffset = result.next_offset || documentsOffset;
    $("documents-more").hidden = result.next_offset === null;
    setStatus("documents-status", $("documents-table").tBodies[0].rows.length + " documents shown");
  } catch (e) { setStatus("documents-status", e.message, true); }
}

async function showDocument(id) {
  try {
    const doc = await (await api("/documents/" + encodeURIComponent(id))).json();
    $("document-view").replaceChildren(el("h3", {}, doc.title || doc.id),
      el("p", {className: "muted"}, doc.id + " · " + doc.chunk_count + " chunks"),
      ...doc.chunks.map((chunk) => el("pre", {className: "chunk"}, chunk.text)));
  } catch (e) { setStatus("documents-status", e.message, true); }
}

async function deleteDocument(id) {
  if (!window.confirm("Delete " + id + "?")) return;
  try {
    await api("/documents/" + encodeURIComponent(id), {method: "DELETE"});
    setStatus("documents-status", "Deleted " + id);
    loadDocuments(true);
  } catch (e) { setStatus("documents-status", e.message, true); }
}

function reportWritten(result) {
  const written = result.documents.map((d) => d.id + " (" + d.status + ")").join(", ");
  setStatus("documents-status", "Indexed: " + written + (result.skipped.length ? "; skipped: " + result.skipped.join("; ") : ""));
  loadDocuments(true);
}

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  for (const file of $("upload-files").files) form.append("files", file);
  if ($("upload-groups").value.trim()) form.append("groups", $("upload-groups").value.trim());
  setStatus("documents-status", "Uploading…");
  try {
    reportWritten(await (await api("/documents", {method: "POST", body: form})).json());
    $("upload-files").value = "";
  } catch (e) { setStatus("documents-status", e.message, true); }
});

$("text-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const doc = {id: $("text-id").value.trim(), text: $("text-body").value};
  if ($("text-title").value.trim()) doc.title = $("text-title").value.trim();
  try {
    reportWritten(await (await api("/documents", {method: "POST", headers: {"Content-Type": "application/json"},
                                                  body: JSON.stringify({documents: [doc]})})).json());
  } catch (e) { setStatus("documents-status", e.message, true); }
});
$("documents-more").addEventListener("click", () => loadDocuments(false));

// --- reports ------------------------------------------------------------------------------------
async function loadReports() {
  $("reports-list").replaceChildren();
  $("report-view").replaceChildren();
  try {
    const result = await (await api("/reports")).json();
    for (const report of result.reports) {
      const open = el("a", {href: "#"}, report.id);
      open.addEventListener("click", (event) => { event.preventDefault(); showReport(report); });
      $("reports-list").append(el("li", {}, open, " ", el("span", {className: "muted"}, report.format)));
    }
    setStatus("reports-status", result.reports.length + " reports");
  } catch (e) { setStatus("reports-status", e.message, e.status !== 404); }
}

async function showReport(report) {
  try {
    const response = await api("/reports/" + encodeURIComponent(report.id));
    if (report.format === "html") {
      // sandbox="" : no scripts, no same-origin access, no forms; the HTML is only displayed.
      const frame = el("iframe", {className: "report", title: report.id});
      frame.setAttribute("sandbox", "");
      frame.srcdoc = await response.text();
      $("report-view").replaceChildren(frame);
    } else {
      $("report-view").replaceChildren(el("pre", {}, JSON.stringify(await response.json(), null, 2)));
    }
  } catch (e) { setStatus("reports-status", e.message, true); }
}

checkKey();
