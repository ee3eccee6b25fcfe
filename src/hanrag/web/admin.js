// The administration page (admins): dashboard, users, groups, API keys (shown once),
// audit log with filters, model status, feedback and evaluation runs (evaluation.js).

import { api } from "./api.js";
import { evaluation } from "./evaluation.js";
import { chart } from "./charts.js";
import { $, clear, copyText, errorBox, h, openDialog, toast } from "./dom.js";
import { FEEDBACK_REASONS, ROLES, errorMessage, formatDateTime, formatNumber } from "./i18n.js";

const TABS = [
  ["dashboard", "대시보드"],
  ["users", "사용자"],
  ["groups", "그룹"],
  ["keys", "API 키"],
  ["audit", "감사 로그"],
  ["models", "모델 상태"],
  ["feedback", "피드백"],
  ["eval", "평가"],
];
const REASONS = Object.fromEntries(FEEDBACK_REASONS);

let root = null;
let current = "dashboard";

function panel() {
  return $("#admin-panel", root);
}

function table(headers, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h("table", null, h("thead", null, h("tr", null, headers.map((x) => h("th", { scope: "col" }, x)))), h("tbody", null, rows)),
  );
}

function roleSelect(value, label, onChange) {
  const select = h("select", { "aria-label": label });
  for (const [role, name] of Object.entries(ROLES)) select.appendChild(h("option", { value: role, selected: role === value }, name));
  if (onChange) select.addEventListener("change", () => onChange(select.value));
  return select;
}

function field(label, input) {
  input.id = input.id || `a-${Math.random().toString(36).slice(2, 9)}`;
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input);
}

async function guarded(node, work) {
  try {
    await work();
  } catch (error) {
    clear(node).appendChild(
      errorBox(error.status === 404 && (!error.code || error.code === "not_found") ? { message: errorMessage("route_missing") } : error),
    );
  }
}

// ------------------------------------------------------------------ dashboard

function stat(label, value, unit = "") {
  return h("div", { class: "stat" }, h("span", { class: "stat-label" }, label), h("span", { class: "stat-value" }, value === null || value === undefined ? "–" : `${formatNumber(value)}${unit}`));
}

async function dashboard(node) {
  let tz = "UTC";
  try {
    tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    tz = "UTC";
  }
  const stats = await api.get("/admin/stats", { days: 30, tz });
  const days = stats.questions_per_day || [];
  const total = stats.questions ?? days.reduce((sum, day) => sum + (day.count || 0), 0);
  const docs = stats.documents || {};
  const latency = stats.latency_ms || {};
  const ttft = stats.ttft_ms || {};
  const fb = stats.feedback || {};
  clear(node).append(
    h("h2", { class: "section-title" }, "최근 30일"),
    h(
      "div",
      { class: "stats" },
      stat("질문 수", total, "건"),
      stat("응답 시간 p50", latency.p50, " ms"),
      stat("응답 시간 p95", latency.p95, " ms"),
      stat("첫 토큰 p50", ttft.p50, " ms"),
      stat("첫 토큰 p95", ttft.p95, " ms"),
      stat("좋아요 비율", fb.ratio === null || fb.ratio === undefined ? null : fb.ratio * 100, "%"),
      stat("색인된 문서", docs.indexed, "건"),
      stat("실패한 문서", docs.failed, "건"),
    ),
    h(
      "div",
      { class: "charts" },
      chart({
        type: days.length > 1 ? "line" : "bar",
        title: "일별 질문 수",
        labels: days.map((day) => String(day.date).slice(5)),
        series: [{ name: "질문", values: days.map((day) => day.count || 0) }],
        unit: "건",
      }),
      chart({
        type: "bar",
        title: "응답 시간과 첫 토큰까지의 시간 (ms)",
        labels: ["p50", "p95"],
        series: [
          { name: "응답 시간", values: [latency.p50 || 0, latency.p95 || 0] },
          { name: "첫 토큰", values: [ttft.p50 || 0, ttft.p95 || 0] },
        ],
        unit: " ms",
      }),
      chart({
        type: "bar",
        title: "답변 평가",
        labels: ["좋아요", "싫어요"],
        series: [{ name: "평가", values: [fb.up || 0, fb.down || 0] }],
        unit: "건",
      }),
    ),
  );
}

// ------------------------------------------------------------------ users

async function users(node) {
  const list = await api.get("/admin/users");
  const rows = list.map((user) =>
    h(
      "tr",
      null,
      h("td", null, user.username),
      h("td", null, roleSelect(user.role, `${user.username}의 역할`, (role) => patchUser(user.username, { role }))),
      h("td", null, (user.groups || []).join(", ")),
      h("td", null, user.disabled ? "사용 중지" : "사용 중"),
      h("td", null, formatDateTime(user.created_at)),
      h(
        "td",
        { class: "row-actions" },
        h("button", { type: "button", class: "btn btn-small", onClick: () => patchUser(user.username, { disabled: !user.disabled }) }, user.disabled ? "사용 재개" : "사용 중지"),
        h("button", { type: "button", class: "btn btn-small", onClick: () => resetPassword(user.username) }, "비밀번호 재설정"),
      ),
    ),
  );
  const name = h("input", { name: "username", required: true, autocomplete: "off" });
  const password = h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" });
  const role = roleSelect("viewer", "역할");
  const groups = h("input", { name: "groups", placeholder: "legal, hr", autocomplete: "off" });
  const form = h(
    "form",
    { class: "inline-form", "aria-label": "사용자 추가" },
    field("아이디", name),
    field("비밀번호", password),
    field("역할", role),
    field("그룹 (쉼표로 구분)", groups),
    h("button", { type: "submit", class: "btn btn-primary" }, "사용자 추가"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const groupList = groups.value.split(",").map((g) => g.trim()).filter(Boolean);
      await api.post("/admin/users", { username: name.value.trim(), password: password.value, role: role.value, groups: groupList });
      toast("사용자를 추가했습니다.");
      show("users");
    } catch (error) {
      toast(error.message, "error");
    }
  });
  clear(node).append(h("h2", { class: "section-title" }, "사용자"), table(["아이디", "역할", "그룹", "상태", "만든 날", "관리"], rows), h("h3", null, "사용자 추가"), form);
}

async function patchUser(username, body) {
  try {
    await api.patch(`/admin/users/${encodeURIComponent(username)}`, body);
    toast("바꿨습니다.");
  } catch (error) {
    toast(error.message, "error");
  }
  show("users");
}

async function resetPassword(username) {
  const values = await openDialog({
    title: `${username} 비밀번호 재설정`,
    body: "재설정하면 이 사용자의 모든 로그인이 즉시 끝납니다.",
    fields: [{ name: "password", label: "새 비밀번호", type: "password", required: true }],
    confirmText: "재설정",
  });
  if (values && values.password) patchUser(username, { password: values.password });
}

// ------------------------------------------------------------------ groups

async function groups(node) {
  const list = await api.get("/admin/groups");
  const rows = list.map((group) => {
    const member = h("input", { "aria-label": `${group.name}에 추가할 아이디`, placeholder: "아이디", autocomplete: "off" });
    const add = h("form", { class: "mini-form" }, member, h("button", { type: "submit", class: "btn btn-small" }, "추가"));
    add.addEventListener("submit", async (event) => {
      event.preventDefault();
      await membership("PUT", group.name, member.value.trim());
    });
    return h(
      "tr",
      null,
      h("td", null, group.name),
      h(
        "td",
        null,
        h(
          "ul",
          { class: "chips" },
          (group.members || []).map((m) =>
            h("li", { class: "chip" }, m, h("button", { type: "button", class: "btn btn-icon btn-small", "aria-label": `${group.name}에서 ${m} 빼기`, onClick: () => membership("DELETE", group.name, m) }, "×")),
          ),
        ),
      ),
      h("td", null, add),
    );
  });
  const name = h("input", { required: true, autocomplete: "off" });
  const form = h("form", { class: "inline-form", "aria-label": "그룹 추가" }, field("그룹 이름", name), h("button", { type: "submit", class: "btn btn-primary" }, "그룹 추가"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.post("/admin/groups", { name: name.value.trim() });
      toast("그룹을 추가했습니다.");
      show("groups");
    } catch (error) {
      toast(error.message, "error");
    }
  });
  clear(node).append(h("h2", { class: "section-title" }, "그룹"), table(["그룹", "구성원", "구성원 추가"], rows), h("h3", null, "그룹 추가"), form);
}

async function membership(method, group, username) {
  if (!username) return;
  try {
    await (method === "PUT" ? api.put : api.del)(`/admin/groups/${encodeURIComponent(group)}/members/${encodeURIComponent(username)}`);
    toast(method === "PUT" ? "구성원을 추가했습니다." : "구성원을 뺐습니다.");
  } catch (error) {
    toast(error.message, "error");
  }
  show("groups");
}

// ------------------------------------------------------------------ API keys

async function keys(node) {
  const list = await api.get("/admin/api-keys");
  const rows = list.map((key) =>
    h(
      "tr",
      { class: key.revoked ? "muted" : null },
      h("td", null, key.name),
      h("td", null, h("code", null, `${key.prefix}…`)),
      h("td", null, key.username),
      h("td", null, ROLES[key.role] || key.role),
      h("td", null, key.can_delegate ? "예" : "아니요"),
      h("td", null, formatDateTime(key.created_at)),
      h("td", null, key.last_used_at ? formatDateTime(key.last_used_at) : "–"),
      h("td", null, key.revoked ? "폐기됨" : h("button", { type: "button", class: "btn btn-small btn-danger", onClick: () => revokeKey(key) }, "폐기")),
    ),
  );
  const owner = h("input", { required: true, autocomplete: "off" });
  const name = h("input", { value: "service", autocomplete: "off" });
  const role = roleSelect("viewer", "키의 역할");
  const delegate = h("input", { type: "checkbox" });
  const shown = h("div", { class: "key-once", hidden: true, role: "status" });
  const form = h(
    "form",
    { class: "inline-form", "aria-label": "API 키 만들기" },
    field("사용자 아이디", owner),
    field("키 이름", name),
    field("역할", role),
    h("div", { class: "field checkbox" }, delegate, h("label", { for: (delegate.id = "key-delegate") }, "다른 사용자 대신 요청 가능 (위임)")),
    h("button", { type: "submit", class: "btn btn-primary" }, "키 만들기"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await api.post("/admin/api-keys", { username: owner.value.trim(), name: name.value.trim() || "service", role: role.value, can_delegate: delegate.checked });
      const code = h("code", { class: "key-value" }, created.key);
      clear(shown).append(
        h("strong", null, "새 API 키 (지금 한 번만 표시됩니다. 안전한 곳에 보관하세요.)"),
        code,
        h("button", { type: "button", class: "btn btn-small", onClick: async () => toast((await copyText(created.key)) ? "키를 복사했습니다." : "복사하지 못했습니다.") }, "복사"),
      );
      shown.hidden = false;
      const fresh = await api.get("/admin/api-keys");
      toast(`키 ${fresh.length}개`);
    } catch (error) {
      toast(error.message, "error");
    }
  });
  clear(node).append(
    h("h2", { class: "section-title" }, "API 키"),
    table(["이름", "접두어", "사용자", "역할", "위임", "만든 때", "마지막 사용", ""], rows),
    h("h3", null, "키 만들기"),
    form,
    shown,
  );
}

async function revokeKey(key) {
  const ok = await openDialog({ title: "API 키 폐기", body: `"${key.name}" (${key.prefix}…) 키를 폐기할까요? 이 키를 쓰는 서비스는 바로 접속할 수 없게 됩니다.`, confirmText: "폐기", danger: true });
  if (!ok) return;
  try {
    await api.del(`/admin/api-keys/${encodeURIComponent(key.id)}`);
    toast("키를 폐기했습니다.");
  } catch (error) {
    toast(error.message, "error");
  }
  show("keys");
}

// ------------------------------------------------------------------ audit

async function audit(node) {
  const actor = h("input", { autocomplete: "off" });
  const action = h("input", { autocomplete: "off", placeholder: "question, login, …" });
  const since = h("input", { type: "date" });
  const limit = h("select", null, ["50", "100", "500"].map((n) => h("option", { value: n, selected: n === "100" }, `${n}건`)));
  const results = h("div", { class: "audit-results" });
  const form = h("form", { class: "inline-form", "aria-label": "감사 로그 필터" }, field("사용자", actor), field("동작", action), field("시작 날짜", since), field("개수", limit), h("button", { type: "submit", class: "btn btn-primary" }, "조회"));
  async function load() {
    await guarded(results, async () => {
      const rows = await api.get("/admin/audit", { actor: actor.value.trim(), action: action.value.trim(), since: since.value ? `${since.value}T00:00:00` : "", limit: limit.value });
      clear(results).append(
        h("p", { class: "hint" }, `${rows.length}건`),
        table(
          ["시각", "사용자", "동작", "대상", "내용", "IP"],
          rows.map((row) =>
            h("tr", null, h("td", null, formatDateTime(row.at)), h("td", null, row.actor || ""), h("td", null, row.action), h("td", null, row.target || ""), h("td", { class: "detail" }, Object.keys(row.detail || {}).length ? JSON.stringify(row.detail) : ""), h("td", null, row.ip || "")),
          ),
        ),
      );
    });
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  clear(node).append(h("h2", { class: "section-title" }, "감사 로그"), form, results);
  await load();
}

// ------------------------------------------------------------------ models

function tree(value, depth = 0) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "–");
  if (Array.isArray(value)) {
    if (!value.length) return h("span", { class: "muted" }, "없음");
    if (value.every((v) => typeof v !== "object" || v === null)) return h("span", null, value.join(", "));
    return h("ol", { class: "tree" }, value.map((v) => h("li", null, tree(v, depth + 1))));
  }
  if (typeof value === "object") {
    if (depth > 6) return h("span", null, JSON.stringify(value));
    return h("dl", { class: "tree" }, Object.entries(value).map(([k, v]) => [h("dt", null, k), h("dd", null, tree(v, depth + 1))]));
  }
  if (typeof value === "boolean") return h("span", null, value ? "예" : "아니요");
  return h("span", null, String(value));
}

async function models(node) {
  const status = await api.get("/models/status");
  clear(node).append(h("h2", { class: "section-title" }, "모델 상태"), tree(status));
}

// ------------------------------------------------------------------ feedback

async function feedback(node) {
  const data = await api.get("/feedback", { limit: 100 });
  const items = Array.isArray(data) ? data : data.items || [];
  clear(node).append(
    h("h2", { class: "section-title" }, "답변 평가"),
    items.length
      ? table(
          ["시각", "사용자", "평가", "사유", "의견", "질문"],
          items.map((item) =>
            h(
              "tr",
              null,
              h("td", null, formatDateTime(item.created_at)),
              h("td", null, item.principal || item.username || ""),
              h("td", null, item.rating === "up" ? "좋아요" : "싫어요"),
              h("td", null, REASONS[item.reason] || item.reason || ""),
              h("td", null, item.comment || ""),
              h("td", { class: "detail" }, item.question || ""),
            ),
          ),
        )
      : h("p", { class: "hint" }, "아직 평가가 없습니다."),
  );
}

const RENDER = { dashboard, users, groups, keys, audit, models, feedback, eval: evaluation };

function show(tab) {
  current = tab;
  for (const button of root.querySelectorAll("[role=tab]")) {
    const selected = button.dataset.tab === tab;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
  }
  const node = panel();
  node.setAttribute("aria-labelledby", `tab-${tab}`);
  clear(node).appendChild(h("p", { class: "hint" }, "불러오는 중…"));
  guarded(node, () => RENDER[tab](node));
}

export function showAdmin() {
  root = $("#view-admin");
  const tabs = $("#admin-tabs", root);
  if (!tabs.children.length) {
    for (const [id, label] of TABS) {
      tabs.appendChild(h("button", { type: "button", role: "tab", id: `tab-${id}`, "aria-controls": "admin-panel", dataset: { tab: id }, onClick: () => show(id) }, label));
    }
    tabs.addEventListener("keydown", (event) => {
      const ids = TABS.map(([id]) => id);
      const at = ids.indexOf(current);
      let next = null;
      if (event.key === "ArrowRight") next = ids[(at + 1) % ids.length];
      else if (event.key === "ArrowLeft") next = ids[(at - 1 + ids.length) % ids.length];
      else if (event.key === "Home") next = ids[0];
      else if (event.key === "End") next = ids[ids.length - 1];
      if (next) {
        event.preventDefault();
        show(next);
        $(`#tab-${next}`, root).focus();
      }
    });
  }
  show(current);
  $("#admin-heading").focus();
}
