// Chart.js, bundled (only the parts used), plus an accessible wrapper: every chart is a canvas with a
// text summary and a data table under it, so the numbers are readable without seeing the chart.

import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import { el, table } from "./ui.js";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, LineController, LineElement, PointElement,
  Legend, Tooltip);

export const COLORS = ["#0f766e", "#2563eb", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#65a30d"];
const live = new Set();

/** Forget the charts of the previous page (Chart.js keeps listeners on its canvases). */
export function destroyCharts() {
  for (const chart of live) chart.destroy();
  live.clear();
}

/**
 * @param {string} title
 * @param {"bar"|"line"} type
 * @param {string[]} labels
 * @param {{label: string, data: (number|null)[], color?: string, colors?: string[]}[]} series
 * @param {{percent?: boolean, summary?: string, horizontal?: boolean}} options
 */
export function chartCard(title, type, labels, series, options = {}) {
  const canvas = el("canvas", { role: "img", "aria-label": `${title}${options.summary ? `: ${options.summary}` : ""}` });
  const fmt = (v) => (v === null || v === undefined ? "—" : options.percent ? `${(v * 100).toFixed(1)}%` : String(v));
  const card = el("section", { class: "card chart", "aria-label": title },
    el("h2", {}, title),
    options.summary ? el("p", { class: "muted small" }, options.summary) : null,
    el("div", { class: "chart-box" }, canvas),
    el("details", {}, el("summary", {}, "数据表 Data table"),
      table(["", ...series.map((s) => s.label)], labels.map((l, i) => [l, ...series.map((s) => fmt(s.data[i]))]))));
  const chart = new Chart(canvas, {
    type,
    data: {
      labels,
      datasets: series.map((s, i) => ({
        label: s.label,
        data: s.data,
        backgroundColor: s.colors || s.color || COLORS[i % COLORS.length],
        borderColor: s.color || COLORS[i % COLORS.length],
        spanGaps: true,
        tension: 0.2,
      })),
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      indexAxis: options.horizontal ? "y" : "x",
      plugins: { legend: { display: series.length > 1 } },
      scales: options.percent
        ? { [options.horizontal ? "x" : "y"]: { min: 0, max: 1, ticks: { callback: (v) => `${Math.round(v * 100)}%` } } }
        : { [options.horizontal ? "x" : "y"]: { beginAtZero: true, ticks: { precision: 0 } } },
    },
  });
  live.add(chart);
  return card;
}
