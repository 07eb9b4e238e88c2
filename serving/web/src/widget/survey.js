// The end-of-chat satisfaction survey: 1–5 stars (a radio group, so arrow keys work) and a comment.

import { el, uid } from "./dom.js";

/**
 * @param {(key: string, ...args) => string} t
 * @param {{submit: ({stars, text}) => Promise<void>, skip: () => void}} hooks
 * @returns {HTMLElement}
 */
export function renderSurvey(t, hooks) {
  const name = uid("stars");
  const stars = el("div", { class: "stars" });
  const labels = [];
  const paint = (value) => labels.forEach((label, i) => label.classList.toggle("on", i < value));
  for (let n = 1; n <= 5; n += 1) {
    const id = `${name}-${n}`;
    const input = el("input", { type: "radio", name, id, value: String(n), onchange: () => paint(n) });
    const label = el("label", { for: id, title: t("star", n) }, "★", el("span", { class: "sr-only" }, t("star", n)));
    labels.push(label);
    stars.append(input, label);
  }
  const commentId = uid("comment");
  const comment = el("textarea", { id: commentId, maxlength: "500", placeholder: t("commentPlaceholder") });
  const note = el("p", { class: "note", role: "alert", hidden: true });
  const submit = el("button", { type: "submit", class: "primary" }, t("submit"));
  const form = el("form", { class: "survey", "aria-label": t("surveyTitle") },
    el("fieldset", {}, el("legend", {}, t("surveyTitle")), stars),
    el("label", { for: commentId, class: "sr-only" }, t("commentLabel")),
    comment,
    note,
    el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => hooks.skip() }, t("skip")),
      submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = form.querySelector("input[type=radio]:checked");
    if (!chosen) {
      note.textContent = t("starsRequired");
      note.hidden = false;
      return;
    }
    submit.disabled = true;
    note.hidden = true;
    try {
      await hooks.submit({ stars: Number(chosen.value), text: comment.value.trim() || null });
    } catch {
      note.textContent = t("surveyFailed");
      note.hidden = false;
      submit.disabled = false;
    }
  });
  return form;
}
