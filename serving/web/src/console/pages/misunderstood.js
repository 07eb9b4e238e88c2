// The misunderstood queue: what customers said that the bot fell back on, clarified, answered unsurely
// or handed off, deduplicated with counts. One click resolves an entry: assign it to an existing intent,
// to a new intent, to a knowledge-base article (found by searching its text), or ignore it.

import { api, query } from "../api.js";
import { attempt, badge, el, loading, notice, pct, session, when } from "../ui.js";

const REASON = { fallback: "兜底 fallback", clarify: "澄清 clarify", low_confidence: "低置信 low confidence",
  handoff: "转人工 handoff", wrong_answer: "答错 wrong answer" };

export async function render(container, { query: params }) {
  const filters = { status: params.get("status") || "open", reason: params.get("reason") || "", q: params.get("q") || "",
    sort: params.get("sort") || "count" };
  const listSlot = el("div", {});
  const status = el("select", { id: "mu-status", "aria-label": "状态 Status" },
    ["open", "resolved", "ignored", "all"].map((s) => el("option", { value: s, selected: s === filters.status },
      { open: "待处理 Open", resolved: "已处理 Resolved", ignored: "已忽略 Ignored", all: "全部 All" }[s])));
  const reason = el("select", { id: "mu-reason", "aria-label": "原因 Reason" }, el("option", { value: "" }, "全部原因 All reasons"),
    Object.entries(REASON).map(([v, t]) => el("option", { value: v, selected: v === filters.reason }, t)));
  const q = el("input", { id: "mu-q", type: "search", value: filters.q, placeholder: "搜索 Search", "aria-label": "搜索 Search" });
  const sort = el("select", { id: "mu-sort", "aria-label": "排序 Sort" },
    el("option", { value: "count", selected: filters.sort === "count" }, "按次数 Most frequent"),
    el("option", { value: "recent", selected: filters.sort === "recent" }, "按时间 Most recent"));
  const form = el("form", { class: "filters" }, status, reason, q, sort, el("button", { type: "submit" }, "筛选 Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(filters, { status: status.value, reason: reason.value, q: q.value.trim(), sort: sort.value });
    load(listSlot, filters);
  });
  const intents = el("datalist", { id: "intent-names" },
    (session.intents || []).map((i) => el("option", { value: i.name }, i.label)));
  container.append(el("h1", {}, "未识别问题 Misunderstood"), intents,
    el("p", { class: "muted" }, "机器人没答好的问题（已去重，按出现次数排序）。处理后会成为训练数据或知识库的问法。"
      + " Utterances the bot did not handle well; resolving them feeds retraining and the knowledge base."),
    form, listSlot);
  await load(listSlot, filters);
}

async function load(slot, filters) {
  slot.replaceChildren(loading());
  const data = await attempt(() => api.get(`/v1/misunderstood${query({ ...filters, limit: 100 })}`));
  if (!data) {
    slot.replaceChildren();
    return;
  }
  if (!data.items.length) {
    slot.replaceChildren(el("p", { class: "muted" }, "队列是空的 The queue is empty"));
    return;
  }
  const reload = () => load(slot, filters);
  slot.replaceChildren(el("p", { class: "muted small" }, `共 ${data.total} 条 entries`),
    el("ul", { class: "queue" }, data.items.map((entry) => renderEntry(entry, reload))));
}

function renderEntry(entry, reload) {
  const id = `mu-${entry.id}`;
  const node = el("li", { "data-entry": entry.id, "aria-labelledby": `${id}-text` });
  const resolve = async (action, target, extra = {}) => {
    const done = await attempt(() => api.post(`/v1/misunderstood/${entry.id}/resolve`, { action, target, ...extra }));
    if (!done) return;
    notice(`已处理 Resolved「${entry.text}」→ ${action}${target ? ` ${target}` : ""}`, "ok");
    await reload();
  };
  const intent = el("input", { id: `${id}-intent`, list: "intent-names", value: entry.predicted || "", size: "18",
    "aria-label": "意图 Intent" });
  const newIntent = el("input", { id: `${id}-new`, placeholder: "new_intent_name", size: "18", "aria-label": "新意图名 New intent name" });
  const articles = el("div", { class: "row-actions" });
  const findArticles = async () => {
    articles.replaceChildren(loading());
    const found = await attempt(() => api.post("/v1/kb/search", { query: entry.text.slice(0, 200), top_k: 3 }));
    articles.replaceChildren();
    if (!found) return;
    for (const hit of found.results) {
      articles.append(el("button", { type: "button", class: "small", onclick: () => resolve("article", hit.article_id) },
        `关联 Link《${hit.title}》`));
    }
    articles.append(el("a", { class: "button small", href: `#/kb/new${query({ title: entry.text, variant: entry.text })}` },
      "写新文章 Write a new article"));
  };
  node.append(
    el("div", { class: "text", id: `${id}-text` }, entry.text),
    el("div", { class: "muted small" },
      `${entry.count} 次 times · `, Object.entries(entry.reasons || {}).map(([r, n]) => badge(`${REASON[r] || r} ${n}`)),
      entry.predicted ? ` · 机器人判断 predicted ${entry.predicted} (${pct(entry.confidence)})` : "",
      ` · 最近 last ${when(entry.last_seen)}`,
      entry.last_conversation_id
        ? el("a", { href: `#/conversations/${encodeURIComponent(entry.last_conversation_id)}` }, " 查看对话 conversation")
        : null,
      entry.status !== "open" ? badge(`${entry.status}: ${entry.action || ""} ${entry.target || ""}`, "ok") : null));
  if (entry.status === "open") {
    node.append(el("div", { class: "row-actions" },
      intent,
      el("button", { type: "button", class: "small primary", onclick: () => resolve("intent", intent.value.trim()) },
        "归入意图 Assign intent"),
      newIntent,
      el("button", { type: "button", class: "small", onclick: () => resolve("new_intent", newIntent.value.trim()) },
        "新建意图 New intent"),
      el("button", { type: "button", class: "small", onclick: findArticles }, "找文章 Find article"),
      el("button", { type: "button", class: "small", onclick: () => resolve("ignore", null) }, "忽略 Ignore")),
    articles);
  } else {
    node.append(el("button", {
      type: "button", class: "small",
      onclick: async () => {
        if (await attempt(() => api.post(`/v1/misunderstood/${entry.id}/reopen`), "已重新打开 Reopened")) await reload();
      },
    }, "重新打开 Reopen"));
  }
  return node;
}
