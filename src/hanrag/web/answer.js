// One answer in the conversation: streamed Markdown with citation buttons, the table
// route's table and chart, plain notices (not found, fallback, stopped, cut), copy,
// retry and feedback.

import { api } from "./api.js";
import { tableChart } from "./charts.js";
import { openCitation } from "./citations.js";
import { copyText, errorBox, h, icon, toast } from "./dom.js";
import { FEEDBACK_REASONS } from "./i18n.js";
import { renderMarkdown } from "./markdown.js";

const PERF = new URLSearchParams(location.search).has("perf");
/** Delta-to-screen measurements (?perf=1): [{arrived, shown}] in performance.now() ms. */
export const perfLog = [];
if (PERF) window.__hanragPerf = perfLog;

function notice(kind, text) {
  return h("p", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "note" }, text);
}

function tableView(table) {
  const wrap = h("section", { class: "answer-table", "aria-label": "표 질의 결과" });
  if (table.title) wrap.appendChild(h("h3", { class: "md-heading" }, table.title));
  const columns = table.columns || [];
  const rows = table.rows || [];
  const head = h("tr", null, columns.map((c) => h("th", { scope: "col" }, String(c))));
  const body = rows.map((row) => h("tr", null, row.map((cell) => h("td", null, cell === null ? "" : String(cell)))));
  wrap.appendChild(h("div", { class: "table-wrap" }, h("table", null, h("thead", null, head), h("tbody", null, body))));
  const count = table.truncated ? `${rows.length}행 (일부만 표시)` : `${rows.length}행`;
  wrap.appendChild(h("p", { class: "hint" }, `${count}${table.source ? ` · 출처: ${table.source}` : ""}`));
  const figure = tableChart(table);
  if (figure) wrap.appendChild(figure);
  if (table.sql) {
    wrap.appendChild(h("details", { class: "sql" }, h("summary", null, "실행한 SQL"), h("pre", null, h("code", null, table.sql))));
  }
  return wrap;
}

/**
 * An answer view. ctx: {sessionId(): string|null, onRetry(): void}.
 * Methods: references(data), delta(text, arrivedAt), flush(arrivedAt), done(data),
 * fail(error, partial), stop(), fromHistory(message, index).
 */
export function answerView(ctx) {
  const state = { text: "", refs: [], table: null, sessionId: null, index: null, rag: ctx.rag !== false };
  const body = h("div", { class: "answer-body" });
  const extras = h("div", { class: "answer-extras" });
  const notices = h("div", { class: "answer-notices" });
  const actions = h("div", { class: "answer-actions", hidden: true });
  const node = h(
    "article",
    { class: "msg msg-ai", "aria-label": "답변", "aria-busy": "true" },
    h("div", { class: "msg-who", "aria-hidden": "true" }, "AI"),
    h("div", { class: "msg-main" }, extras, body, h("p", { class: "typing", "aria-hidden": "true" }, "답변을 준비하고 있습니다…"), notices, actions),
  );
  let pending = [];

  function cite(n) {
    const ref = state.refs.find((r) => r.n === n);
    if (!ref) return h("span", { class: "cite cite-missing", title: "출처 정보 없음" }, `[${n}]`);
    const button = h(
      "button",
      {
        type: "button",
        class: "cite",
        "aria-label": `출처 ${n}: ${ref.title || ref.file_name || ""}`,
        "aria-haspopup": "dialog",
        onClick: (event) => openCitation(ref, state.text, event.currentTarget),
      },
      String(n),
    );
    return button;
  }

  function render() {
    body.replaceChildren(renderMarkdown(state.text, { cite }));
    if (state.text) node.classList.add("has-text");
  }

  function sources() {
    if (!state.refs.length) return null;
    const list = h("ol", { class: "source-list" });
    for (const ref of state.refs) {
      const label = [ref.title || ref.file_name, ref.page ? `${ref.page}쪽` : null, ref.sheet ? `시트 ${ref.sheet}` : null]
        .filter(Boolean)
        .join(" · ");
      list.appendChild(
        h(
          "li",
          { value: ref.n },
          h("button", { type: "button", class: "link", onClick: (e) => openCitation(ref, state.text, e.currentTarget) }, label),
        ),
      );
    }
    return h("details", { class: "sources" }, h("summary", null, `출처 ${state.refs.length}건`), list);
  }

  function finishActions() {
    actions.hidden = false;
    actions.replaceChildren(
      h(
        "button",
        {
          type: "button",
          class: "btn btn-small",
          onClick: async () => toast((await copyText(state.text)) ? "답변을 복사했습니다." : "복사하지 못했습니다.", "info"),
        },
        icon("copy"),
        " 복사",
      ),
      h("button", { type: "button", class: "btn btn-small", onClick: () => ctx.onRetry() }, icon("retry"), " 다시 묻기"),
      state.sessionId && state.text ? feedback() : null,
    );
  }

  async function messageIndex() {
    if (state.index !== null) return state.index;
    const messages = await api.get(`/sessions/${encodeURIComponent(state.sessionId)}/messages`);
    let found = -1;
    messages.forEach((message, index) => {
      if (message.role === "assistant" && message.content === state.text) found = index;
    });
    if (found < 0) messages.forEach((message, index) => message.role === "assistant" && (found = index));
    state.index = found;
    return found;
  }

  function feedback() {
    const status = h("span", { class: "fb-status", role: "status" });
    const reason = h("select", { id: `fb-r-${Math.random().toString(36).slice(2)}` }, h("option", { value: "" }, "사유 선택 (선택)"));
    for (const [value, label] of FEEDBACK_REASONS) reason.appendChild(h("option", { value }, label));
    const comment = h("textarea", { rows: 2, maxlength: 2000, placeholder: "의견 (선택)", "aria-label": "의견" });
    let rating = null;
    const form = h(
      "form",
      { class: "fb-form", hidden: true },
      h("label", { for: reason.id }, "사유"),
      reason,
      comment,
      h("button", { type: "submit", class: "btn btn-small btn-primary" }, "의견 보내기"),
    );
    async function send(extra) {
      try {
        const index = await messageIndex();
        await api.post("/feedback", { session_id: state.sessionId, message_index: index, rating, ...extra });
        status.textContent = extra ? "의견을 보냈습니다. 감사합니다." : "평가를 저장했습니다.";
        return true;
      } catch (error) {
        status.textContent = error.status === 404 && !error.code ? "이 서버는 아직 평가 기능이 없습니다." : error.message;
        return false;
      }
    }
    const up = h("button", { type: "button", class: "btn btn-icon", "aria-pressed": "false", "aria-label": "좋아요" }, icon("up"));
    const down = h("button", { type: "button", class: "btn btn-icon", "aria-pressed": "false", "aria-label": "싫어요" }, icon("down"));
    for (const [button, value] of [
      [up, "up"],
      [down, "down"],
    ]) {
      button.addEventListener("click", async () => {
        rating = value;
        up.setAttribute("aria-pressed", String(value === "up"));
        down.setAttribute("aria-pressed", String(value === "down"));
        if (await send(null)) {
          form.hidden = false;
          if (value === "down") reason.focus();
        }
      });
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const extra = {};
      if (reason.value) extra.reason = reason.value;
      if (comment.value.trim()) extra.comment = comment.value.trim();
      if (await send(extra)) form.hidden = true;
    });
    return h("div", { class: "feedback", role: "group", "aria-label": "답변 평가" }, up, down, status, form);
  }

  function settle() {
    node.setAttribute("aria-busy", "false");
    node.classList.add("settled");
  }

  return {
    node,
    get text() {
      return state.text;
    },
    references(data) {
      state.refs = Array.isArray(data.references) ? data.references : [];
      if (data.table) {
        state.table = data.table;
        extras.appendChild(tableView(data.table));
      }
    },
    delta(text, arrivedAt) {
      state.text += text;
      if (PERF) pending.push(arrivedAt);
    },
    /** Render what arrived in one network chunk (one DOM update per chunk). */
    flush() {
      render();
      if (PERF && pending.length) {
        const arrived = pending;
        pending = [];
        // The frame after the DOM update paints the text; a task queued from its
        // animation-frame callback runs once that frame has been rendered.
        requestAnimationFrame(() =>
          setTimeout(() => {
            const shown = performance.now();
            for (const at of arrived) perfLog.push({ arrived: at, shown });
          }, 0),
        );
      }
    },
    done(data) {
      if (typeof data.answer === "string" && data.answer !== state.text) state.text = data.answer;
      state.sessionId = data.session_id || null;
      render();
      settle();
      if (data.table && !state.table) this.references({ references: state.refs, table: data.table });
      const src = sources();
      if (src) notices.appendChild(src);
      if (data.fallback) {
        const [code, ...rest] = String(data.fallback).split(": ");
        const said = rest.join(": ") || "언어 모델 대신 문서에서 찾은 문장으로 답했습니다.";
        notices.appendChild(notice("fallback", `안내: ${said} (${code})`));
      }
      const notFound = /답을 찾을 수 없|검색된 문서가 없/.test(state.text);
      if (state.rag && !state.table && (notFound || !state.refs.length)) {
        notices.appendChild(notice("notfound", "문서에서 질문에 맞는 내용을 찾지 못했습니다. 질문을 바꾸거나 필터를 넓혀 보세요."));
      }
      finishActions();
    },
    /** The stream failed: keep what arrived, say why, offer a retry. */
    fail(error) {
      render();
      settle();
      const text = error.code === "stream_cut" && state.text ? `${error.message}` : error.message;
      notices.appendChild(errorBox({ message: text, code: error.code && error.code !== "stream_cut" ? error.code : null }));
      finishActions();
    },
    stop() {
      render();
      settle();
      notices.appendChild(notice("stopped", "답변 생성을 중지했습니다."));
      finishActions();
    },
    /** An answer of a stored conversation (index: its position in the session's messages). */
    fromHistory(message, index, sessionId) {
      state.text = message.content || "";
      state.refs = Array.isArray(message.references) ? message.references : [];
      state.sessionId = sessionId;
      state.index = index;
      render();
      settle();
      const src = sources();
      if (src) notices.appendChild(src);
      finishActions();
    },
  };
}
