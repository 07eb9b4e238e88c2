// Dashboards over /v1/insights: volume per day and channel, containment / fallback / handoff rates,
// hot topics with spike markers, CSAT (with a daily trend), knowledge gaps (each one a button to write
// the missing article) and article performance.

import { api, query } from "../api.js";
import { chartCard, COLORS, destroyCharts } from "../charts.js";
import { attempt, badge, el, loading, pct, section, table, when } from "../ui.js";

const DAY = 86_400;

export async function render(container, { query: params }) {
  destroyCharts();
  const days = Number(params.get("days")) || 7;
  const channel = params.get("channel") || "";
  const range = el("select", { id: "ins-days", "aria-label": "时间范围 Range" },
    [1, 7, 30].map((d) => el("option", { value: d, selected: d === days }, `最近 ${d} 天 Last ${d} days`)));
  const channelInput = el("input", { id: "ins-channel", type: "text", value: channel, placeholder: "全部渠道 All channels",
    "aria-label": "渠道 Channel", size: "14" });
  const form = el("form", { class: "filters" }, range, channelInput, el("button", { type: "submit" }, "刷新 Refresh"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/insights${query({ days: range.value, channel: channelInput.value.trim() })}`;
  });
  const body = el("div", {}, loading());
  container.append(el("h1", {}, "数据看板 Dashboards"), form, body);

  const until = Date.now() / 1000;
  const base = { since: until - days * DAY, until, channel, tz_offset_minutes: -new Date().getTimezoneOffset() };
  const get = (path, extra = {}) => api.get(`/v1/insights/${path}${query({ ...base, ...extra })}`);
  const results = await attempt(() => Promise.all([
    get("rates"), get("rates", { by: "day" }), get("rates", { by: "channel" }),
    get("frequent", { kind: "question", by: "day" }), get("frequent", { kind: "question", by: "channel" }),
    get("frequent", { kind: "intent", limit: 10 }),
    get("spikes", { kind: "intent", until: undefined, since: undefined, channel: channel || undefined }),
    get("csat"), get("gaps", { min_count: 1, limit: 10 }), get("articles", { limit: 10 }),
  ]));
  if (!results) {
    body.replaceChildren();
    return;
  }
  const [overall, byDay, byChannel, volumeDay, volumeChannel, topIntents, spikes, csat, gaps, articles] = results;
  body.replaceChildren(
    kpis(overall.data[0], csat.data[0]),
    el("div", { class: "charts" },
      volumeChart(volumeDay.data),
      ratesChart(byDay.data),
      channelChart(volumeChannel.data, byChannel.data),
      hotTopics(topIntents.data, spikes.data),
      csatChart(csat.data[0])),
    csatTrend(get, days),
    gapsSection(gaps.data),
    articlesSection(articles.data));
}

function kpis(rates, csat) {
  const kpi = (label, value, id) => el("div", { class: "kpi", "data-kpi": id }, el("div", { class: "muted small" }, label),
    el("div", { class: "value" }, value));
  return el("div", { class: "kpis" },
    kpi("对话 Conversations", String(rates ? rates.conversations : 0), "conversations"),
    kpi("消息 Messages", String(rates ? rates.messages : 0), "messages"),
    kpi("机器人解决率 Containment", pct(rates?.containment_rate), "containment"),
    kpi("转人工率 Handoff rate", pct(rates?.handoff_rate), "handoff"),
    kpi("兜底率 Fallback rate", pct(rates?.fallback_rate), "fallback"),
    kpi("满意度 CSAT (4–5★)", pct(csat?.csat), "csat"),
    kpi("平均星级 Mean stars", csat?.mean_stars ? csat.mean_stars.toFixed(2) : "—", "stars"));
}

function volumeChart(groups) {
  const labels = groups.map((g) => g.group);
  return chartCard("每日消息量 Messages per day", "bar", labels, [{ label: "消息 Messages", data: groups.map((g) => g.total) }],
    { summary: `共 ${groups.reduce((n, g) => n + g.total, 0)} 条消息 messages` });
}

function ratesChart(rows) {
  const labels = rows.map((r) => r.group);
  return chartCard("每日解决率 / 兜底率 / 转人工率 Rates per day", "line", labels, [
    { label: "解决率 Containment", data: rows.map((r) => r.containment_rate) },
    { label: "兜底率 Fallback", data: rows.map((r) => r.fallback_rate) },
    { label: "转人工率 Handoff", data: rows.map((r) => r.handoff_rate) },
  ], { percent: true });
}

function channelChart(volume, rates) {
  const labels = volume.map((g) => g.group);
  const rateOf = Object.fromEntries(rates.map((r) => [r.group, r]));
  return chartCard("各渠道 By channel", "bar", labels, [
    { label: "消息 Messages", data: volume.map((g) => g.total) },
  ], { summary: labels.map((c) => `${c}: 解决率 ${pct(rateOf[c]?.containment_rate)}, 转人工 ${pct(rateOf[c]?.handoff_rate)}`)
    .join("；") });
}

function hotTopics(groups, spikes) {
  const items = (groups[0] && groups[0].items) || [];
  const report = spikes.report || {};
  const spiking = new Set((report.spikes || []).map((t) => t.key));
  const labels = items.map((i) => (spiking.has(i.key) ? `↑ 突增 ${i.key}` : i.key));
  const card = chartCard("热门问题 Hot topics", "bar", labels, [{
    label: "次数 Count", data: items.map((i) => i.count),
    colors: items.map((i) => (spiking.has(i.key) ? COLORS[3] : COLORS[0])),
  }], { horizontal: true, summary: report.status === "ok" || report.spikes
    ? `${spiking.size ? `突增 Spikes: ${[...spiking].join(", ")}` : "没有突增 No spikes"} · ${report.message || ""}`
    : report.message || "" });
  card.append(el("p", { class: "small" }, badge(`突增检测 Spike check: ${report.status || "—"}`,
    spiking.size ? "bad" : "")));
  return card;
}

function csatChart(summary) {
  const stars = summary ? summary.stars : {};
  const labels = ["1", "2", "3", "4", "5"];
  return chartCard("满意度分布 CSAT stars", "bar", labels.map((s) => `${s}★`),
    [{ label: "评价 Ratings", data: labels.map((s) => stars[s] || 0) }],
    { summary: summary ? `${summary.rated} 条评分 ratings · 平均 ${summary.mean_stars ? summary.mean_stars.toFixed(2) : "—"}★`
      + ` · 关键词 keywords: ${(summary.keywords || []).join("、") || "—"}` : "还没有评价 No ratings yet" });
}

function csatTrend(get, days) {
  const slot = el("div", {}, loading());
  const out = section("满意度趋势 CSAT trend", slot);
  (async () => {
    const now = Date.now() / 1000;
    const spans = Array.from({ length: Math.min(days, 30) }, (_, i) => now - (Math.min(days, 30) - i) * DAY);
    const answers = await attempt(() => Promise.all(spans.map((since) => get("csat", { since, until: since + DAY }))));
    if (!answers) {
      slot.replaceChildren();
      return;
    }
    const labels = spans.map((s) => new Date((s + DAY) * 1000).toLocaleDateString("zh-CN"));
    const rows = answers.map((a) => a.data[0] || null);
    slot.replaceChildren(chartCard("每日满意度 CSAT per day", "line", labels, [
      { label: "满意度 CSAT", data: rows.map((r) => (r ? r.csat : null)) },
    ], { percent: true, summary: `${rows.filter(Boolean).reduce((n, r) => n + r.rated, 0)} 条评分 ratings` }));
    const negatives = rows.filter(Boolean).flatMap((r) => r.negative_examples || []);
    if (negatives.length) {
      slot.append(el("h3", {}, "差评原话 Negative comments"), el("ul", {}, negatives.slice(0, 5).map((t) => el("li", {}, t))));
    }
  })();
  return out;
}

function gapsSection(gaps) {
  const list = gaps.length ? el("ul", { class: "queue gaps" }, gaps.map((g) => el("li", {},
    el("div", { class: "text" }, g.suggested_title),
    el("div", { class: "muted small" }, `${g.count} 次 times · ${g.distinct} 种问法 phrasings · 关键词 ${g.keywords.join("、")}`
      + ` · 最近 last ${when(g.last_seen)}`),
    el("ul", { class: "small" }, g.examples.map((x) => el("li", {}, x))),
    el("a", { class: "button small primary", href: `#/kb/new${exampleQuery(g)}` }, "写文章 Write an article"))))
    : el("p", { class: "muted" }, "没有发现知识缺口 No knowledge gaps found");
  return section("知识缺口 Knowledge gaps", el("p", { class: "muted small" },
    "机器人答不上来的问题按语义聚类。为它们写文章，小灵就能回答。 Unanswered questions, clustered: write an article and the bot can answer them."),
  list);
}

function exampleQuery(gap) {
  const q = new URLSearchParams({ title: gap.suggested_title });
  for (const x of gap.examples) q.append("variant", x);
  return `?${q}`;
}

function articlesSection(rows) {
  return section("文章表现 Article performance", rows.length ? table(
    ["文章 Article", "曝光 Impressions", "点击 Clicks", "点击率 CTR", "投票 Votes", "解决率 Resolved", ""],
    rows.map((r) => [el("a", { href: `#/kb/${encodeURIComponent(r.article_id)}` }, r.title || r.article_id),
      String(r.impressions), String(r.clicks), pct(r.ctr), String(r.votes), pct(r.resolution_rate),
      r.flagged ? badge(`待优化 ${r.flag_reason || ""}`, "warn") : ""]))
    : el("p", { class: "muted" }, "还没有文章数据 No article feedback yet"));
}
