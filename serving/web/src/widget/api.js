// The widget's HTTP client for Lingxi's public API. Every failure becomes an `ApiFailure` with a kind
// (network | timeout | http) so the UI can say what happened; nothing here touches the DOM.

export class ApiFailure extends Error {
  constructor(kind, status = 0, code = "", message = "", details = null) {
    super(message || code || kind);
    this.kind = kind;
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** Worth retrying as is: the server was unreachable, slow, overloaded or the conversation was busy. */
  get transient() {
    return this.kind !== "http" || this.status >= 500 || this.status === 429 || this.code === "conversation_busy";
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class LingxiApi {
  /**
   * @param {string} base  API origin, e.g. "https://lingxi.example.com"
   * @param {string|null} siteKey  a read-role API key (the site key); null when the server runs without keys
   * @param {number} timeoutMs  per request
   */
  constructor(base, siteKey, timeoutMs = 15000) {
    this.base = base.replace(/\/+$/, "");
    this.siteKey = siteKey;
    this.timeoutMs = timeoutMs;
    this.conversationToken = null; // the open's conversation_token: a site key acts only on its own conversation
  }

  async request(method, path, body, { onSlow, slowMs = 3000, timeoutMs } = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs || this.timeoutMs);
    const slowTimer = onSlow ? setTimeout(onSlow, slowMs) : null;
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.siteKey) headers["X-API-Key"] = this.siteKey;
    if (this.conversationToken && path.startsWith("/v1/conversations/")) {
      headers["X-Conversation-Token"] = this.conversationToken;
    }
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: controller.signal,
        credentials: "omit",
      });
    } catch (err) {
      throw new ApiFailure(controller.signal.aborted ? "timeout" : "network", 0, "", String(err && err.message));
    } finally {
      clearTimeout(timer);
      if (slowTimer) clearTimeout(slowTimer);
    }
    let data = null;
    const text = await response.text().catch(() => "");
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiFailure("http", response.status, error.code || `http_${response.status}`,
        error.message || response.statusText, error.details ?? null);
    }
    return data;
  }

  /** A conversation write, retried once when another request holds the conversation's lock. */
  async write(path, body, options) {
    try {
      return await this.request("POST", path, body, options);
    } catch (err) {
      if (err instanceof ApiFailure && err.code === "conversation_busy") {
        await sleep(400);
        return this.request("POST", path, body, options);
      }
      throw err;
    }
  }

  open(body, options) {
    return this.write("/v1/conversations", body, options);
  }

  message(conversationId, body, options) {
    return this.write(`/v1/conversations/${encodeURIComponent(conversationId)}/messages`, body, options);
  }

  event(conversationId, body) {
    return this.write(`/v1/conversations/${encodeURIComponent(conversationId)}/events`, body);
  }

  suggest(q, channel, limit = 5) {
    const query = new URLSearchParams({ q, limit: String(limit) });
    if (channel) query.set("channel", channel);
    return this.request("GET", `/v1/kb/suggest?${query}`, undefined, { timeoutMs: 5000 });
  }

  search(query, channel, topK = 3) {
    return this.request("POST", "/v1/kb/search", { query, channel, top_k: topK }, { timeoutMs: 8000 });
  }

  article(id) {
    return this.request("GET", `/v1/kb/articles/${encodeURIComponent(id)}?live=true`);
  }

  feedback(events) {
    return this.request("POST", "/v1/feedback", { events });
  }

  /** Client events (CSAT and friends) for the insights; `/v1/events` is the event-ingestion route. */
  events(events) {
    return this.request("POST", "/v1/events", { events });
  }
}
