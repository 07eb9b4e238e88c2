// Model registry: what is served, the registered versions with their aliases, gate reports, the
// promotion log, and promote / roll back behind a confirmation that asks for a reason.

import { api } from "../api.js";
import { append, attempt, badge, confirmDialog, el, loading, needs, notice, pct, section, table, when } from "../ui.js";

export async function render(container) {
  container.append(el("h1", {}, "模型 Models"));
  const served = el("div", {}, loading());
  const registry = el("div", {}, loading());
  const log = el("div", {}, loading());
  container.append(section("当前服务的模型 Served model", served), section("注册的版本 Registered versions", registry),
    section("晋升记录 Promotion log", log));
  await Promise.all([renderServed(served), renderRegistry(registry, log)]);
}

async function renderServed(slot) {
  const info = await attempt(() => api.get("/v1/models"));
  if (!info) {
    slot.replaceChildren();
    return;
  }
  const loaded = info.loaded;
  const source = typeof info.source === "object" && info.source
    ? Object.entries(info.source).map(([k, v]) => `${k}: ${v}`).join(" · ") : String(info.source);
  slot.replaceChildren();
  append(slot, [loaded
    ? el("p", {}, `${loaded.bot} · ${loaded.version} · 来源 source: ${loaded.source}`
      + (loaded.registry_version ? ` · 注册版本 registry v${loaded.registry_version}` : ""))
    : el("p", { class: "muted" }, "没有加载模型 No model loaded"),
  el("p", { class: "muted small" }, `加载方式 Loading from: ${source}`),
  info.last_error ? el("p", { class: "error" }, info.last_error) : null]);
}

/** The versions table; `shown` is a gate report to display under it (the one a promotion just ran). */
async function renderRegistry(slot, logSlot, shown = null) {
  const data = await attempt(() => api.get("/v1/registry/versions"));
  if (!data) {
    slot.replaceChildren(el("p", { class: "muted" }, "注册表不可用 Registry unavailable"));
    logSlot.replaceChildren();
    return;
  }
  const refresh = (report = null) => renderRegistry(slot, logSlot, report);
  const reports = el("div", { class: "gate-slot" });
  if (shown) reports.append(el("h3", {}, "门禁报告 Gate report"), gateReport(shown));
  const rows = data.versions.map((v) => [
    el("strong", {}, `v${v.version}`),
    el("span", {}, v.aliases.length ? v.aliases.map((a) => badge(a, a === "champion" ? "ok" : "")) : "—"),
    v.lingxi_version || "—",
    when(v.created),
    el("span", { class: "row-actions" },
      el("button", { type: "button", class: "small", onclick: () => showGates(reports, v.version) },
        "门禁报告 Gate reports"),
      v.version !== data.champion ? el("button", {
        type: "button", class: "small primary", "data-promote": v.version,
        onclick: () => promote(v.version, data.champion, reports, refresh),
      }, "晋升 Promote") : null,
      v.version !== data.champion ? needs("admin") : null),
  ]);
  const rollback = el("button", { type: "button", class: "danger", onclick: () => rollbackChampion(refresh) },
    "回滚冠军 Roll back champion");
  slot.replaceChildren(
    el("p", {}, `${data.bot}: champion ${data.champion ? `v${data.champion}` : "—"} · challenger `
      + `${data.challenger ? `v${data.challenger}` : "—"}`),
    data.versions.length ? table(["版本 Version", "别名 Aliases", "模型包 Bundle", "注册时间 Registered", ""], rows)
      : el("p", { class: "muted" }, "还没有注册的版本：用 `lingxi train --register` 注册。No versions yet."),
    el("div", { class: "actions" }, rollback, needs("admin")),
    reports);
  await renderLog(logSlot);
}

async function renderLog(slot) {
  const entries = await attempt(() => api.get("/v1/registry/log"));
  if (!entries) {
    slot.replaceChildren();
    return;
  }
  slot.replaceChildren(entries.length ? table(["#", "时间 When", "操作 Action", "变化 Change", "操作人 By", "原因 Why", "门禁 Gate"],
    [...entries].reverse().map((e) => [String(e.seq), when(e.at), e.action,
      `${e.alias}: ${e.from_version ? `v${e.from_version}` : "—"} → v${e.to_version}`, e.actor, e.reason,
      e.gate ? badge(e.gate.passed ? "通过 passed" : "未通过 failed", e.gate.passed ? "ok" : "bad") : "—"]))
    : el("p", { class: "muted" }, "还没有晋升记录 No alias moves yet"));
}

function gateReport(report) {
  const metrics = Object.entries(report.metrics || {}).map(([who, m]) => [who, pct(m.accuracy), pct(m.oos_recall),
    m.p50_ms === undefined || m.p50_ms === null ? "—" : `${m.p50_ms.toFixed(1)} ms`]);
  return el("div", { class: "gate" },
    el("p", {}, badge(report.passed ? "门禁通过 PASSED" : "门禁未通过 FAILED", report.passed ? "ok" : "bad"),
      ` ${report.challenger} vs ${report.champion || "（无冠军 no champion）"} · ${report.n_examples} examples`),
    table(["模型 Model", "准确率 Accuracy", "OOS 召回 OOS recall", "p50"], metrics),
    el("ul", { class: "checks" }, (report.checks || []).map((c) => el("li", { class: c.passed ? "ok" : "bad" },
      `${c.passed ? "✓" : "✗"} ${c.name}: ${c.detail}`))));
}

async function showGates(slot, version) {
  slot.replaceChildren(loading());
  const reports = await attempt(() => api.get(`/v1/registry/versions/${encodeURIComponent(version)}/gates`));
  if (!reports) {
    slot.replaceChildren();
    return;
  }
  slot.replaceChildren(el("h3", {}, `v${version} 的门禁报告 Gate reports`),
    ...(reports.length ? reports.map((r) => el("div", {}, el("h4", {}, r.name), gateReport(r.report)))
      : [el("p", { class: "muted" }, "这个版本还没有跑过门禁 No gate run for this version yet")]));
}

async function promote(version, champion, slot, refresh) {
  const answer = await confirmDialog({
    title: `晋升 v${version} 为冠军？ Promote v${version}?`,
    body: `先在留出集上对比 v${version} 与当前冠军 ${champion ? `v${champion}` : "（无）"}，门禁通过才会移动 champion 别名。`
      + "这一步可能需要一分钟。 The eval gate runs first; the alias moves only if it passes.",
    confirm: "运行门禁并晋升 Gate and promote",
    input: "原因（写入晋升记录） Reason (goes in the log)",
  });
  if (!answer.ok) return;
  slot.replaceChildren(el("p", { role: "status" }, `正在运行评估门禁… Running the eval gate for v${version}…`));
  try {
    const result = await api.post("/v1/registry/promote", { version, reason: answer.value }, { timeoutMs: 600000 });
    await refresh(result.report);
    notice(`v${version} 已晋升为冠军 Promoted: champion ${result.entry.from_version || "—"} → ${result.entry.to_version}`, "ok");
  } catch (err) {
    notice(err);
    slot.replaceChildren();
    if (err.code === "gate_failed" && err.details && err.details.report) {
      slot.append(el("h3", {}, "门禁报告 Gate report"), gateReport(err.details.report));
    }
  }
}

async function rollbackChampion(refresh) {
  const answer = await confirmDialog({
    title: "回滚冠军？ Roll back the champion?",
    body: "champion 别名将回到上一次晋升之前的版本。 The champion alias goes back to the previous champion.",
    confirm: "回滚 Roll back",
    input: "原因 Reason",
  });
  if (!answer.ok) return;
  const result = await attempt(() => api.post("/v1/registry/rollback", { reason: answer.value }));
  if (result) {
    notice(`已回滚 Rolled back: champion v${result.entry.from_version} → v${result.entry.to_version}`, "ok");
    await refresh();
  }
}
