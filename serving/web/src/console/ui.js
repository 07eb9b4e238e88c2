// Console building blocks: the notice bar (errors say the server's code and message), a confirmation
// dialog, role hints, tables and small formatters. All text goes in as text.

import { append, el } from "../widget/dom.js";
import { ConsoleError } from "./api.js";

export { append, el };

export const ROLE_RANK = { read: 0, agent: 1, server: 1, editor: 2, reviewer: 3, admin: 4 };
const ROLE_NAME = { read: "只读 read", agent: "客服 agent", server: "服务端 server", editor: "编辑 editor",
  reviewer: "审核 reviewer", admin: "管理员 admin" };

export const session = { name: "", role: "read", tenant: "default", bot: "" };

export function allows(needed) {
  return ROLE_RANK[session.role] >= ROLE_RANK[needed];
}

/** A small badge next to an action the current key's role cannot do (the server refuses it either way). */
export function needs(needed) {
  if (allows(needed)) return null;
  return el("span", { class: "needs", title: `当前密钥角色为 ${session.role}，此操作需要 ${needed}` },
    `需要 ${ROLE_NAME[needed]}`);
}

let noticeNode = null;

export function mountNotice(node) {
  noticeNode = node;
}

/** Show an error (a ConsoleError keeps its HTTP status and code) or a success message. */
export function notice(what, kind = "error") {
  if (!noticeNode) return;
  if (!what) {
    noticeNode.hidden = true;
    noticeNode.replaceChildren();
    return;
  }
  let text = String(what);
  if (what instanceof ConsoleError) {
    const prefix = what.status === 403 ? "操作被拒绝 Refused" : what.status === 401 ? "密钥无效 Unauthorized"
      : what.status === 0 ? "连接失败 Connection failed" : "请求失败 Failed";
    text = `${prefix}（${what.status || "—"} ${what.code}）：${what.message}`;
  } else if (what instanceof Error) {
    text = what.message;
  }
  noticeNode.className = `notice ${kind}`;
  noticeNode.setAttribute("role", kind === "error" ? "alert" : "status");
  noticeNode.replaceChildren(el("span", { class: "notice-text" }, text),
    el("button", { type: "button", class: "link", onclick: () => notice(null), "aria-label": "关闭提示 Dismiss" }, "×"));
  noticeNode.hidden = false;
}

/** Run an action, reporting failure in the notice bar; returns the result or undefined. */
export async function attempt(fn, success) {
  try {
    const out = await fn();
    if (success) notice(success, "ok");
    return out;
  } catch (err) {
    notice(err);
    return undefined;
  }
}

/**
 * A modal confirmation. With `input`, the operator must type a reason (returned as `value`).
 * @returns {Promise<{ok: boolean, value: string}>}
 */
export function confirmDialog({ title, body, confirm = "确认 Confirm", input = null }) {
  return new Promise((resolve) => {
    const field = input ? el("textarea", { id: "confirm-input", rows: "2", required: true, placeholder: input }) : null;
    const dialog = el("dialog", { class: "confirm", "aria-labelledby": "confirm-title" },
      el("form", { method: "dialog" },
        el("h2", { id: "confirm-title" }, title),
        el("p", {}, body),
        field ? el("label", { for: "confirm-input" }, input) : null,
        field,
        el("div", { class: "actions" },
          el("button", { type: "submit", value: "cancel", class: "secondary", formnovalidate: true }, "取消 Cancel"),
          el("button", { type: "submit", value: "ok", class: "primary danger" }, confirm))));
    document.body.append(dialog);
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "ok" && (!field || field.value.trim() !== "");
      resolve({ ok, value: field ? field.value.trim() : "" });
      dialog.remove();
    });
    dialog.showModal();
    (field || dialog.querySelector("button.secondary")).focus();
  });
}

export function table(headers, rows, { caption } = {}) {
  return el("table", {},
    caption ? el("caption", {}, caption) : null,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}

export function when(ts) {
  if (ts === null || ts === undefined || ts === "") return "—";
  const d = typeof ts === "number" ? new Date(ts > 1e12 ? ts : ts * 1000) : new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString("zh-CN", { hour12: false });
}

export function pct(x) {
  return x === null || x === undefined || Number.isNaN(x) ? "—" : `${(x * 100).toFixed(1)}%`;
}

export function badge(text, kind = "") {
  return el("span", { class: `badge ${kind}` }, text);
}

export function section(title, ...children) {
  return el("section", { class: "card" }, el("h2", {}, title), ...children);
}

export function loading() {
  return el("p", { class: "muted", role: "status" }, "加载中… Loading…");
}
