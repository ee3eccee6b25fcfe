// The documents page (editors): drag-and-drop upload of several files with per-file
// progress and errors, the paged and searchable list with ACL edit, re-index and delete,
// and ingestion jobs with pause, resume and cancel.

import { api, upload } from "./api.js";
import { $, clear, errorBox, h, icon, openDialog, toast } from "./dom.js";
import { DOC_STATUS, JOB_STATES, formatBytes, formatDate } from "./i18n.js";

const PAGE_SIZE = 20;
const JOBS_KEY = "hanrag.jobs";
const OUTCOMES = {
  added: "색인 완료",
  updated: "새 버전으로 색인",
  unchanged: "변경 없음 (이미 색인됨)",
  acl_updated: "열람 권한만 변경",
  skipped: "건너뜀",
  failed: "실패",
};

const state = { offset: 0, total: 0, q: "", status: "", jobs: [], polling: null, ready: false };
let root = null;

function fileName(source) {
  return source ? String(source).split(/[\\/]/).pop() : "";
}

function principals(text) {
  return text
    .split(/[,\s]+/)
    .map((p) => p.trim())
    .filter(Boolean);
}

function metadataJson(text) {
  const out = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`메타데이터는 한 줄에 하나씩 "키=값"으로 적어 주세요: ${line}`);
    out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return Object.keys(out).length ? JSON.stringify(out) : null;
}

// ------------------------------------------------------------------ upload

function fileRow(file) {
  const progress = h("progress", { max: 100, value: 0, "aria-label": `${file.name} 올리기 진행률` });
  const status = h("span", { class: "upload-status", role: "status" }, "대기 중");
  const node = h("li", { class: "upload-row" }, h("span", { class: "upload-name" }, icon("file"), ` ${file.name}`), h("span", { class: "hint" }, formatBytes(file.size)), progress, status);
  return {
    node,
    progress(fraction) {
      progress.value = Math.round(fraction * 100);
      status.textContent = fraction < 1 ? `올리는 중 ${Math.round(fraction * 100)}%` : "색인 중…";
    },
    done(text, ok = true) {
      progress.value = 100;
      status.textContent = text;
      node.classList.add(ok ? "ok" : "failed");
    },
  };
}

async function uploadFiles(files) {
  const list = $("#upload-list", root);
  const error = $("#upload-error", root);
  error.hidden = true;
  let meta;
  try {
    meta = metadataJson($("#up-meta", root).value);
  } catch (problem) {
    error.textContent = problem.message;
    error.hidden = false;
    return;
  }
  const acl = principals($("#up-acl", root).value);
  const background = $("#up-background", root).checked;
  if (background) {
    const rows = files.map(fileRow);
    rows.forEach((row) => list.prepend(row.node));
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    for (const principal of acl) form.append("acl", principal);
    try {
      const data = await upload("/api/v1/ingest", form, (f) => rows.forEach((row) => row.progress(f)));
      rows.forEach((row) => row.done(`작업으로 등록됨 (${String(data.job_id).slice(0, 8)})`));
      trackJob(data.job_id);
    } catch (problem) {
      rows.forEach((row) => row.done(`실패: ${problem.message}`, false));
    }
    return;
  }
  const rows = files.map((file) => ({ file, row: fileRow(file) }));
  rows.forEach(({ row }) => list.prepend(row.node));
  for (const { file, row } of rows) {
    const form = new FormData();
    form.append("file", file, file.name);
    for (const principal of acl) form.append("acl", principal);
    if (meta) form.append("metadata", meta);
    try {
      const outcome = await upload("/api/v1/documents", form, (f) => row.progress(f));
      row.done(`${OUTCOMES[outcome.status] || outcome.status}${outcome.chunks ? ` · 조각 ${outcome.chunks}개` : ""}`);
    } catch (problem) {
      row.done(`실패: ${problem.message}`, false);
    }
  }
  loadDocuments();
}

function setupUpload() {
  const zone = $("#dropzone", root);
  const input = $("#file-input", root);
  $("#pick-files", root).addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    const files = [...input.files];
    input.value = "";
    if (files.length) uploadFiles(files);
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("drag");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("drag"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = [...(event.dataTransfer?.files || [])];
    if (files.length) uploadFiles(files);
  });
}

// ------------------------------------------------------------------ list

function docRow(doc) {
  const name = fileName(doc.source);
  const status = h("span", { class: `badge badge-${doc.status}` }, DOC_STATUS[doc.status] || doc.status);
  const acl = (doc.acl || []).join(", ");
  return h(
    "tr",
    null,
    h("td", { class: "doc-title" }, doc.title || name, doc.last_error ? h("small", { class: "error-text" }, doc.last_error) : null),
    h("td", null, name),
    h("td", null, status),
    h("td", { class: "num" }, String(doc.chunk_count ?? "")),
    h("td", null, formatDate(doc.date)),
    h("td", null, acl),
    h(
      "td",
      { class: "row-actions" },
      h("button", { type: "button", class: "btn btn-small", onClick: () => editAcl(doc) }, "권한"),
      h("button", { type: "button", class: "btn btn-small", onClick: () => reindex(doc) }, "재색인"),
      h("button", { type: "button", class: "btn btn-small btn-danger", onClick: () => removeDoc(doc) }, "삭제"),
    ),
  );
}

export async function loadDocuments() {
  const body = $("#doc-rows", root);
  const pager = $("#doc-pager-text", root);
  try {
    const page = await api.get("/documents", { offset: state.offset, limit: PAGE_SIZE, q: state.q, status: state.status });
    state.total = page.total;
    clear(body);
    for (const doc of page.items) body.appendChild(docRow(doc));
    if (!page.items.length) body.appendChild(h("tr", null, h("td", { colspan: 7, class: "hint" }, state.q ? "검색 결과가 없습니다." : "등록된 문서가 없습니다.")));
    const end = Math.min(state.offset + page.items.length, page.total);
    pager.textContent = page.total ? `${state.offset + 1}–${end} / 전체 ${page.total}건` : "0건";
    $("#doc-prev", root).disabled = state.offset === 0;
    $("#doc-next", root).disabled = end >= page.total;
  } catch (error) {
    clear(body).appendChild(h("tr", null, h("td", { colspan: 7 }, errorBox(error))));
  }
}

async function editAcl(doc) {
  const values = await openDialog({
    title: `열람 권한: ${doc.title || fileName(doc.source)}`,
    fields: [
      {
        name: "acl",
        label: "읽을 수 있는 대상 (쉼표로 구분)",
        value: (doc.acl || []).join(", "),
        hint: "예: public, user:kim, group:legal",
        required: true,
      },
    ],
    confirmText: "저장",
  });
  if (!values) return;
  const acl = principals(values.acl);
  if (!acl.length) {
    toast("대상을 하나 이상 적어 주세요.", "error");
    return;
  }
  try {
    await api.put(`/documents/${encodeURIComponent(doc.document_id)}/acl`, { acl });
    toast("열람 권한을 바꿨습니다.");
    loadDocuments();
  } catch (error) {
    toast(error.message, "error");
  }
}

async function reindex(doc) {
  toast("다시 색인하는 중…");
  try {
    const outcome = await api.post(`/documents/${encodeURIComponent(doc.document_id)}/reindex`, {});
    toast(`다시 색인: ${OUTCOMES[outcome.status] || outcome.status}`);
    loadDocuments();
  } catch (error) {
    toast(error.message, "error");
  }
}

async function removeDoc(doc) {
  const ok = await openDialog({
    title: "문서 삭제",
    body: `"${doc.title || fileName(doc.source)}" 문서와 색인을 삭제할까요? 되돌릴 수 없습니다.`,
    confirmText: "삭제",
    danger: true,
  });
  if (!ok) return;
  try {
    await api.del(`/documents/${encodeURIComponent(doc.document_id)}`);
    toast("문서를 삭제했습니다.");
    if (state.offset && state.offset >= state.total - 1) state.offset = Math.max(0, state.offset - PAGE_SIZE);
    loadDocuments();
  } catch (error) {
    toast(error.message, "error");
  }
}

// ------------------------------------------------------------------ jobs

function savedJobs() {
  try {
    return JSON.parse(sessionStorage.getItem(JOBS_KEY) || "[]").filter((id) => typeof id === "string");
  } catch {
    return [];
  }
}

function saveJobs() {
  try {
    sessionStorage.setItem(JOBS_KEY, JSON.stringify(state.jobs.map((job) => job.job_id).slice(0, 20)));
  } catch {
    /* not kept */
  }
}

function trackJob(jobId) {
  if (!state.jobs.some((job) => job.job_id === jobId)) state.jobs.unshift({ job_id: jobId, state: "queued", progress: {} });
  saveJobs();
  renderJobs();
  pollJobs();
}

async function control(job, action) {
  try {
    const updated = await api.post(`/jobs/${encodeURIComponent(job.job_id)}/${action}`, {}, { envelope: true });
    Object.assign(job, updated);
    renderJobs();
    pollJobs();
  } catch (error) {
    toast(error.message, "error");
  }
}

function jobCard(job) {
  const progress = job.progress || {};
  const total = progress.files_total || 0;
  const done = progress.files_done || 0;
  const active = ["queued", "running", "paused"].includes(job.state);
  const counts = Object.entries(progress.counts || (job.result && job.result.counts) || {})
    .map(([key, value]) => `${OUTCOMES[key] || key} ${value}`)
    .join(" · ");
  const failures = (progress.failures || (job.result && job.result.failures) || []).slice(0, 10);
  return h(
    "li",
    { class: `job job-${job.state}` },
    h("div", { class: "job-head" }, h("strong", null, `작업 ${String(job.job_id).slice(0, 8)}`), h("span", { class: `badge badge-${job.state}` }, JOB_STATES[job.state] || job.state)),
    h("progress", { max: total || 1, value: total ? done : job.state === "succeeded" ? 1 : 0, "aria-label": "작업 진행률" }),
    h("p", { class: "hint" }, total ? `파일 ${done}/${total}` : "준비 중", counts ? ` · ${counts}` : "", progress.eta_seconds ? ` · 남은 시간 약 ${Math.ceil(progress.eta_seconds)}초` : ""),
    failures.length ? h("ul", { class: "job-failures" }, failures.map((f) => h("li", null, `${fileName(f.source)}: ${f.code || ""} ${f.error || ""}`))) : null,
    job.error ? errorBox({ message: job.error.message || "작업이 실패했습니다.", code: job.error.code }) : null,
    active
      ? h(
          "div",
          { class: "job-actions" },
          job.state === "paused"
            ? h("button", { type: "button", class: "btn btn-small", onClick: () => control(job, "resume") }, "다시 시작")
            : h("button", { type: "button", class: "btn btn-small", onClick: () => control(job, "pause") }, "일시 중지"),
          h("button", { type: "button", class: "btn btn-small btn-danger", onClick: () => control(job, "cancel") }, "취소"),
        )
      : null,
  );
}

function renderJobs() {
  const list = $("#job-list", root);
  clear(list);
  if (!state.jobs.length) list.appendChild(h("li", { class: "hint" }, "진행 중인 작업이 없습니다. 백그라운드 작업으로 올리면 여기에 표시됩니다."));
  for (const job of state.jobs) list.appendChild(jobCard(job));
}

async function refreshJobs() {
  const active = state.jobs.filter((job) => ["queued", "running"].includes(job.state) || !job.created_at);
  await Promise.all(
    active.map(async (job) => {
      try {
        Object.assign(job, await api.get(`/jobs/${encodeURIComponent(job.job_id)}`, null, { envelope: true }));
      } catch (error) {
        job.state = "failed";
        job.error = { message: error.message, code: error.code };
      }
    }),
  );
  renderJobs();
  if (active.some((job) => ["succeeded"].includes(job.state))) loadDocuments();
  return state.jobs.some((job) => ["queued", "running"].includes(job.state));
}

function pollJobs() {
  if (state.polling) return;
  const tick = async () => {
    const more = root && !root.hidden ? await refreshJobs() : true;
    state.polling = more ? setTimeout(tick, 1500) : null;
  };
  state.polling = setTimeout(tick, 300);
}

// ------------------------------------------------------------------ page

export function resetDocuments() {
  state.offset = 0;
  state.q = "";
  state.jobs = [];
  saveJobs();
  if (root) {
    $("#doc-search", root).value = "";
    clear($("#upload-list", root));
  }
}

export function showDocuments() {
  root = $("#view-documents");
  if (!state.ready) {
    state.ready = true;
    setupUpload();
    $("#doc-search-form", root).addEventListener("submit", (event) => {
      event.preventDefault();
      state.q = $("#doc-search", root).value.trim();
      state.status = $("#doc-status", root).value;
      state.offset = 0;
      loadDocuments();
    });
    $("#doc-prev", root).addEventListener("click", () => {
      state.offset = Math.max(0, state.offset - PAGE_SIZE);
      loadDocuments();
    });
    $("#doc-next", root).addEventListener("click", () => {
      state.offset += PAGE_SIZE;
      loadDocuments();
    });
    $("#job-track", root).addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("#job-id", root).value.trim();
      if (id) trackJob(id);
      $("#job-id", root).value = "";
    });
    state.jobs = savedJobs().map((id) => ({ job_id: id, state: "queued", progress: {} }));
  }
  loadDocuments();
  renderJobs();
  if (state.jobs.length) refreshJobs().then((more) => more && pollJobs());
  $("#documents-heading").focus();
}
