// Entry point: sign-in (auth mode token), role-aware navigation, the three pages.

import { showAdmin } from "./admin.js";
import { loadMe, login, logout, onAuthRequired, session } from "./api.js";
import { loadSessions, newChat, resetChat, setupChat, focusChat } from "./chat.js";
import { closeCitation, setupCitationPanel } from "./citations.js";
import { $, announce, errorBox, h } from "./dom.js";
import { resetDocuments, showDocuments } from "./documents.js";
import { ROLES } from "./i18n.js";

const RANK = { viewer: 0, editor: 1, admin: 2 };
const PAGES = {
  chat: { title: "대화", role: "viewer" },
  documents: { title: "문서 관리", role: "editor" },
  admin: { title: "관리", role: "admin" },
};

let signedInAs = null;

function allowed(page) {
  const me = session.me;
  return Boolean(me) && RANK[me.role] >= RANK[PAGES[page].role];
}

function route() {
  const wanted = (location.hash.replace(/^#\/?/, "") || "chat").split("?")[0];
  const page = PAGES[wanted] && allowed(wanted) ? wanted : "chat";
  for (const name of Object.keys(PAGES)) {
    $(`#view-${name}`).hidden = name !== page;
    const link = $(`#nav-${name}`);
    if (link) {
      if (name === page) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }
  document.body.dataset.page = page;
  document.title = `${PAGES[page].title} · hanrag`;
  closeCitation();
  document.body.classList.remove("drawer-open");
  if (page === "documents") showDocuments();
  else if (page === "admin") showAdmin();
  else focusChat();
}

function renderUser(me) {
  $("#nav-documents").hidden = !allowed("documents");
  $("#nav-admin").hidden = !allowed("admin");
  $("#user-name").textContent = session.mode === "token" ? me.username : "로그인 없이 사용 중";
  $("#user-role").textContent = ROLES[me.role] || me.role;
  $("#logout").hidden = session.mode !== "token";
}

function enter(me) {
  if (signedInAs !== null && signedInAs !== me.username) {
    // Someone else signed in at this screen: nothing of the previous user stays.
    resetChat();
    resetDocuments();
  }
  const first = signedInAs === null;
  signedInAs = me.username;
  renderUser(me);
  $("#login").hidden = true;
  const app = $("#app");
  app.hidden = false;
  app.inert = false;
  if (first) {
    newChat();
    route();
  } else {
    loadSessions();
    focusChat();
  }
}

function showLogin(expired) {
  const box = $("#login");
  $("#login-error").hidden = true;
  $("#login-note").textContent = expired
    ? "로그인이 만료되었습니다. 다시 로그인하면 작성 중이던 질문은 그대로 남아 있습니다."
    : "사내 계정으로 로그인하세요.";
  box.hidden = false;
  const app = $("#app");
  if (!app.hidden) app.inert = true;
  const user = $("#login-user");
  if (expired && signedInAs) user.value = signedInAs;
  (user.value ? $("#login-password") : user).focus();
}

function setupLogin() {
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#login-error");
    const button = $("#login-submit");
    button.disabled = true;
    error.hidden = true;
    try {
      const me = await login($("#login-user").value.trim(), $("#login-password").value);
      $("#login-password").value = "";
      if (!me) throw new Error("로그인하지 못했습니다.");
      enter(me);
      announce(`${me.username}님, 로그인했습니다.`);
    } catch (problem) {
      error.replaceChildren(errorBox(problem));
      error.hidden = false;
      $("#login-password").focus();
    } finally {
      button.disabled = false;
    }
  });
  $("#logout").addEventListener("click", async () => {
    await logout();
    resetChat();
    resetDocuments();
    signedInAs = null;
    $("#app").hidden = true;
    location.hash = "#/chat";
    showLogin(false);
    announce("로그아웃했습니다.");
  });
}

function fatal(error) {
  const box = $("#boot-error");
  box.replaceChildren(
    errorBox(error),
    h("button", { type: "button", class: "btn btn-primary", onClick: () => location.reload() }, "다시 시도"),
  );
  box.hidden = false;
}

async function start() {
  setupChat();
  setupCitationPanel();
  setupLogin();
  onAuthRequired(() => showLogin(true));
  $("#skip").addEventListener("click", (event) => {
    event.preventDefault();
    const page = document.body.dataset.page || "chat";
    if (page === "chat") focusChat();
    else $(`#view-${page} h1`).focus();
  });
  const closeDrawer = () => {
    document.body.classList.remove("drawer-open");
    $("#drawer-toggle").setAttribute("aria-expanded", "false");
  };
  $(".drawer-backdrop").addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && document.body.classList.contains("drawer-open")) {
      closeDrawer();
      $("#drawer-toggle").focus();
    }
  });
  window.addEventListener("hashchange", () => {
    if (session.me) route();
  });
  let me;
  try {
    me = await loadMe();
  } catch (error) {
    fatal(error);
    return;
  } finally {
    $("#boot").hidden = true;
  }
  if (me) enter(me);
  else showLogin(false);
}

start();
