// The chat widget: a launcher button and a chat panel in a shadow root, talking to /v1/conversations,
// /v1/kb (suggest, search, articles), /v1/feedback and /v1/events.
//
// Failure rule: a message leaves the text box only once the server has accepted it. Until then it
// stays there (read-only while sending); on failure the status bar says why and offers a retry.

import css from "./styles.css?inline";
import { ApiFailure, LingxiApi } from "./api.js";
import { Behaviour } from "./behaviour.js";
import { el, uid } from "./dom.js";
import { t as label } from "./i18n.js";
import { LiveUpdates } from "./live.js";
import { renderArticleBody, renderRecord } from "./render.js";
import { Memory } from "./storage.js";
import { Suggestions } from "./suggest.js";
import { renderSurvey } from "./survey.js";

export class Widget {
  /**
   * @param {{api: string, siteKey: string|null, channel: string, lang: "zh"|"en", maxChars: number,
   *          dwell: number[], idle: number, page: string, tags: string[], identityToken?: string|null}} options
   */
  constructor(options) {
    this.options = options;
    this.lang = options.lang;
    this.api = new LingxiApi(options.api, options.siteKey);
    this.memory = new Memory(options.api);
    this.state = this.memory.load();
    this.api.conversationToken = this.state.conversationToken || null;
    this.sending = false;
    this.opening = null;
    this.unread = 0;
    this.eventQueue = Promise.resolve();
    this.behaviour = new Behaviour((event) => this.report(event), { dwell: options.dwell, idle: options.idle });
  }

  t(key, ...args) {
    return label(this.lang, key, ...args);
  }

  // ------------------------------------------------------------------ building the DOM

  mount(parent = document.body) {
    this.host = el("div", { id: "lingxi-chat", "data-lingxi-widget": "" });
    parent.append(this.host);
    this.root = this.host.attachShadow({ mode: "open" });
    try { // a constructed sheet also works under a page CSP that forbids inline <style>
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(css);
      this.root.adoptedStyleSheets = [sheet];
    } catch {
      this.root.append(el("style", {}, css));
    }
    this.build();
    this.behaviour.start(this.options.page);
    this.restore();
  }

  build() {
    const ids = { title: uid("title"), log: uid("log"), suggest: uid("suggest") };
    this.launcher = el("button", {
      type: "button", class: "launcher", "aria-haspopup": "dialog", "aria-expanded": "false",
      onclick: () => this.open(),
    });
    this.teaser = el("div", { class: "teaser", role: "status", hidden: true });
    this.stateBar = el("div", { class: "state", role: "status", "aria-live": "polite", hidden: true });
    this.log = el("div", { class: "log", id: ids.log, role: "log", "aria-live": "polite", tabindex: "0" });
    this.status = el("div", { class: "status", role: "alert", hidden: true });
    this.suggestList = el("ul", { class: "suggest", id: ids.suggest, role: "listbox", hidden: true });
    this.input = el("textarea", { rows: "1", class: "input" });
    this.sendButton = el("button", { type: "submit", class: "send" });
    this.counter = el("div", { class: "counter", "aria-live": "polite", hidden: true });
    this.form = el("form", { class: "row", onsubmit: (e) => { e.preventDefault(); this.sendTyped(); } },
      this.input, this.sendButton);
    this.composer = el("div", { class: "composer" }, this.suggestList, this.form, this.counter);
    this.surveySlot = el("div", {});
    this.titleNode = el("h2", { id: ids.title });
    this.subtitle = el("div", { class: "sub" });
    this.langButton = el("button", { type: "button", class: "lang", onclick: () => this.switchLanguage() });
    this.endButton = el("button", { type: "button", class: "end", onclick: () => this.endChat() });
    this.closeButton = el("button", { type: "button", class: "close", onclick: () => this.close() }, "×");
    this.panel = el("section", {
      class: "panel", role: "dialog", "aria-modal": "false", "aria-labelledby": ids.title, hidden: true,
      onkeydown: (e) => this.onPanelKey(e),
    },
    el("header", { class: "header" }, el("div", { class: "titles" }, this.titleNode, this.subtitle),
      this.langButton, this.endButton, this.closeButton),
    this.stateBar, this.log, this.status, this.surveySlot, this.composer);
    this.input.addEventListener("keydown", (e) => this.onInputKey(e));
    this.input.addEventListener("input", () => this.updateCounter());
    this.suggest = new Suggestions(this.input, this.suggestList, {
      fetch: async (q) => (await this.api.suggest(q, this.options.channel, 5)).suggestions || [],
      pick: (item, q) => this.pickSuggestion(item, q),
      heading: () => this.t("suggestions"),
      kindLabel: (item) => (item.title && item.title !== item.text ? `· ${item.title}` : ""),
    });
    this.root.append(this.launcher, this.teaser, this.panel);
    this.applyLabels();
  }

  applyLabels() {
    this.launcher.replaceChildren(el("span", {}, this.t("launcher")));
    if (this.unread) this.launcher.append(el("span", { class: "badge", "aria-label": this.t("newMessage") }, this.unread));
    this.launcher.setAttribute("aria-label", this.t("launcherAria"));
    this.titleNode.textContent = this.t("title");
    this.subtitle.textContent = this.t("subtitle");
    this.langButton.textContent = this.t("language");
    this.langButton.setAttribute("aria-label", this.t("languageAria"));
    this.endButton.textContent = this.t("end");
    this.closeButton.setAttribute("aria-label", this.t("closeAria"));
    this.log.setAttribute("aria-label", this.t("log"));
    this.input.placeholder = this.t("placeholder");
    this.input.setAttribute("aria-label", this.t("inputAria"));
    this.sendButton.textContent = this.t("send");
    this.renderMode();
  }

  switchLanguage() {
    this.lang = this.lang === "zh" ? "en" : "zh";
    this.applyLabels();
    this.renderLog();
  }

  // ------------------------------------------------------------------ records and the log

  restore() {
    this.renderLog();
    this.renderMode();
  }

  renderLog() {
    this.log.replaceChildren(...this.state.records.map((r) => this.recordNode(r)));
    this.scrollDown();
  }

  recordNode(record) {
    return renderRecord(record, {
      t: (key, ...args) => this.t(key, ...args),
      onButton: (button, rec) => this.clickButton(button, rec),
      onArticle: (card, article, rec, trigger) => this.toggleArticle(card, article, rec, trigger),
    });
  }

  add(record) {
    this.state.records.push(record);
    this.memory.save(this.state);
    const node = this.recordNode(record);
    this.log.append(node);
    this.scrollDown();
    return node;
  }

  /** Quick replies of earlier turns stay visible but can no longer be clicked. */
  retireButtons() {
    let changed = false;
    for (const record of this.state.records) {
      if (record.buttons && record.buttons.length && !record.used) {
        record.used = true;
        changed = true;
      }
    }
    if (changed) {
      this.log.querySelectorAll(".buttons button").forEach((b) => { b.disabled = true; });
      this.memory.save(this.state);
    }
  }

  scrollDown() {
    this.log.scrollTop = this.log.scrollHeight;
  }

  // ------------------------------------------------------------------ status and handoff state

  setStatus(message, { kind = "error", retry = null } = {}) {
    if (!message) {
      this.status.hidden = true;
      this.status.replaceChildren();
      return;
    }
    this.status.className = `status ${kind === "info" ? "info" : ""}`;
    this.status.setAttribute("role", kind === "info" ? "status" : "alert");
    this.status.replaceChildren(el("span", {}, message));
    if (retry) {
      this.status.append(el("button", { type: "button", class: "retry", onclick: retry }, this.t("retry")));
    }
    this.status.hidden = false;
  }

  failureText(err, fallbackKey = "failed") {
    if (err instanceof ApiFailure && err.kind === "http" && !err.transient) {
      if (err.code === "text_too_long") {
        const limit = (err.details && err.details.limit) || this.options.maxChars;
        return this.t("tooLong", this.input.value.length, limit);
      }
      return this.t("rejected", err.message);
    }
    if (err instanceof ApiFailure && (err.status === 429 || err.code === "conversation_busy")) return this.t("busy");
    return this.t(fallbackKey);
  }

  /** mode: "live" (an agent is being connected), "offline" (leave a message), "left" (message left) or null. */
  setMode(mode) {
    if (this.state.mode === mode) return;
    if (this.state.mode === "live") { // a handoff ended: the next one starts afresh
      this.state.liveAfter = undefined;
      this.state.liveSince = undefined;
      this.state.agentJoined = false;
      this.state.leftWhileWaiting = false;
    }
    this.state.mode = mode;
    this.state.silentNoted = false;
    this.memory.save(this.state);
    this.renderMode();
  }

  renderMode() {
    const key = { live: "handoffLive", offline: "offline", left: "messageLeft" }[this.state.mode];
    this.stateBar.hidden = !key;
    this.stateBar.textContent = key ? this.t(key) : "";
    this.panel.dataset.mode = this.state.mode || "bot";
    if (this.state.mode === "live") {
      this.renderWaiting();
      this.startLive();
    } else {
      this.stopLive();
    }
  }

  // ------------------------------------------------------------------ a human holds the conversation

  /** The wait state the server reports: waiting (with the time), an agent joined, or a message left. */
  renderWaiting() {
    const h = this.holding || {};
    const joined = h.agent_joined || this.state.agentJoined;
    this.panel.dataset.agent = joined ? "joined" : "waiting";
    if (joined) {
      this.stateBar.textContent = this.t("agentJoined");
      return;
    }
    if (this.state.leftWhileWaiting) {
      this.stateBar.textContent = this.t("waitingMessage");
      return;
    }
    const since = this.state.liveSince || (h.since ? h.since * 1000 : Date.now()); // the wait this visitor saw
    const waited = Math.max(0, Math.round((Date.now() - since) / 1000));
    const clock = waited >= 60 ? `${Math.floor(waited / 60)}:${String(waited % 60).padStart(2, "0")}` : `${waited}s`;
    this.stateBar.textContent = this.t("waiting", clock);
    const limit = typeof h.agent_wait_s === "number" ? h.agent_wait_s : 120;
    if (waited >= limit) {
      this.stateBar.textContent = this.t("waitLong");
      this.stateBar.append(el("button", { type: "button", class: "leave", onclick: () => this.leaveMessage() },
        this.t("leaveMessage")));
    }
  }

  /** Waiting too long: the customer's next messages are kept for the agent (the platform sees them too). */
  leaveMessage() {
    this.state.leftWhileWaiting = true;
    this.memory.save(this.state);
    this.add({ role: "system", text: this.t("leaveMessageHint") });
    this.renderWaiting();
    this.input.focus();
  }

  async startLive() {
    const cid = this.state.conversationId;
    if (this.live || !cid) return;
    this.live = { stop() {} }; // claimed: one subscription at a time
    if (!this.state.liveSince) this.state.liveSince = Date.now();
    let after = this.state.liveAfter;
    if (typeof after !== "number") {
      try {
        after = await LiveUpdates.latestHandoff(this.api, cid);
      } catch {
        after = -1;
      }
      this.state.liveAfter = after;
      this.memory.save(this.state);
    }
    if (this.state.mode !== "live" || this.state.conversationId !== cid) {
      this.live = null;
      return;
    }
    this.live = new LiveUpdates(this.api, cid, after, {
      onEvent: (e) => this.onLiveEvent(e),
      onState: (s) => { this.holding = s; if (this.state.mode === "live") this.renderWaiting(); },
    }).start();
    this.waitTimer = setInterval(() => this.renderWaiting(), 1000);
  }

  stopLive() {
    if (this.live) this.live.stop();
    this.live = null;
    this.holding = null;
    if (this.waitTimer) clearInterval(this.waitTimer);
    this.waitTimer = null;
  }

  onLiveEvent(e) {
    this.state.liveAfter = e.seq;
    if (e.type === "agent") {
      this.state.agentJoined = true;
      this.add({ role: "agent", text: e.text, agent: e.agent });
      if (!this.isOpen) this.notify([{ text: e.text }]);
      this.renderWaiting();
    } else if (e.type === "release") {
      this.add({ role: "system", text: this.t("handoffEnded") });
      this.setMode(null);
    } else if (e.type === "bot" && this.state.mode === null) {
      this.add({ role: "bot", text: e.text || "", kind: e.kind || "text", buttons: e.buttons || [] });
    }
    this.memory.save(this.state);
  }

  // ------------------------------------------------------------------ opening and closing

  async open() {
    this.panel.hidden = false;
    this.launcher.hidden = true;
    this.teaser.hidden = true;
    this.launcher.setAttribute("aria-expanded", "true");
    this.unread = 0;
    this.applyLabels();
    this.input.focus();
    if (!this.state.conversationId) {
      try {
        await this.ensureConversation();
        this.setStatus(null);
      } catch (err) {
        this.setStatus(this.failureText(err, "failedOpen"), { retry: () => this.open() });
      }
    }
  }

  close() {
    this.suggest.close();
    this.panel.hidden = true;
    this.launcher.hidden = false;
    this.launcher.setAttribute("aria-expanded", "false");
    this.launcher.focus();
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  onPanelKey(event) {
    if (event.key === "Escape" && !this.suggest.open) {
      event.preventDefault();
      this.close();
    }
  }

  onInputKey(event) {
    if (this.suggest.handleKey(event)) return;
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.sendTyped();
    }
  }

  updateCounter() {
    const n = this.input.value.length;
    const limit = this.options.maxChars;
    const near = n > limit * 0.8;
    this.counter.hidden = !near;
    this.counter.classList.toggle("over", n > limit);
    this.counter.textContent = near ? `${n} / ${limit}` : "";
  }

  /** Open the conversation once (concurrent callers share the request); renders the welcome. */
  ensureConversation() {
    if (this.state.conversationId) return Promise.resolve(this.state.conversationId);
    if (!this.opening) {
      const visitor = { device_id: this.memory.deviceId() };
      if (this.options.identityToken) visitor.identity_token = this.options.identityToken;
      this.opening = this.api.open({
        channel: this.options.channel,
        language: this.lang,
        visitor,
        tags: this.options.tags.length ? this.options.tags : undefined,
      }).then((result) => {
        this.state.conversationId = result.conversation_id;
        this.state.conversationToken = result.conversation_token || null;
        this.api.conversationToken = this.state.conversationToken;
        this.state.surveyDone = false;
        this.memory.save(this.state);
        this.handleResult(result, null);
        return result.conversation_id;
      }).finally(() => {
        this.opening = null;
      });
    }
    return this.opening;
  }

  // ------------------------------------------------------------------ sending

  sendTyped() {
    const text = this.input.value;
    if (!text.trim() || this.sending) return;
    if (text.length > this.options.maxChars) {
      this.setStatus(this.t("tooLong", text.length, this.options.maxChars));
      return;
    }
    this.suggest.close();
    return this.send({ text: text.trim() }, true);
  }

  clickButton(button, record) {
    if (this.sending || record.used) return;
    return this.send({ text: button.title, payload: button.payload }, false);
  }

  /**
   * One customer message. `typed`: it came from the text box, which is cleared only on success.
   * Retries reuse the same message_id.
   */
  async send(message, typed, messageId = uid("msg")) {
    this.sending = true;
    this.input.readOnly = true;
    this.sendButton.disabled = true;
    this.composer.setAttribute("aria-busy", "true");
    this.setStatus(null);
    const pending = this.recordNode({ role: "user", text: message.text });
    pending.classList.add("pending");
    this.log.append(pending);
    this.scrollDown();
    try {
      const cid = await this.ensureConversation();
      const result = await this.api.message(cid, {
        text: message.text,
        payload: message.payload,
        channel: this.options.channel,
        message_id: messageId,
      }, { onSlow: () => this.setStatus(this.t("slow"), { kind: "info" }) });
      pending.remove();
      if (typed) {
        this.input.value = "";
        this.updateCounter();
      }
      this.setStatus(null);
      this.retireButtons();
      this.add({ role: "user", text: message.text });
      this.handleResult(result, message.payload ? null : message.text);
    } catch (err) {
      pending.remove();
      if (err instanceof ApiFailure && err.code === "conversation_forbidden") {
        // the token was lost (another tab, cleared storage): the next message opens a new conversation
        this.state.conversationId = null;
        this.state.conversationToken = null;
        this.memory.save(this.state);
      }
      const retry = err instanceof ApiFailure && !err.transient ? null : () => this.send(message, typed, messageId);
      this.setStatus(this.failureText(err), { retry });
    } finally {
      this.sending = false;
      this.input.readOnly = false;
      this.sendButton.disabled = false;
      this.composer.removeAttribute("aria-busy");
      if (this.isOpen && typed) this.input.focus();
    }
  }

  /** Render a turn's result: messages, handoff state, and article suggestions after a fallback. */
  handleResult(result, typedText) {
    const messages = result.messages || [];
    for (const m of messages) {
      // a card the server showed carries its search, so opening and voting on it count against it
      const card = m.article || (m.articles && m.articles[0]) || null;
      this.add({ role: "bot", text: m.text || "", kind: m.kind || "text", buttons: m.buttons || [],
        article: m.article || null, articles: m.articles || [],
        searchId: card ? card.search_id || null : null, query: card ? typedText : null });
      if (m.article && !m.article.title) this.fillArticle(m.article);
    }
    if (result.handoff) {
      this.setMode(result.handoff.mode === "message" ? "left" : "live");
    } else if (result.active_flow === "leave_message" || result.decision === "leave_message") {
      this.setMode("offline");
    } else if (result.silent) {
      // the bot stays quiet while an agent has the conversation: say so once, not after every message
      if (!this.state.silentNoted) this.add({ role: "system", text: this.t("handoffSilent") });
      this.state.silentNoted = true;
      this.setMode("live");
    } else if (messages.length && this.state.mode) {
      this.setMode(null); // the bot answers again (an agent released the conversation, or a message was left)
    }
    if (!this.isOpen && messages.some((m) => m.kind === "proactive")) this.notify(messages);
  }

  notify(messages) {
    const first = messages.find((m) => m.text);
    this.unread += messages.length;
    this.applyLabels();
    if (!first) return;
    const text = el("button", { type: "button", class: "teaser-text", onclick: () => this.open() }, first.text);
    const dismiss = el("button", {
      type: "button", class: "teaser-close", "aria-label": this.t("dismiss"),
      onclick: () => { this.teaser.hidden = true; },
    }, "×");
    this.teaser.replaceChildren(text, dismiss);
    this.teaser.hidden = false;
  }

  // ------------------------------------------------------------------ behaviour events

  /** Behaviour events run one after another; they open a conversation quietly when needed. */
  report(event) {
    this.eventQueue = this.eventQueue.then(async () => {
      if (event.kind === "page_view" && !this.state.conversationId) return; // nothing to tell yet
      try {
        const cid = await this.ensureConversation();
        const result = await this.api.event(cid, { ...event, channel: this.options.channel });
        this.handleResult(result, null);
      } catch (err) {
        if (err instanceof ApiFailure && (err.code === "conversation_not_found" || err.code === "conversation_forbidden")) {
          this.state.conversationId = null; // the server forgot it (e.g. a fresh store): start again next time
          this.state.conversationToken = null;
          this.memory.save(this.state);
        }
        // behaviour reports are best effort: a lost one only means no proactive message
      }
    });
    return this.eventQueue;
  }

  setPage(page) {
    this.behaviour.setPage(page);
  }

  track(kind, data = {}) {
    return this.report({ kind, page: this.behaviour.page, data });
  }

  // ------------------------------------------------------------------ knowledge: suggestions, cards, feedback

  feedback(events) {
    const common = { channel: this.options.channel, visitor_id: this.memory.deviceId() };
    this.api.feedback(events.map((e) => ({ ...common, ...e }))).catch(() => {});
  }

  async pickSuggestion(item, query) {
    if (!item.article_id) {
      this.input.value = item.text;
      return this.sendTyped();
    }
    this.input.value = "";
    this.updateCounter();
    const record = { role: "bot", kind: "article", text: "", query,
      article: { id: item.article_id, title: item.title || item.text, rank: 1 } };
    const node = this.add(record);
    this.feedback([{ type: "click", article_id: item.article_id, rank: 1, query }]);
    const card = node.querySelector(".card");
    const button = card && card.querySelector(".read");
    if (card && button) await this.toggleArticle(card, record.article, record, button, false);
    this.input.focus();
  }

  async fillArticle(article) {
    try {
      const full = await this.api.article(article.id);
      const translated = (full.translations || {})[this.lang];
      article.title = (translated && translated.title) || full.title;
      this.memory.save(this.state);
      this.root.querySelectorAll(`.card[data-article-id="${CSS.escape(article.id)}"] h3`).forEach((h) => {
        h.textContent = article.title;
      });
    } catch {
      // the card keeps its id as the title
    }
  }

  async toggleArticle(card, article, record, button, logClick = true) {
    if (card.querySelector(".body")) {
      card.querySelector(".body").remove();
      card.querySelector(".vote-row")?.remove();
      button.textContent = this.t("articleRead");
      button.setAttribute("aria-expanded", "false");
      return;
    }
    const ctx = { t: (key, ...args) => this.t(key, ...args) };
    const opened = Date.now();
    const common = { article_id: article.id, search_id: article.search_id || record.searchId || undefined,
      query: record.query || undefined, conversation_id: this.state.conversationId || undefined };
    if (logClick) this.feedback([{ type: "click", rank: article.rank || undefined, ...common }]);
    try {
      const full = await this.api.article(article.id);
      const translated = (full.translations || {})[this.lang];
      const body = (translated && translated.body) || full.body || full.title;
      renderArticleBody(card, body, ctx, (resolved) => {
        this.feedback([
          { type: "dwell", dwell_ms: Date.now() - opened, article_id: article.id, search_id: common.search_id },
          { type: "vote", resolved, ...common },
        ]);
      });
      button.textContent = this.t("articleHide");
      button.setAttribute("aria-expanded", "true");
      if (card.parentElement === this.log.lastElementChild) this.scrollDown();
    } catch {
      card.querySelector(".body")?.remove();
      card.append(el("div", { class: "body" }, this.t("articleMissing")));
    }
  }

  // ------------------------------------------------------------------ ending: the survey

  endChat() {
    if (!this.state.conversationId || this.state.surveyDone) {
      this.close();
      return;
    }
    this.composer.hidden = true;
    const form = renderSurvey((key, ...args) => this.t(key, ...args), {
      submit: (answer) => this.submitSurvey(answer),
      skip: () => this.finishSurvey(false),
    });
    this.surveySlot.replaceChildren(form);
    form.querySelector("input[type=radio]").focus();
  }

  async submitSurvey({ stars, text }) {
    const payload = { stars };
    if (text) payload.text = text;
    const report = await this.api.events([{
      event_id: uid("csat"), type: "csat", conversation_id: this.state.conversationId,
      channel: this.options.channel, visitor_id: this.memory.deviceId(), payload,
    }]);
    if (report && report.rejected) {
      const reason = (report.results || []).find((r) => r.status === "rejected");
      throw new Error(reason ? reason.reason : "rejected");
    }
    this.finishSurvey(true);
  }

  finishSurvey(rated) {
    this.surveySlot.replaceChildren();
    this.composer.hidden = false;
    if (rated) this.add({ role: "system", text: this.t("thanks") });
    // the next message starts a new conversation
    this.state = { ...this.state, conversationId: null, conversationToken: null, mode: null, surveyDone: true };
    this.memory.save(this.state);
    this.renderMode();
    this.input.focus();
  }
}
