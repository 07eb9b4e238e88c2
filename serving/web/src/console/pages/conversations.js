// Conversation viewer: the transcript of one conversation, turn by turn, with what the NLU read,
// what the dialogue decided, and the policy trace that explains the decision.

import { api, query } from "../api.js";
import { attempt, badge, el, loading, when } from "../ui.js";

const OUTCOME_KIND = { hit: "ok", miss: "muted", skip: "muted", info: "" };

export async function render(container, { rest, query: params }) {
  const id = rest[0] || params.get("id") || "";
  const input = el("input", { id: "conv-id", type: "text", value: id, placeholder: "c-… 对话 ID conversation id",
    required: true, maxlength: "128" });
  const form = el("form", { class: "filters" }, el("label", { for: "conv-id" }, "对话 ID Conversation id"), input,
    el("button", { type: "submit", class: "primary" }, "查看 View"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/conversations/${encodeURIComponent(input.value.trim())}`;
  });
  const slot = el("div", {});
  container.append(el("h1", {}, "对话 Conversations"), form, slot);
  if (id) await show(slot, id);
  else slot.append(el("p", { class: "muted" }, "输入对话 ID；未识别问题和看板里的对话也可以直接点开。"
    + " Enter an id, or open one from the misunderstood queue."));
}

/** Split the event log into turns: each customer message / behaviour event up to its decision. */
export function turns(events) {
  const out = [];
  let current = null;
  for (const e of events) {
    if (!current || (["user", "behaviour"].includes(e.event) && current.closed)) {
      current = { events: [], closed: false };
      out.push(current);
    }
    current.events.push(e);
    if (e.event === "decision") current.closed = true;
  }
  return out;
}

async function show(slot, id) {
  slot.replaceChildren(loading());
  const data = await attempt(() => api.get(`/v1/conversations/${encodeURIComponent(id)}${query({ events: "all" })}`));
  if (!data) {
    slot.replaceChildren();
    return;
  }
  const state = data.state || {};
  const summary = el("p", { class: "muted" },
    `${data.conversation_id} · ${data.event_count} events · 渠道 channel ${state.channel || "—"} · `
    + `访客 visitor ${state.visitor_id || "—"} · 开始 started ${when(state.created_at)}`,
    state.handoff ? badge(`人工 handoff: ${state.handoff.mode} · ${state.handoff.skill_group}`, "warn") : null);
  const list = el("ol", { class: "turns" }, turns(data.events || []).map(renderTurn));
  slot.replaceChildren(summary, list);
}

function renderTurn(turn, index) {
  const node = el("li", { class: "turn", "data-turn": index });
  const decision = turn.events.find((e) => e.event === "decision");
  for (const e of turn.events) {
    const line = renderEvent(e);
    if (line) node.append(line);
  }
  if (decision) {
    const trace = decision.trace || [];
    node.append(el("div", { class: "decision" },
      badge(`决策 decision: ${decision.decision}`, "strong"),
      decision.intent ? el("span", { class: "muted" }, ` 意图 intent ${decision.intent}`) : null,
      decision.human_request ? badge("要求人工 asked for a human", "warn") : null,
      el("details", { class: "trace" },
        el("summary", {}, `决策过程 Trace (${trace.length})`),
        el("ol", {}, trace.map((t) => el("li", { class: `outcome-${t.outcome}` },
          badge(t.stage, OUTCOME_KIND[t.outcome] || ""), ` ${t.outcome}`, t.detail ? ` — ${t.detail}` : ""))))));
  }
  return node;
}

function renderEvent(e) {
  const time = el("time", { class: "muted small" }, when(e.ts));
  switch (e.event) {
    case "user": {
      const p = e.parse;
      return el("div", { class: "line user" }, time, el("div", { class: "bubble" }, e.text),
        e.payload ? el("span", { class: "muted small" }, ` 按钮 button ${e.payload}`) : null,
        p ? el("div", { class: "parse small" },
          `NLU: ${p.intent || "out_of_scope"} (${(p.confidence ?? 0).toFixed(3)}) · ${p.decision}`,
          p.entities && p.entities.length ? ` · 实体 ${p.entities.map((x) => `${x.entity}=${x.text}`).join(", ")}` : "",
          p.rules && p.rules.length ? ` · 规则 ${p.rules.join(", ")}` : "") : null);
    }
    case "bot":
      return el("div", { class: "line bot" }, time,
        el("div", { class: "bubble" }, e.text || "", e.article ? ` 【文章 ${e.article.title || e.article.id}】` : ""),
        e.buttons && e.buttons.length ? el("div", { class: "muted small" },
          `按钮 buttons: ${e.buttons.map((b) => b.title).join(" | ")}`) : null,
        el("span", { class: "muted small" }, ` ${e.kind || "text"}`));
    case "behaviour":
      return el("div", { class: "line event" }, time, badge(`行为 ${e.kind}`),
        ` ${e.page || ""}${e.seconds ? ` ${e.seconds}s` : ""}${e.data && Object.keys(e.data).length ? ` ${JSON.stringify(e.data)}` : ""}`);
    case "handoff":
      return el("div", { class: "line event" }, time, badge(`转人工 handoff (${e.mode})`, "warn"),
        ` ${e.reason} → ${e.skill_group} · ${e.priority}${e.summary ? ` · ${e.summary}` : ""}`);
    case "slot":
      return el("div", { class: "line event muted small" }, time, ` 槽位 slot ${e.name} = ${JSON.stringify(e.value)}`);
    case "flow_started":
    case "flow_step":
    case "flow_ended":
      return el("div", { class: "line event muted small" }, time,
        ` 流程 ${e.event.replace("flow_", "")} ${e.flow}${e.step ? ` · ${e.step}` : ""}${e.outcome ? ` · ${e.outcome}` : ""}`);
    case "clarify":
      return el("div", { class: "line event muted small" }, time,
        ` 澄清 clarify: ${(e.options || []).map((o) => o.label).join(" / ")}`);
    case "clarified":
      return el("div", { class: "line event muted small" }, time, ` 已澄清 clarified → ${e.value} (${e.via})`);
    case "trigger":
      return el("div", { class: "line event" }, time, badge(`触发 trigger ${e.trigger}`, "ok"));
    case "action":
      return el("div", { class: "line event muted small" }, time,
        ` 动作 action ${e.name}: ${e.ok ? "ok" : `失败 failed ${e.error || e.status || ""}`}`);
    case "release":
      return el("div", { class: "line event" }, time, badge(`交还机器人 released by ${e.by}`));
    default:
      return null;
  }
}
