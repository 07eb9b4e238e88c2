// DOM helpers. Text always goes in through textContent (never innerHTML): customer and bot text
// can hold anything, including markup, and must show as typed.

/**
 * el("button", {class: "x", type: "button", onclick: fn, aria-label: "…"}, "text", child, …)
 * Attributes starting with "on" become listeners; `false`/`null` attributes are skipped.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "text") {
      node.textContent = String(value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Text with <mark> around the given [start, end) character spans (search highlights). */
export function highlighted(text, spans = []) {
  const out = document.createDocumentFragment();
  let at = 0;
  for (const [start, end] of [...spans].sort((a, b) => a[0] - b[0])) {
    if (start < at || end <= start || end > text.length) continue;
    out.append(document.createTextNode(text.slice(at, start)), el("mark", {}, text.slice(start, end)));
    at = end;
  }
  out.append(document.createTextNode(text.slice(at)));
  return out;
}

let counter = 0;
export function uid(prefix = "lx") {
  counter += 1;
  const random = typeof crypto !== "undefined" && crypto.randomUUID ? crypto.randomUUID().slice(0, 8)
    : Math.random().toString(36).slice(2, 10);
  return `${prefix}-${Date.now().toString(36)}-${random}-${counter}`;
}
