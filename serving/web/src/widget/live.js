// Live updates while a human agent holds the conversation: the server's event stream
// (GET /v1/conversations/{id}/stream, Server-Sent Events read with fetch so the site key travels in a
// header, resumed with Last-Event-ID), and long polling (GET …/events?after=&wait=25) when a proxy
// buffers or breaks the stream. Every event carries its position in the conversation's log (`seq`):
// the caller sees each seq once, in order, across reconnects.

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class LiveUpdates {
  /**
   * @param {import("./api.js").LingxiApi} api
   * @param {string} conversationId
   * @param {number} after  the last seq already handled (-1: none)
   * @param {{onEvent(e: object): void, onState(s: object): void}} handlers
   */
  constructor(api, conversationId, after, handlers) {
    this.api = api;
    this.path = `/v1/conversations/${encodeURIComponent(conversationId)}`;
    this.last = after;
    this.handlers = handlers;
    this.stopped = false;
    this.controller = null;
    this.streamFailures = 0;
  }

  start() {
    this.loop();
    return this;
  }

  /** The seq of the latest handoff: a first subscription shows what came after it, not older handoffs. */
  static async latestHandoff(api, conversationId) {
    const path = `/v1/conversations/${encodeURIComponent(conversationId)}/events?after=-1&wait=0`;
    const result = await api.request("GET", path);
    const handoffs = (result.events || []).filter((e) => e.type === "handoff");
    return handoffs.length ? handoffs[handoffs.length - 1].seq : result.last_seq;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  deliver(item) {
    if (item.type === "state") {
      this.handlers.onState(item);
      return;
    }
    if (typeof item.seq !== "number" || item.seq <= this.last) return; // seen already
    this.last = item.seq;
    this.handlers.onEvent(item);
  }

  async loop() {
    while (!this.stopped) {
      try {
        if (this.streamFailures < 3) await this.stream();
        else await this.poll();
      } catch {
        if (this.stopped) return;
        this.streamFailures += 1;
        await sleep(Math.min(1000 * this.streamFailures, 5000));
      }
    }
  }

  headers(extra = {}) {
    const headers = { ...extra };
    if (this.api.siteKey) headers["X-API-Key"] = this.api.siteKey;
    if (this.api.conversationToken) headers["X-Conversation-Token"] = this.api.conversationToken;
    return headers;
  }

  async stream() {
    this.controller = new AbortController();
    const headers = this.headers({ Accept: "text/event-stream" });
    if (this.last >= 0) headers["Last-Event-ID"] = String(this.last);
    const response = await fetch(`${this.api.base}${this.path}/stream`, {
      headers, signal: this.controller.signal, credentials: "omit", cache: "no-store",
    });
    if (!response.ok || !response.body) throw new Error(`stream: HTTP ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    this.streamFailures = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // the server ends streams now and then: resume from the last seq
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (data) this.deliver(JSON.parse(data));
      }
    }
  }

  async poll() {
    const query = new URLSearchParams({ after: String(this.last), wait: "25" });
    const result = await this.api.request("GET", `${this.path}/events?${query}`, undefined, { timeoutMs: 35000 });
    for (const item of result.events || []) this.deliver(item);
    if (typeof result.last_seq === "number") this.last = Math.max(this.last, result.last_seq);
    if (result.state) this.handlers.onState({ type: "state", ...result.state });
  }
}
