// The console's API client: the operator's key on every call, and one error type that keeps the
// server's stable `code` and message (a 403 says which role the action needs; the console shows it).

const KEY = "lingxi-console-key";

export class ConsoleError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function savedKey() {
  try {
    return sessionStorage.getItem(KEY) || "";
  } catch {
    return "";
  }
}

export function saveKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
  } catch {
    // no storage: the key lives only in this page
  }
}

export async function call(method, path, body, { key = savedKey(), timeoutMs = 30000, raw = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key) headers["X-API-Key"] = key;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let response;
  try {
    response = await fetch(path, {
      method, headers, signal: controller.signal, credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ConsoleError(0, controller.signal.aborted ? "timeout" : "network",
      controller.signal.aborted ? "服务器没有及时响应 (timeout)" : "无法连接服务器 (network error)");
  } finally {
    clearTimeout(timer);
  }
  if (raw && response.ok) return response;
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ConsoleError(response.status, error.code || `http_${response.status}`,
      error.message || response.statusText || "request failed", error.details ?? null);
  }
  return data;
}

export const api = {
  get: (path, options) => call("GET", path, undefined, options),
  post: (path, body, options) => call("POST", path, body ?? {}, options),
  put: (path, body, options) => call("PUT", path, body, options),
  del: (path, options) => call("DELETE", path, undefined, options),
};

/** "?a=1&b=x" from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "" && v !== false) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
