// The operator console: sign in with an API key, then hash-routed pages. Each page module exports
// `render(container, params)`; the router only picks one and handles the navigation chrome.

import "./console.css";
import { api, ConsoleError, saveKey, savedKey } from "./api.js";
import { el, mountNotice, notice, session } from "./ui.js";
import * as conversations from "./pages/conversations.js";
import * as inbox from "./pages/inbox.js";
import * as insights from "./pages/insights.js";
import * as kb from "./pages/kb.js";
import * as misunderstood from "./pages/misunderstood.js";
import * as models from "./pages/models.js";

const ALL_PAGES = [
  { path: "inbox", label: "人工收件箱 Agent inbox", page: inbox },
  { path: "insights", label: "数据看板 Dashboards", page: insights },
  { path: "misunderstood", label: "未识别问题 Misunderstood", page: misunderstood },
  { path: "kb", label: "知识库 Knowledge base", page: kb },
  { path: "models", label: "模型 Models", page: models },
  { path: "conversations", label: "对话 Conversations", page: conversations },
];
let PAGES = ALL_PAGES; // chosen by role after sign-in (start)

const app = document.getElementById("app");

function parseHash() {
  const [path, search = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "insights", rest: parts.slice(1), query: new URLSearchParams(search) };
}

function signIn(reason) {
  const input = el("input", { id: "key", type: "password", autocomplete: "off", placeholder: "lx_…" });
  const error = el("p", { class: "notice error", role: "alert", hidden: !reason }, reason || "");
  const form = el("form", { class: "login card" },
    el("h1", {}, "灵犀运营后台 Lingxi console"),
    el("p", { class: "muted" }, "请输入 API 密钥（agent、editor、reviewer 或 admin 角色）。服务器未配置密钥时可留空。",
      el("br"), "Enter an API key (agent, editor, reviewer or admin). Leave empty when the server runs without keys."),
    el("label", { for: "key" }, "API 密钥 API key"), input, error,
    el("button", { type: "submit", class: "primary" }, "进入 Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    saveKey(input.value.trim());
    await start();
  });
  app.replaceChildren(form);
  input.focus();
}

async function start() {
  try {
    Object.assign(session, await api.get("/v1/session"));
  } catch (err) {
    const hadKey = Boolean(savedKey());
    saveKey("");
    const unauthorized = err instanceof ConsoleError && err.status === 401;
    const why = unauthorized ? `密钥无效 Invalid key：${err.message}`
      : err instanceof ConsoleError ? `${err.code}: ${err.message}` : String(err);
    signIn(unauthorized && !hadKey ? "" : why); // a first visit to a keyed server is not an error
    return;
  }
  if (session.role === "read" || session.role === "server") {
    saveKey("");
    signIn(session.role === "read"
      ? "这是只读密钥（站点密钥），不能进入后台。This is a read-only (site) key; the console needs editor or above."
      : "这是服务端密钥，不能进入后台。This is a server key (for shop backends); the console needs editor or above.");
    return;
  }
  // an agent key may use only the inbox; editors and above see it last in the menu
  PAGES = session.role === "agent" ? ALL_PAGES.filter((p) => p.path === "inbox")
    : ALL_PAGES.filter((p) => p.path !== "inbox").concat(ALL_PAGES.filter((p) => p.path === "inbox"));
  layout();
  route();
}

let main = null;
let nav = null;

function layout() {
  const noticeNode = el("div", { class: "notice", hidden: true });
  mountNotice(noticeNode);
  nav = el("nav", { "aria-label": "后台导航 Console" },
    el("ul", {}, PAGES.map((p) => el("li", {}, el("a", { href: `#/${p.path}`, "data-page": p.path }, p.label)))));
  main = el("main", { id: "main", tabindex: "-1" });
  const who = el("div", { class: "who" },
    el("span", {}, `${session.name} · ${session.role} · ${session.tenant} · ${session.bot}`),
    el("button", { type: "button", class: "link", onclick: () => { saveKey(""); location.hash = ""; signIn(); } },
      "退出 Sign out"));
  app.replaceChildren(
    el("a", { class: "skip", href: "#main", onclick: (e) => { e.preventDefault(); main.focus(); } }, "跳到内容 Skip to content"),
    el("header", { class: "top" }, el("strong", {}, "灵犀运营后台"), who),
    el("div", { class: "shell" }, nav, el("div", { class: "content" }, noticeNode, main)));
}

async function route() {
  if (!main) return;
  const { name, rest, query } = parseHash();
  const entry = PAGES.find((p) => p.path === name) || PAGES[0];
  nav.querySelectorAll("a").forEach((a) => {
    if (a.dataset.page === entry.path) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  notice(null);
  main.replaceChildren();
  document.title = `${entry.label} · 灵犀运营后台`;
  try {
    await entry.page.render(main, { rest, query });
  } catch (err) {
    notice(err);
  }
}

window.addEventListener("hashchange", route);
start();
