// Knowledge-base editor: list and filter articles; write a draft, submit it for review, publish it;
// browse versions, diff any version against the current one, and restore an old version.
// Every write sends the `version` it was made from; a 409 means someone else changed the article.

import { api, query } from "../api.js";
import { attempt, badge, confirmDialog, el, loading, needs, notice, when } from "../ui.js";

const STATUS = {
  draft: ["草稿 Draft", ""],
  in_review: ["审核中 In review", "warn"],
  published: ["已发布 Published", "ok"],
  archived: ["已归档 Archived", "muted"],
};

// the moves the API allows (retrieval/articles.py TRANSITIONS) and the role each needs
const MOVES = {
  draft: [["in_review", "提交审核 Submit for review", "editor"], ["archived", "归档 Archive", "reviewer"]],
  in_review: [["published", "发布 Publish", "reviewer"], ["draft", "退回草稿 Back to draft", "editor"],
    ["archived", "归档 Archive", "reviewer"]],
  published: [["archived", "下线归档 Archive", "reviewer"]],
  archived: [["draft", "恢复为草稿 Reopen as draft", "reviewer"]],
};

const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);
const commas = (text) => text.split(/[,，]/).map((s) => s.trim()).filter(Boolean);

function statusBadge(status) {
  const [text, kind] = STATUS[status] || [status, ""];
  return badge(text, kind);
}

export async function render(container, { rest, query: params }) {
  const listSlot = el("div", { class: "kb-list" });
  const editorSlot = el("div", { class: "kb-editor" });
  container.append(el("h1", {}, "知识库 Knowledge base"), el("div", { class: "split" }, listSlot, editorSlot));
  const filters = { status: params.get("status") || "", q: params.get("q") || "", flagged: false };
  const refreshList = () => renderList(listSlot, filters);
  await refreshList();
  const id = rest[0];
  if (id === "new") {
    renderEditor(editorSlot, null, refreshList, {
      title: params.get("title") || "", variants: params.getAll("variant"), body: params.get("body") || "",
    });
  } else if (id) {
    await openArticle(editorSlot, id, refreshList);
  } else {
    editorSlot.append(el("p", { class: "muted" }, "选择一篇文章，或新建一篇。Pick an article or write a new one."));
  }
}

async function renderList(slot, filters) {
  const statusSelect = el("select", { id: "kb-status", "aria-label": "状态 Status" },
    el("option", { value: "" }, "全部状态 All"),
    Object.entries(STATUS).map(([value, [text]]) => el("option", { value, selected: filters.status === value }, text)));
  const search = el("input", { id: "kb-q", type: "search", value: filters.q, placeholder: "搜索标题 Search titles",
    "aria-label": "搜索 Search" });
  const flagged = el("input", { id: "kb-flagged", type: "checkbox", checked: filters.flagged });
  const form = el("form", { class: "filters" }, statusSelect, search,
    el("label", {}, flagged, " 待优化 Flagged"),
    el("button", { type: "submit" }, "筛选 Filter"),
    el("a", { class: "button primary", href: "#/kb/new" }, "新建文章 New article"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    Object.assign(filters, { status: statusSelect.value, q: search.value.trim(), flagged: flagged.checked });
    await renderList(slot, filters);
  });
  slot.replaceChildren(form, loading());
  const data = await attempt(() => api.get(`/v1/kb/articles${query({ ...filters, limit: 200 })}`));
  if (!data) {
    slot.lastChild.remove();
    return;
  }
  const list = el("ul", { class: "articles", "aria-label": "文章列表 Articles" },
    data.items.map((a) => el("li", {},
      el("a", { href: `#/kb/${encodeURIComponent(a.id)}` }, a.title),
      " ", statusBadge(a.status),
      a.flag ? badge(`待优化 ${a.flag}`, "warn") : null,
      el("div", { class: "muted small" }, `${a.id} · v${a.version}${a.live_version ? ` · 线上 live v${a.live_version}` : ""}`
        + ` · ${when(a.updated_at)}`))));
  slot.replaceChildren(form, el("p", { class: "muted small" }, `共 ${data.total} 篇 articles`), list);
}

async function openArticle(slot, id, refreshList) {
  slot.replaceChildren(loading());
  const article = await attempt(() => api.get(`/v1/kb/articles/${encodeURIComponent(id)}`));
  if (!article) {
    slot.replaceChildren();
    return;
  }
  renderEditor(slot, article, refreshList);
}

function field(id, labelText, input, hint) {
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id }, labelText), input,
    hint ? el("div", { class: "muted small" }, hint) : null);
}

/** The edit form; `article` null means a new draft (optionally prefilled, e.g. from a knowledge gap). */
function renderEditor(slot, article, refreshList, prefill = {}) {
  const src = article || { title: prefill.title || "", body: prefill.body || "", variants: prefill.variants || [],
    category: [], tags: [], keywords: [], intents: [], channels: [] };
  const title = el("input", { type: "text", value: src.title, required: true, maxlength: "200" });
  const body = el("textarea", { rows: "10" });
  body.value = src.body || "";
  const variants = el("textarea", { rows: "4" });
  variants.value = (src.variants || []).join("\n");
  const category = el("input", { type: "text", value: (src.category || []).join(" / ") });
  const tags = el("input", { type: "text", value: (src.tags || []).join(", ") });
  const keywords = el("input", { type: "text", value: (src.keywords || []).join(", ") });
  const intents = el("input", { type: "text", value: (src.intents || []).join(", ") });
  const channels = el("input", { type: "text", value: (src.channels || []).join(", ") });
  const newId = article ? null : el("input", { type: "text", placeholder: "自动生成 generated", pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}" });

  const content = () => ({
    // fields this form does not edit are sent back unchanged
    ...(article ? { boost: article.boost, media: article.media, products: article.products, pages: article.pages } : {}),
    title: title.value.trim(),
    body: body.value,
    variants: lines(variants.value),
    category: category.value.split("/").map((s) => s.trim()).filter(Boolean),
    tags: commas(tags.value),
    keywords: commas(keywords.value),
    intents: commas(intents.value),
    channels: commas(channels.value),
  });

  const save = async () => {
    const saved = article
      ? await attempt(() => api.put(`/v1/kb/articles/${encodeURIComponent(article.id)}`,
        { ...content(), version: article.version }), "已保存 Saved")
      : await attempt(() => api.post("/v1/kb/articles",
        { ...content(), ...(newId.value.trim() ? { id: newId.value.trim() } : {}) }), "草稿已创建 Draft created");
    if (!saved) return;
    await refreshList();
    if (!article) {
      location.hash = `#/kb/${encodeURIComponent(saved.id)}`;
      return;
    }
    renderEditor(slot, saved, refreshList);
  };

  const form = el("form", { class: "editor", "aria-label": "编辑文章 Edit article" },
    el("div", { class: "editor-head" },
      el("h2", {}, article ? article.title : "新文章 New article"),
      article ? statusBadge(article.status) : badge("新建 New", ""),
      article ? el("span", { class: "muted small" },
        ` ${article.id} · v${article.version}${article.live_version ? ` · 线上 live v${article.live_version}` : " · 未上线 not live"}`)
        : null),
    newId ? field("kb-id", "文章 ID（选填） Article id (optional)", newId) : null,
    field("kb-title", "标题 Title", title),
    field("kb-body", "正文 Body", body),
    field("kb-variants", "相似问法（每行一个） Question variants (one per line)", variants,
      "顾客常见的其他问法，有助于搜索和输入推荐 Other ways customers ask: they feed search and type-ahead"),
    field("kb-category", "分类（用 / 分层） Category path", category),
    field("kb-tags", "标签 Tags", tags),
    field("kb-keywords", "关键词 Keywords", keywords),
    field("kb-intents", "关联意图 Intents", intents),
    field("kb-channels", "可见渠道（空=全部） Channels (empty = all)", channels),
    el("div", { class: "actions" },
      el("button", { type: "submit", class: "primary" }, article ? "保存 Save" : "保存草稿 Save draft"),
      article && article.status === "published"
        ? el("span", { class: "muted small" }, "保存后生成新草稿，线上版本保持不变直到再次发布。Saving makes a draft; the live version serves until it is published.")
        : null));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    save();
  });

  const parts = [form];
  if (article) {
    parts.push(workflow(slot, article, refreshList), versionsPanel(slot, article, refreshList));
  }
  slot.replaceChildren(...parts);
}

function workflow(slot, article, refreshList) {
  const moves = MOVES[article.status] || [];
  const note = el("input", { id: "kb-note", type: "text", placeholder: "备注（选填） Note (optional)", maxlength: "500" });
  const buttons = moves.map(([target, text, role]) => el("span", { class: "move" },
    el("button", {
      type: "button", "data-target": target, class: target === "published" ? "primary" : "",
      onclick: async () => {
        if (target === "archived") {
          const answer = await confirmDialog({ title: "归档文章？ Archive?", body: `「${article.title}」将下线，顾客不再看到。`,
            confirm: "归档 Archive" });
          if (!answer.ok) return;
        }
        const moved = await attempt(() => api.post(`/v1/kb/articles/${encodeURIComponent(article.id)}/status`,
          { status: target, version: article.version, note: note.value.trim() }), `${text}：完成 Done`);
        if (moved) {
          await refreshList();
          renderEditor(slot, moved, refreshList);
          notice(`${text}：完成 Done（v${moved.version}）`, "ok");
        }
      },
    }, text), needs(role)));
  return el("section", { class: "workflow", "aria-label": "审核流程 Review workflow" },
    el("h3", {}, "审核流程 Workflow: 草稿 → 审核 → 发布"), note, el("div", { class: "actions" }, buttons));
}

function versionsPanel(slot, article, refreshList) {
  const panel = el("section", { class: "versions", "aria-label": "版本 Versions" }, el("h3", {}, "版本历史 Versions"));
  const body = el("div", {}, loading());
  const diffSlot = el("div", { class: "diff-slot" });
  panel.append(body, diffSlot);
  (async () => {
    const versions = await attempt(() => api.get(`/v1/kb/articles/${encodeURIComponent(article.id)}/versions`));
    if (!versions) {
      body.replaceChildren();
      return;
    }
    const newestFirst = [...versions].sort((a, b) => b.version - a.version);
    const rows = newestFirst.map((v) => el("li", { "data-version": v.version },
      el("strong", {}, `v${v.version}`), " ", statusBadge(v.status), v.live ? badge("线上 live", "ok") : null,
      el("span", { class: "muted small" }, ` ${v.author} · ${when(v.created_at)}${v.note ? ` · ${v.note}` : ""}`),
      v.version !== article.version ? el("span", { class: "row-actions" },
        el("button", { type: "button", class: "small", onclick: () => showDiff(diffSlot, article, v.version) },
          `对比 Diff v${v.version} → v${article.version}`),
        el("button", {
          type: "button", class: "small",
          onclick: async () => {
            const answer = await confirmDialog({ title: `恢复 v${v.version}？ Restore?`,
              body: `用 v${v.version} 的内容生成新版本。已发布的文章会立即以该内容上线。`, confirm: "恢复 Restore" });
            if (!answer.ok) return;
            const restored = await attempt(() => api.post(`/v1/kb/articles/${encodeURIComponent(article.id)}/restore`,
              { restore_version: v.version, version: article.version }), `已恢复 v${v.version} Restored`);
            if (restored) {
              await refreshList();
              renderEditor(slot, restored, refreshList);
            }
          },
        }, `恢复 Restore v${v.version}`), needs("reviewer")) : null));
    body.replaceChildren(el("ol", { class: "version-list", reversed: true }, rows));
  })();
  return panel;
}

async function showDiff(slot, article, from) {
  slot.replaceChildren(loading());
  const diff = await attempt(() => api.get(
    `/v1/kb/articles/${encodeURIComponent(article.id)}/diff${query({ from, to: article.version })}`));
  if (!diff) {
    slot.replaceChildren();
    return;
  }
  const changes = diff.changes.length ? diff.changes.map((c) => el("div", { class: "change" },
    el("h4", {}, c.field),
    c.unified && c.unified.length
      ? el("pre", { class: "diff" }, c.unified.slice(2).map((line) => el("span", {
        class: line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "",
      }, `${line}\n`)))
      : el("pre", { class: "diff" }, el("span", { class: "del" }, `- ${JSON.stringify(c.before)}\n`),
        el("span", { class: "add" }, `+ ${JSON.stringify(c.after)}\n`)))) : [el("p", { class: "muted" }, "内容相同 No changes")];
  slot.replaceChildren(el("h4", {}, `v${diff.from_version} → v${diff.to_version}`), ...changes);
}

