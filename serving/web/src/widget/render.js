// Turning conversation records into DOM: bubbles, quick-reply buttons and article cards.
//
// A record is what the widget stores per line of the conversation:
//   {role: "user"|"bot"|"system", text, kind, buttons: [{title, payload}], article, articles, searchId, query, used}
// `used` marks quick replies that belong to an earlier turn (shown, but no longer clickable).

import { el, highlighted } from "./dom.js";

/** Only plain web links may be opened from a card; anything else (javascript:, data:) is dropped. */
export function safeUrl(url) {
  if (typeof url !== "string" || !url) return null;
  try {
    const parsed = new URL(url, window.location.href);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/**
 * @param {object} record
 * @param {object} ctx  {t(key,...), onButton(button, record), onArticle(card, article, record)}
 */
export function renderRecord(record, ctx) {
  const role = ["user", "system", "agent"].includes(record.role) ? record.role : "bot";
  const who = role === "user" ? ctx.t("you") : role === "bot" ? ctx.t("bot") : "";
  const node = el("div", { class: `msg ${role}${record.kind === "proactive" ? " proactive" : ""}` });
  if (who) node.append(el("span", { class: "sr-only" }, `${who}: `));
  if (role === "agent") node.append(el("div", { class: "who" }, `${ctx.t("agent")} ${record.agent || ""}`.trim()));
  if (record.text) node.append(el("div", { class: "bubble" }, record.text));
  if (record.buttons && record.buttons.length) {
    const group = el("div", { class: "buttons", role: "group", "aria-label": record.text || ctx.t("bot") });
    for (const button of record.buttons) {
      group.append(el("button", {
        type: "button",
        disabled: Boolean(record.used),
        "data-payload": button.payload,
        onclick: () => ctx.onButton(button, record),
      }, button.title));
    }
    node.append(group);
  }
  const articles = record.article ? [record.article] : record.articles || [];
  for (const article of articles) node.append(renderCard(article, record, ctx));
  return node;
}

export function renderCard(article, record, ctx) {
  const card = el("article", { class: "card", "data-article-id": article.id });
  const title = el("h3", {}, article.title || article.id);
  card.append(title);
  if (article.snippet) {
    card.append(el("p", { class: "snippet" }, highlighted(article.snippet, article.highlights || [])));
  }
  const actions = el("div", { class: "actions" });
  actions.append(el("button", {
    type: "button",
    class: "read",
    "aria-expanded": "false",
    onclick: (event) => ctx.onArticle(card, article, record, event.currentTarget),
  }, ctx.t("articleRead")));
  const link = safeUrl(article.url);
  if (link) {
    actions.append(el("a", { href: link, target: "_blank", rel: "noopener noreferrer" }, "↗"));
  }
  card.append(actions);
  return card;
}

/** The body of an opened article, plus the "did this solve it?" vote. */
export function renderArticleBody(card, body, ctx, onVote) {
  card.querySelector(".body")?.remove();
  card.querySelector(".vote-row")?.remove();
  card.append(el("div", { class: "body" }, body));
  const row = el("div", { class: "actions vote-row", role: "group", "aria-label": ctx.t("resolvedQ") },
    el("span", { class: "vote" }, ctx.t("resolvedQ")));
  const vote = (resolved) => {
    onVote(resolved);
    row.replaceChildren(el("span", { class: "vote", role: "status" }, ctx.t("thanksFeedback")));
  };
  row.append(
    el("button", { type: "button", onclick: () => vote(true) }, ctx.t("resolved")),
    el("button", { type: "button", onclick: () => vote(false) }, ctx.t("unresolved")),
  );
  card.append(row);
}
