// Agent inbox, for shops with no chat platform: the queue of handed-off conversations (waiting
// time, priority, suggested group, summary), one conversation's transcript, slots and intents with
// the customer's new messages live (long polling), a reply box and "release to the bot".
// Editors and above also see the handoff webhook deliveries that failed, and can replay them.

import { api, query } from "../api.js";
import { allows, attempt, badge, el, notice, when } from "../ui.js";

const PRIORITY_KIND = { urgent: "bad", high: "warn", normal: "", low: "muted" };
const QUEUE_REFRESH_MS = 3000;

function waited(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s >= 3600 ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`
    : s >= 60 ? `${Math.floor(s / 60)}m${s % 60}s` : `${s}s`;
}

export async function render(container, { rest }) {
  const selected = rest[0] || null;
  const queue = el("ul", { class: "inbox-queue", "aria-label": "排队中的对话 Waiting conversations" });
  const detail = el("section", { class: "inbox-detail", "aria-live": "polite" });
  const failed = el("div", { class: "inbox-failed" });
  container.append(el("h1", {}, "人工收件箱 Agent inbox"),
    el("div", { class: "inbox" }, el("div", {}, el("h2", {}, "排队 Queue"), queue), detail), failed);

  const alive = () => container.isConnected;
  const refresh = async () => {
    let data;
    try {
      data = await api.get("/v1/inbox");
    } catch (err) {
      notice(err);
      return;
    }
    queue.replaceChildren(...(data.items.length ? data.items.map((item) => queueItem(item, selected))
      : [el("li", { class: "muted" }, "没有等待中的对话 No conversation is waiting")]));
  };
  await refresh();
  const timer = setInterval(() => (alive() ? refresh() : clearInterval(timer)), QUEUE_REFRESH_MS);
  if (allows("editor")) showFailed(failed);
  if (selected) await open(detail, selected, alive, refresh);
  else detail.append(el("p", { class: "muted" }, "从左侧选择一个对话。Pick a conversation on the left."));
}

function queueItem(item, selected) {
  const link = el("a", { href: `#/inbox/${encodeURIComponent(item.conversation_id)}`,
    "data-conversation": item.conversation_id, "aria-current": item.conversation_id === selected ? "true" : null },
  el("strong", {}, item.conversation_id), " ",
  badge(item.priority, PRIORITY_KIND[item.priority] || ""), " ", badge(item.skill_group),
  item.agent_joined ? badge("已接入 joined", "ok") : badge(`等待 ${waited(item.waiting_s)}`, "warn"),
  el("div", { class: "muted" }, item.summary || item.last_user_text || ""));
  return el("li", {}, link);
}

function line(e) {
  const who = { user: "顾客 Customer", bot: "机器人 Bot", agent: `客服 ${e.agent || ""}`,
    handoff: "转人工 Handoff", release: "交还机器人 Released" }[e.type] || e.type;
  const text = e.type === "handoff" ? `${e.mode} · ${e.skill_group} · ${e.priority}`
    : e.type === "release" ? e.note || "" : e.text || "";
  return el("li", { class: `line ${e.type}`, "data-seq": e.seq },
    el("span", { class: "who" }, who), " ", el("span", { class: "muted" }, when(e.ts)), el("div", {}, text));
}

async function open(detail, cid, alive, refreshQueue) {
  const data = await attempt(() => api.get(`/v1/inbox/${encodeURIComponent(cid)}`));
  if (!data) return;
  let last = data.last_seq;
  const transcript = el("ol", { class: "inbox-transcript" }, data.events.map(line));
  const slots = Object.entries(data.slots || {});
  const intents = Object.entries(data.intents || {}).sort((a, b) => b[1] - a[1]);
  const h = data.handoff;
  const facts = el("dl", { class: "facts" },
    el("dt", {}, "摘要 Summary"), el("dd", {}, (h && h.summary) || "—"),
    el("dt", {}, "分组 Group / 优先级 Priority"), el("dd", {}, h ? `${h.skill_group} / ${h.priority}` : "—"),
    el("dt", {}, "槽位 Slots"), el("dd", {}, slots.length ? slots.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join("，") : "—"),
    el("dt", {}, "意图 Intents"), el("dd", {}, intents.length ? intents.map(([k, v]) => `${k} ${v.toFixed(2)}`).join("，") : "—"),
    el("dt", {}, "访客 Visitor"), el("dd", {}, `${data.visitor.id || "—"} · ${data.visitor.channel || "—"}`));
  const held = data.holding.held_by === "human";
  const textarea = el("textarea", { id: "agent-reply", rows: "3", maxlength: "4000", required: true,
    placeholder: "回复顾客… Reply to the customer" });
  const takeOver = el("input", { type: "checkbox", id: "take-over" });
  const form = el("form", { class: "reply" },
    el("label", { for: "agent-reply" }, "回复 Reply"), textarea,
    held ? null : el("label", {}, takeOver, " 从机器人接管 Take over from the bot"),
    el("button", { type: "submit", class: "primary" }, "发送 Send"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = textarea.value.trim();
    if (!text) return;
    const ok = await attempt(() => api.post(`/v1/conversations/${encodeURIComponent(cid)}/agent-messages`,
      { text, take_over: takeOver.checked || undefined }));
    if (ok) textarea.value = "";
  });
  const note = el("input", { id: "release-note", type: "text", maxlength: "500", placeholder: "备注（选填）Note" });
  const release = el("button", { type: "button", class: "release" }, "交还机器人 Release to the bot");
  release.addEventListener("click", async () => {
    const done = await attempt(() => api.post(`/v1/conversations/${encodeURIComponent(cid)}/release`,
      { by: "agent", note: note.value.trim() }));
    if (done) {
      notice("已交还机器人 Released to the bot", "ok");
      refreshQueue();
    }
  });
  detail.replaceChildren(el("h2", {}, cid), facts, transcript, form,
    el("div", { class: "release-row" }, note, release));
  textarea.focus();

  // the customer's new messages (and our own replies) as they are stored
  while (alive() && transcript.isConnected) {
    let got;
    try {
      got = await api.get(`/v1/conversations/${encodeURIComponent(cid)}/events${query({ after: last, wait: 25 })}`,
        { timeoutMs: 35000 });
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 2000));
      continue;
    }
    for (const e of got.events) transcript.append(line(e));
    last = Math.max(last, got.last_seq);
    if (got.events.length) transcript.lastElementChild?.scrollIntoView({ block: "nearest" });
  }
}

async function showFailed(slot) {
  const data = await attempt(() => api.get(`/v1/handoff/deliveries${query({ status: "failed" })}`));
  if (!data || !data.items.length) return;
  slot.replaceChildren(el("h2", {}, "投递失败 Failed webhook deliveries"),
    el("ul", {}, data.items.map((d) => {
      const button = el("button", { type: "button" }, "重发 Replay");
      button.addEventListener("click", async () => {
        if (await attempt(() => api.post(`/v1/handoff/deliveries/${encodeURIComponent(d.event_id)}/replay`))) {
          button.replaceWith(badge("已重新排队 queued", "ok"));
        }
      });
      return el("li", {}, `${d.kind} · ${d.conversation_id} · ${d.attempts}× · ${d.last_error || ""} `, button);
    })));
}
