// widget.js entry: read the <script> tag's data attributes, mount the widget, expose window.LingxiChat.
//
//   <script src="https://lingxi.example.com/widget.js" data-site-key="…" defer></script>
//
// data-site-key  a read-role API key (omit when the server runs without keys)
// data-identity-token  optional: the logged-in customer, signed by the shop's backend (README: identity
//                tokens); without it the visitor is anonymous and never linked to earlier conversations
// data-api       the Lingxi server (default: where widget.js was loaded from)
// data-channel   default "web"; data-lang "zh" (default) | "en" | "auto"
// data-page      the page path reported for proactive triggers (default location.pathname)
// data-dwell     dwell checkpoints in seconds, default "30,60,120,300"; data-idle default 300 (0: off)
// data-tags      visitor tags, comma-separated (e.g. "vip"); data-max-chars default 2000
// The same settings may come from window.LingxiChatConfig = {siteKey, api, channel, lang, …} set before.
//
// window.LingxiChat: open(), close(), page(path), track(kind, data), ready (a Promise).

import { pickLanguage } from "./i18n.js";
import { Widget } from "./widget.js";

function numbers(text, fallback) {
  if (!text) return fallback;
  const out = String(text).split(",").map((s) => Number(s.trim())).filter((n) => Number.isFinite(n) && n >= 0);
  return out.length ? out : fallback;
}

function config(script) {
  // data attributes win over window.LingxiChatConfig (set by a page that computes its settings)
  const data = { ...(window.LingxiChatConfig || {}), ...((script && script.dataset) || {}) };
  let origin = window.location.origin;
  try {
    if (script && script.src) origin = new URL(script.src, window.location.href).origin;
  } catch {
    // keep the page's origin
  }
  return {
    api: data.api || origin,
    siteKey: data.siteKey || null,
    identityToken: data.identityToken || null,
    channel: data.channel || "web",
    lang: pickLanguage(data.lang || "zh"),
    page: data.page || window.location.pathname,
    dwell: numbers(data.dwell, [30, 60, 120, 300]),
    idle: numbers(data.idle, [300])[0],
    maxChars: numbers(data.maxChars, [2000])[0] || 2000,
    tags: String(data.tags || "").split(",").map((s) => s.trim()).filter(Boolean),
  };
}

const script = document.currentScript;
let widget = null;
let resolveReady;
export const ready = new Promise((resolve) => { resolveReady = resolve; });

function boot() {
  if (document.querySelector("[data-lingxi-widget]")) return; // embedded twice: keep the first
  widget = new Widget(config(script));
  widget.mount();
  if (typeof performance !== "undefined" && performance.mark) performance.mark("lingxi-widget-ready");
  resolveReady(widget);
}

if (document.body) boot();
else document.addEventListener("DOMContentLoaded", boot, { once: true });

export const open = () => ready.then((w) => w.open());
export const close = () => ready.then((w) => w.close());
export const page = (path) => ready.then((w) => w.setPage(path));
export const track = (kind, data) => ready.then((w) => w.track(kind, data));
