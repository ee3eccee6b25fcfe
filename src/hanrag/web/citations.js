// The citation side panel: the cited passage with its title, file, page or sheet and
// date, the sentences the answer drew from it highlighted, and the original file.

import { ApiError, download } from "./api.js";
import { $, clear, h, icon } from "./dom.js";
import { formatDate } from "./i18n.js";

const MARKER = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/g;

/** Sentences of `text` as [sentence, separator-included] pieces that cover all of it. */
export function sentences(text) {
  const pieces = [];
  let start = 0;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    const end =
      c === "\n" || ((c === "." || c === "!" || c === "?" || c === "。") && (i + 1 === text.length || /\s/.test(text[i + 1])));
    if (end) {
      let j = i + 1;
      while (j < text.length && /\s/.test(text[j])) j += 1;
      pieces.push(text.slice(start, j));
      start = j;
      i = j - 1;
    }
  }
  if (start < text.length) pieces.push(text.slice(start));
  return pieces;
}

function bigrams(value) {
  const compact = value.replace(/\s+/g, "").replace(MARKER, "");
  const out = new Set();
  for (let i = 0; i < compact.length - 1; i += 1) out.add(compact.slice(i, i + 2));
  return out;
}

/** The answer's sentences that cite [n] (markers removed). */
export function citingSentences(answer, n) {
  // "…이다. [1] 다음 문장" cites the sentence before its marker: move markers before the stop.
  const attached = (answer || "").replace(/([.!?。])((?:\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\])+)/g, "$2$1");
  return sentences(attached)
    .filter((sentence) => {
      for (const match of sentence.matchAll(MARKER)) {
        if (match[1].split(",").some((part) => Number.parseInt(part.trim(), 10) === n)) return true;
      }
      return false;
    })
    .map((sentence) => sentence.replace(MARKER, "").trim())
    .filter(Boolean);
}

/** Indexes of the passage's sentences that the cited sentences match (Dice coefficient of
 * character bigrams: 1 for a sentence quoted as is, lower for a paraphrase). */
export function highlighted(passagePieces, cited) {
  if (!cited.length) return new Set();
  const citedGrams = cited.map(bigrams);
  const scores = passagePieces.map((piece) => {
    const grams = bigrams(piece);
    if (grams.size < 2) return 0;
    let best = 0;
    for (const other of citedGrams) {
      let common = 0;
      for (const gram of grams) if (other.has(gram)) common += 1;
      best = Math.max(best, (2 * common) / (grams.size + other.size));
    }
    return best;
  });
  const marked = new Set(scores.flatMap((score, index) => (score >= 0.45 ? [index] : [])));
  if (!marked.size) {
    const top = Math.max(0, ...scores);
    if (top >= 0.2) marked.add(scores.indexOf(top));
  }
  return marked;
}

let opener = null;

function panel() {
  return document.getElementById("cite-panel");
}

export function closeCitation() {
  const node = panel();
  if (!node || node.hidden) return;
  node.hidden = true;
  document.body.classList.remove("panel-open");
  if (opener && document.contains(opener)) opener.focus();
  opener = null;
}

function row(label, value) {
  if (value === null || value === undefined || value === "") return null;
  return [h("dt", null, label), h("dd", null, String(value))];
}

/** Open the panel for reference `ref` cited as [ref.n] in `answer`; `from` gets focus back. */
export function openCitation(ref, answer, from) {
  const node = panel();
  if (!node) return;
  opener = from || document.activeElement;
  const body = clear($(".cite-body", node));
  $("#cite-title", node).textContent = `[${ref.n}] ${ref.title || ref.file_name || "출처"}`;
  const location = [ref.page ? `${ref.page}쪽` : null, ref.sheet ? `시트 ${ref.sheet}` : null].filter(Boolean).join(" · ");
  body.appendChild(
    h(
      "dl",
      { class: "cite-meta" },
      row("문서", ref.title),
      row("파일", ref.file_name || ref.source),
      row("위치", location),
      row("문서 날짜", ref.date ? formatDate(ref.date) : ""),
    ),
  );
  const passage = ref.text || ref.snippet || "";
  const pieces = sentences(passage);
  const marks = highlighted(pieces, citingSentences(answer, ref.n));
  const quote = h("blockquote", { class: "cite-passage", "aria-label": "인용된 본문" });
  pieces.forEach((piece, index) => {
    quote.appendChild(marks.has(index) ? h("mark", null, piece) : document.createTextNode(piece));
  });
  body.appendChild(h("h3", { class: "cite-sub" }, "본문"));
  body.appendChild(quote);
  if (marks.size) body.appendChild(h("p", { class: "hint" }, "노란색: 답변이 인용한 문장"));
  if (ref.document_id) {
    const message = h("p", { class: "cite-download-msg", role: "status" });
    const path = `/api/v1/documents/${encodeURIComponent(ref.document_id)}/original`;
    const link = h(
      "a",
      {
        href: path,
        class: "btn",
        onClick: async (event) => {
          event.preventDefault();
          message.textContent = "내려받는 중…";
          try {
            await download(path, ref.file_name || "document");
            message.textContent = "";
          } catch (error) {
            message.textContent =
              error instanceof ApiError && (error.status === 404 || error.status === 403)
                ? "원본 파일을 내려받을 수 없습니다. 문서가 삭제되었거나 열람 권한이 없습니다."
                : error.message || "원본 파일을 내려받지 못했습니다.";
          }
        },
      },
      icon("download"),
      " 원본 파일 내려받기",
    );
    body.appendChild(h("div", { class: "cite-actions" }, link, message));
  }
  node.hidden = false;
  document.body.classList.add("panel-open");
  $("#cite-title", node).focus();
}

export function setupCitationPanel() {
  const node = panel();
  if (!node) return;
  $(".cite-close", node).addEventListener("click", closeCitation);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !node.hidden && !document.querySelector("dialog[open]")) closeCitation();
  });
}
