// Type-ahead article suggestions under the message box (an ARIA listbox driven from the textarea).
// Waits for Chinese IME composition to finish, debounces keystrokes and ignores stale answers.

import { el } from "./dom.js";

export class Suggestions {
  /**
   * @param {HTMLTextAreaElement} input
   * @param {HTMLUListElement} list
   * @param {{fetch: (q: string) => Promise<object[]>, pick: (s: object, q: string) => void, heading: () => string,
   *          kindLabel: (s: object) => string}} hooks
   */
  constructor(input, list, hooks, delayMs = 150) {
    this.input = input;
    this.list = list;
    this.hooks = hooks;
    this.delayMs = delayMs;
    this.items = [];
    this.active = -1;
    this.query = "";
    this.seq = 0;
    this.timer = null;
    this.composing = false;
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    input.setAttribute("aria-expanded", "false");
    input.addEventListener("compositionstart", () => { this.composing = true; });
    input.addEventListener("compositionend", () => { this.composing = false; this.schedule(); });
    input.addEventListener("input", () => { if (!this.composing) this.schedule(); });
    input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
  }

  get open() {
    return !this.list.hidden && this.items.length > 0;
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), this.delayMs);
  }

  async refresh() {
    const q = this.input.value.trim();
    const seq = ++this.seq;
    if (!q || q.length > 100) {
      this.close();
      return;
    }
    let items = [];
    try {
      items = await this.hooks.fetch(q);
    } catch {
      items = []; // suggestions are a nicety: a failure just shows none
    }
    if (seq !== this.seq || this.input.value.trim() !== q) return;
    this.show(q, items);
  }

  show(query, items) {
    this.query = query;
    this.items = items;
    this.active = -1;
    this.list.replaceChildren();
    if (!items.length) {
      this.close();
      return;
    }
    this.list.append(el("li", { class: "head", role: "presentation" }, this.hooks.heading()));
    items.forEach((item, i) => {
      const option = el("li", {
        role: "option",
        id: `${this.list.id}-${i}`,
        "aria-selected": "false",
        onmousedown: (event) => event.preventDefault(), // keep focus in the textarea
        onclick: () => this.choose(i),
      }, item.text, el("span", { class: "kind" }, this.hooks.kindLabel(item)));
      this.list.append(option);
    });
    this.list.hidden = false;
    this.input.setAttribute("aria-expanded", "true");
  }

  close() {
    clearTimeout(this.timer);
    this.list.hidden = true;
    this.items = [];
    this.active = -1;
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  }

  move(delta) {
    if (!this.open) return;
    const n = this.items.length;
    let next = this.active + delta; // -1 is "back in the text box"
    if (next >= n) next = -1;
    else if (next < -1) next = n - 1;
    this.active = next;
    this.list.querySelectorAll('[role="option"]').forEach((node, i) => {
      node.setAttribute("aria-selected", String(i === this.active));
      if (i === this.active) node.scrollIntoView({ block: "nearest" });
    });
    if (this.active >= 0) this.input.setAttribute("aria-activedescendant", `${this.list.id}-${this.active}`);
    else this.input.removeAttribute("aria-activedescendant");
  }

  /** Keyboard handling; returns true when the key was used here. */
  handleKey(event) {
    if (!this.open) return false;
    if (event.key === "ArrowDown") this.move(1);
    else if (event.key === "ArrowUp") this.move(-1);
    else if (event.key === "Escape") this.close();
    else if (event.key === "Enter" && !event.shiftKey && this.active >= 0) this.choose(this.active);
    else return false;
    event.preventDefault();
    return true;
  }

  choose(i) {
    const item = this.items[i];
    const query = this.query;
    this.close();
    if (item) this.hooks.pick(item, query);
  }
}
