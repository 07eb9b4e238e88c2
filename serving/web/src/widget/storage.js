// What the widget remembers across page loads: the conversation (this browser tab's session) and an
// anonymous device id (so the same visitor is recognised). Storage can be unavailable (private mode,
// blocked cookies): then the widget simply forgets.

import { uid } from "./dom.js";

const MAX_RECORDS = 80;

function safe(storage) {
  try {
    const probe = "__lingxi_probe__";
    storage.setItem(probe, "1");
    storage.removeItem(probe);
    return storage;
  } catch {
    return null;
  }
}

export class Memory {
  constructor(namespace) {
    this.key = `lingxi-widget:${namespace}`;
    this.session = typeof sessionStorage !== "undefined" ? safe(sessionStorage) : null;
    this.local = typeof localStorage !== "undefined" ? safe(localStorage) : null;
  }

  deviceId() {
    const key = `${this.key}:device`;
    let id = this.local && this.local.getItem(key);
    if (!id) {
      id = uid("dev");
      if (this.local) this.local.setItem(key, id);
    }
    return id;
  }

  /** {conversationId, records, mode, surveyDone} or a fresh state. */
  load() {
    const fresh = { conversationId: null, conversationToken: null, records: [], mode: null, silentNoted: false, surveyDone: false };
    if (!this.session) return fresh;
    try {
      const saved = JSON.parse(this.session.getItem(this.key) || "null");
      return saved && typeof saved === "object" && Array.isArray(saved.records) ? { ...fresh, ...saved } : fresh;
    } catch {
      return fresh;
    }
  }

  save(state) {
    if (!this.session) return;
    const records = state.records.slice(-MAX_RECORDS);
    try {
      this.session.setItem(this.key, JSON.stringify({ ...state, records }));
    } catch {
      // quota exceeded: keep working without memory
    }
  }
}
