// The chat page: conversations (list, open, new, rename, delete), the question form
// (RAG on/off, filters, image attachments), streamed answers with stop and retry.

import { answerView } from "./answer.js";
import { ApiError, api, streamAsk } from "./api.js";
import { closeCitation } from "./citations.js";
import { $, announce, clear, errorBox, h, icon, openDialog, toast } from "./dom.js";
import { errorMessage, formatDateTime } from "./i18n.js";

const MAX_IMAGES = 2;
const MAX_IMAGE_BYTES = 10 * 1024 * 1024;

const state = {
  sessionId: null,
  busy: false,
  controller: null,
  images: [], // [{name, dataUrl}]
  documentsLoaded: false,
};

let els = null;

function elements() {
  return {
    list: $("#session-list"),
    messages: $("#messages"),
    form: $("#composer"),
    question: $("#question"),
    send: $("#send"),
    stop: $("#stop"),
    rag: $("#rag"),
    filters: $("#filters"),
    dateFrom: $("#f-date-from"),
    dateTo: $("#f-date-to"),
    docs: $("#f-docs"),
    meta: $("#f-meta"),
    imageInput: $("#image-input"),
    imageList: $("#image-list"),
    formError: $("#composer-error"),
    title: $("#chat-title"),
  };
}

function setBusy(busy) {
  state.busy = busy;
  els.send.hidden = busy;
  els.stop.hidden = !busy;
  els.form.setAttribute("aria-busy", String(busy));
  if (!busy && document.activeElement === document.body) els.question.focus();
}

function scrollToEnd() {
  const box = els.messages;
  const near = box.scrollHeight - box.scrollTop - box.clientHeight < 160;
  if (near) box.scrollTop = box.scrollHeight;
}

function userBubble(text, images) {
  return h(
    "article",
    { class: "msg msg-user", "aria-label": "질문" },
    h("div", { class: "msg-main" }, h("p", { class: "msg-text" }, text), images && images.length ? h("p", { class: "hint" }, `이미지 ${images.length}개 첨부`) : null),
  );
}

function emptyState() {
  return h(
    "div",
    { class: "empty" },
    h("h2", null, "무엇을 도와드릴까요?"),
    h("p", null, "사내 문서에서 찾아 출처와 함께 답합니다. 답변의 번호를 누르면 인용한 본문을 볼 수 있습니다."),
  );
}

function parseMetadata(text) {
  const out = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`메타데이터는 한 줄에 하나씩 "키=값"으로 적어 주세요: ${line}`);
    out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

function filters() {
  const out = {};
  if (els.dateFrom.value) out.date_from = els.dateFrom.value;
  if (els.dateTo.value) out.date_to = els.dateTo.value;
  if (els.dateFrom.value && els.dateTo.value && els.dateFrom.value > els.dateTo.value) {
    throw new Error("시작 날짜가 끝 날짜보다 늦습니다.");
  }
  const ids = [...els.docs.selectedOptions].map((option) => option.value).filter(Boolean);
  if (ids.length) out.document_ids = ids;
  const meta = parseMetadata(els.meta.value);
  if (Object.keys(meta).length) out.metadata = meta;
  return Object.keys(out).length ? out : null;
}

function showFormError(message) {
  els.formError.textContent = message || "";
  els.formError.hidden = !message;
}

/** Ask `question` (a retry re-asks a question already shown). */
async function ask(question, { retry = false } = {}) {
  if (state.busy) return;
  const text = question.trim();
  if (!text) {
    showFormError("질문을 입력해 주세요.");
    els.question.focus();
    return;
  }
  let body;
  try {
    body = { question: text, rag: els.rag.checked };
    const chosen = filters();
    if (chosen) body.filters = chosen;
  } catch (error) {
    showFormError(error.message);
    return;
  }
  if (state.sessionId) body.session_id = state.sessionId;
  const images = retry ? [] : state.images.slice();
  if (images.length) body.images = images.map((image) => image.dataUrl);
  showFormError("");
  closeCitation();
  $(".empty", els.messages)?.remove();
  els.messages.appendChild(userBubble(text, images));
  const view = answerView({ rag: body.rag, onRetry: () => ask(text, { retry: true }) });
  els.messages.appendChild(view.node);
  scrollToEnd();
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  let accepted = false;
  const accept = () => {
    if (accepted) return;
    accepted = true;
    // The server took the question: the form is emptied only now, so a refused request
    // (an expired sign-in, a bad filter) keeps what was typed.
    if (!retry && els.question.value.trim() === text) els.question.value = "";
    if (images.length) clearImages();
  };
  try {
    await streamAsk(body, {
      signal: controller.signal,
      onEvent(name, data, arrivedAt) {
        accept();
        if (name === "references") view.references(data);
        else if (name === "delta") view.delta(typeof data.text === "string" ? data.text : "", arrivedAt);
        else if (name === "done") {
          view.done(data);
          if (data.session_id && data.session_id !== state.sessionId) {
            state.sessionId = data.session_id;
          }
          announce("답변이 완성되었습니다.");
          loadSessions();
        } else if (name === "error") {
          view.fail(new ApiError(200, data.code, data.message));
          announce("답변 중 오류가 발생했습니다.");
        }
      },
      onChunk() {
        view.flush();
        scrollToEnd();
      },
    });
  } catch (error) {
    if (error && error.name === "AbortError") {
      view.stop();
      announce("답변 생성을 중지했습니다.");
    } else {
      view.fail(error instanceof ApiError ? error : new ApiError(0, "network", String(error)));
      announce(error.message || errorMessage("internal_error"));
    }
  } finally {
    state.controller = null;
    setBusy(false);
    scrollToEnd();
  }
}

function clearImages() {
  state.images = [];
  renderImages();
}

function renderImages() {
  clear(els.imageList);
  state.images.forEach((image, index) => {
    els.imageList.appendChild(
      h(
        "li",
        { class: "chip" },
        h("img", { src: image.dataUrl, alt: "", width: 28, height: 28 }),
        h("span", null, image.name),
        h(
          "button",
          {
            type: "button",
            class: "btn btn-icon btn-small",
            "aria-label": `첨부 이미지 ${image.name} 빼기`,
            onClick: () => {
              state.images.splice(index, 1);
              renderImages();
              els.question.focus();
            },
          },
          icon("close"),
        ),
      ),
    );
  });
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener("load", () => resolve(String(reader.result)));
    reader.addEventListener("error", () => reject(reader.error));
    reader.readAsDataURL(file);
  });
}

async function addImages(files) {
  for (const file of files) {
    if (state.images.length >= MAX_IMAGES) {
      toast(`이미지는 ${MAX_IMAGES}개까지 첨부할 수 있습니다.`, "error");
      break;
    }
    if (!/^image\/(png|jpeg|webp|gif)$/.test(file.type)) {
      toast(`${file.name}: PNG, JPEG, WebP, GIF 이미지만 첨부할 수 있습니다.`, "error");
      continue;
    }
    if (file.size > MAX_IMAGE_BYTES) {
      toast(`${file.name}: 이미지가 너무 큽니다 (10 MB까지).`, "error");
      continue;
    }
    state.images.push({ name: file.name, dataUrl: await readImage(file) });
  }
  renderImages();
}

// ------------------------------------------------------------------ conversations

function sessionItem(item) {
  const current = item.session_id === state.sessionId;
  const title = item.title || "제목 없는 대화";
  return h(
    "li",
    { class: current ? "session current" : "session" },
    h(
      "button",
      {
        type: "button",
        class: "session-open",
        "aria-current": current ? "true" : null,
        onClick: () => openSession(item.session_id, title),
      },
      h("span", { class: "session-title" }, title),
      h("span", { class: "session-date" }, formatDateTime(item.updated_at)),
    ),
    h(
      "span",
      { class: "session-tools" },
      h("button", { type: "button", class: "btn btn-icon btn-small", "aria-label": `"${title}" 이름 바꾸기`, onClick: () => renameSession(item, title) }, "✎"),
      h("button", { type: "button", class: "btn btn-icon btn-small", "aria-label": `"${title}" 삭제`, onClick: () => deleteSession(item, title) }, icon("close")),
    ),
  );
}

export async function loadSessions() {
  try {
    const items = await api.get("/sessions", { limit: 100 });
    clear(els.list);
    if (!items.length) els.list.appendChild(h("li", { class: "hint" }, "아직 대화가 없습니다."));
    for (const item of items) els.list.appendChild(sessionItem(item));
    const current = items.find((item) => item.session_id === state.sessionId);
    if (current) els.title.textContent = current.title || "대화";
  } catch (error) {
    clear(els.list).appendChild(h("li", null, errorBox(error)));
  }
}

async function openSession(sessionId, title) {
  if (state.busy) state.controller?.abort();
  closeCitation();
  document.body.classList.remove("drawer-open");
  state.sessionId = sessionId;
  els.title.textContent = title || "대화";
  clear(els.messages);
  try {
    const messages = await api.get(`/sessions/${encodeURIComponent(sessionId)}/messages`);
    let lastQuestion = "";
    messages.forEach((message, index) => {
      if (message.role === "user") {
        lastQuestion = message.content;
        els.messages.appendChild(userBubble(message.content));
      } else if (message.role === "assistant") {
        const question = lastQuestion;
        const view = answerView({ onRetry: () => ask(question, { retry: true }) });
        view.fromHistory(message, index, sessionId);
        els.messages.appendChild(view.node);
      }
    });
    if (!messages.length) els.messages.appendChild(emptyState());
  } catch (error) {
    els.messages.appendChild(errorBox(error));
  }
  els.messages.scrollTop = els.messages.scrollHeight;
  await loadSessions();
  els.question.focus();
}

export function newChat() {
  if (state.busy) state.controller?.abort();
  closeCitation();
  document.body.classList.remove("drawer-open");
  state.sessionId = null;
  els.title.textContent = "새 대화";
  clear(els.messages).appendChild(emptyState());
  loadSessions();
  els.question.focus();
}

async function renameSession(item, title) {
  const values = await openDialog({
    title: "대화 이름 바꾸기",
    fields: [{ name: "title", label: "새 이름", value: title, required: true }],
    confirmText: "바꾸기",
  });
  if (!values || !values.title.trim()) return;
  try {
    await api.patch(`/sessions/${encodeURIComponent(item.session_id)}`, { title: values.title.trim() });
    toast("이름을 바꿨습니다.");
  } catch (error) {
    toast(error.status === 405 ? errorMessage("route_missing") : error.message, "error");
  }
  loadSessions();
}

async function deleteSession(item, title) {
  const ok = await openDialog({
    title: "대화 삭제",
    body: `"${title}" 대화를 삭제할까요? 되돌릴 수 없습니다.`,
    confirmText: "삭제",
    danger: true,
  });
  if (!ok) return;
  try {
    await api.del(`/sessions/${encodeURIComponent(item.session_id)}`);
    toast("대화를 삭제했습니다.");
    if (item.session_id === state.sessionId) newChat();
    else loadSessions();
  } catch (error) {
    toast(error.message, "error");
  }
}

async function loadDocumentChoices() {
  if (state.documentsLoaded) return;
  state.documentsLoaded = true;
  try {
    const page = await api.get("/documents", { limit: 200 });
    clear(els.docs);
    for (const doc of page.items || []) {
      const name = doc.source ? doc.source.split(/[\\/]/).pop() : "";
      els.docs.appendChild(h("option", { value: doc.document_id }, doc.title && doc.title !== name ? `${doc.title} (${name})` : name || doc.title));
    }
    if (!els.docs.options.length) els.docs.appendChild(h("option", { value: "", disabled: true }, "문서가 없습니다"));
  } catch (error) {
    state.documentsLoaded = false;
    clear(els.docs).appendChild(h("option", { value: "", disabled: true }, error.message));
  }
}

/** Forget everything of the signed-in user (another user signs in). */
export function resetChat() {
  state.sessionId = null;
  state.documentsLoaded = false;
  clearImages();
  if (els) {
    els.question.value = "";
    clear(els.list);
    clear(els.docs);
    newChat();
  }
}

export function setupChat() {
  els = elements();
  els.messages.appendChild(emptyState());
  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    ask(els.question.value);
  });
  els.question.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a new line; never while a Korean syllable is composed.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      ask(els.question.value);
    }
  });
  els.question.addEventListener("input", () => showFormError(""));
  els.stop.addEventListener("click", () => state.controller?.abort());
  $("#new-chat").addEventListener("click", newChat);
  $("#attach").addEventListener("click", () => els.imageInput.click());
  els.imageInput.addEventListener("change", async () => {
    await addImages([...els.imageInput.files]);
    els.imageInput.value = "";
  });
  els.filters.addEventListener("toggle", () => {
    if (els.filters.open) loadDocumentChoices();
  });
  // The filter panel closes on a click elsewhere and on Escape (focus back on its summary).
  document.addEventListener("click", (event) => {
    if (els.filters.open && !els.filters.contains(event.target)) els.filters.open = false;
  });
  els.filters.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && els.filters.open) {
      event.stopPropagation();
      els.filters.open = false;
      els.filters.querySelector("summary").focus();
    }
  });
  $("#f-clear").addEventListener("click", () => {
    els.dateFrom.value = "";
    els.dateTo.value = "";
    els.meta.value = "";
    for (const option of els.docs.options) option.selected = false;
  });
  $("#drawer-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("drawer-open");
    $("#drawer-toggle").setAttribute("aria-expanded", String(open));
    if (open) $("#new-chat").focus();
  });
  setBusy(false);
}

export function focusChat() {
  els?.question.focus();
}
