// The administration's "평가" tab: the stored evaluation runs (hanrag eval run) with their
// headline metrics, and each run's HTML report opened in a new tab.
//
// The report comes from /api/v1/admin/eval/runs/{id}/report with the access token and is
// opened from a blob URL (a plain link could not carry the token); a blob document inherits
// this app's Content-Security-Policy, so there the report's inline style and filter script
// do not apply (the text, tables and <details> still read). "내려받기" saves the file,
// which opens with its own policy, styled and with its filters. The server sends it sandboxed (Content-Security-Policy: sandbox allow-scripts)
// and every text in it is escaped; nothing in this tab is written as HTML.

import { api, download, openHtml } from "./api.js";
import { clear, h, toast } from "./dom.js";
import { formatDateTime } from "./i18n.js";

const COLUMNS = [
  ["R@1", ["recall@1"]],
  ["R@5", ["recall@5"]],
  ["MRR", ["mrr@10", "mrr@5", "mrr@"]],
  ["포함", ["contained"]],
  ["문자 F1", ["char_f1"]],
];

function metric(metrics, names) {
  for (const name of names) {
    const key = name.endsWith("@") ? Object.keys(metrics).find((k) => k.startsWith(name)) : name;
    const value = key === undefined ? undefined : metrics[key];
    if (typeof value === "number" && Number.isFinite(value)) return value.toFixed(3);
  }
  return "–";
}

function reportPath(run) {
  return `/admin/eval/runs/${encodeURIComponent(run.run_id)}/report`;
}

async function openReport(run) {
  try {
    await openHtml(reportPath(run));
  } catch (error) {
    toast(error.message, "error");
  }
}

async function saveReport(run) {
  try {
    await download(`${reportPath(run)}?download=true`, `hanrag-eval-${run.run_id}.html`);
  } catch (error) {
    toast(error.message, "error");
  }
}

function row(run) {
  const metrics = run.metrics || {};
  const done = run.questions ? `${run.done ?? 0}/${run.questions}` : String(run.done ?? 0);
  return h(
    "tr",
    { dataset: { run: run.run_id } },
    h("td", null, h("code", null, run.run_id), run.dataset ? h("div", { class: "hint" }, run.dataset) : null),
    h("td", null, run.created_at ? formatDateTime(run.created_at) : "–"),
    h("td", null, run.complete ? done : `${done} (미완료)`),
    COLUMNS.map(([, names]) => h("td", { class: "num" }, metric(metrics, names))),
    h(
      "td",
      { class: "row-actions" },
      h("button", { type: "button", class: "btn btn-small eval-open", onClick: () => openReport(run) }, "보고서 열기"),
      h("button", { type: "button", class: "btn btn-small", onClick: () => saveReport(run) }, "내려받기"),
    ),
  );
}

export async function evaluation(node) {
  const runs = await api.get("/admin/eval/runs");
  const headers = ["실행", "날짜", "질문", ...COLUMNS.map(([label]) => label), "보고서"];
  clear(node).append(
    h("h2", { class: "section-title" }, "평가 실행"),
    h("p", { class: "hint" }, "새 탭의 보고서에는 이 앱의 보안 정책이 적용되어 서식과 필터 없이 보일 수 있습니다. 내려받은 파일은 그대로 열립니다."),
    runs.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "eval-runs" },
            h("thead", null, h("tr", null, headers.map((x) => h("th", { scope: "col" }, x)))),
            h("tbody", null, runs.map(row)),
          ),
        )
      : h("p", { class: "hint" }, "저장된 평가 실행이 없습니다. hanrag eval run 으로 실행하세요."),
  );
}
