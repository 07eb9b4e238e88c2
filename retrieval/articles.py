"""Help-centre articles: the content an editor writes, the stored article, its versions and status machine.

An article has one *head* (the newest version, what editors work on) and at most one *live* version
(what customers find). Editing a published article moves the head back to ``draft`` while the live
version keeps serving, so no change reaches customers without review; publishing makes the head
live. Every change, including a status change, is a new numbered version.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import msgspec

Status = Literal["draft", "in_review", "published", "archived"]
STATUSES: tuple[str, ...] = ("draft", "in_review", "published", "archived")

# from -> allowed targets
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "draft": ("in_review", "archived"),
    "in_review": ("published", "draft", "archived"),
    "published": ("archived",),
    "archived": ("draft",),
}
# role needed to move *into* a status (editors submit and withdraw; reviewers decide)
TRANSITION_ROLE: dict[tuple[str, str], str] = {
    ("draft", "in_review"): "editor",
    ("in_review", "draft"): "editor",
    ("in_review", "published"): "reviewer",
    ("draft", "archived"): "reviewer",
    ("in_review", "archived"): "reviewer",
    ("published", "archived"): "reviewer",
    ("archived", "draft"): "reviewer",
}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")


class MediaRef(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An image, video, link or file the body refers to (stored by reference, never inline)."""

    kind: Literal["image", "video", "link", "file"]
    url: str
    title: str = ""


class ArticleTranslation(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """The article in another language: searched as well, and shown to customers who write in it."""

    title: str
    body: str = ""
    variants: list[str] = msgspec.field(default_factory=list)


class ArticleContent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What an editor writes. ``channels`` empty = visible everywhere; ``boost`` in [-1, 1];
    ``translations``: the article in other languages, by code (``{"en": {title, body, variants}}``)."""

    title: str
    body: str = ""
    variants: list[str] = msgspec.field(default_factory=list)  # 相似问法
    category: list[str] = msgspec.field(default_factory=list)  # path, e.g. ["售后", "退款"]
    tags: list[str] = msgspec.field(default_factory=list)
    keywords: list[str] = msgspec.field(default_factory=list)
    channels: list[str] = msgspec.field(default_factory=list)
    boost: float = 0.0
    intents: list[str] = msgspec.field(default_factory=list)
    media: list[MediaRef] = msgspec.field(default_factory=list)
    products: list[str] = msgspec.field(default_factory=list)  # product ids/categories it is about
    pages: list[str] = msgspec.field(default_factory=list)  # page paths it helps on, e.g. /checkout
    translations: dict[str, ArticleTranslation] = msgspec.field(default_factory=dict)

    def in_language(self, language: str | None) -> tuple[str, str]:
        """(title, body) in ``language`` when translated, else the article's own."""
        t = self.translations.get(language or "")
        return (t.title, t.body or self.body) if t is not None and t.title else (self.title, self.body)


CONTENT_FIELDS: tuple[str, ...] = ArticleContent.__struct_fields__


class Article(ArticleContent, kw_only=True):
    """A stored article: head content plus bookkeeping. ``live_version`` is what search serves."""

    id: str
    version: int
    status: Status
    live_version: int | None = None
    created_at: datetime
    updated_at: datetime
    created_by: str = ""
    updated_by: str = ""

    def content(self) -> ArticleContent:
        return ArticleContent(**{f: getattr(self, f) for f in CONTENT_FIELDS})


class ArticleVersion(msgspec.Struct, kw_only=True):
    article_id: str
    version: int
    status: Status
    author: str
    created_at: datetime
    note: str = ""
    content: ArticleContent


class VersionSummary(msgspec.Struct, kw_only=True):
    version: int
    status: Status
    author: str
    created_at: datetime
    note: str = ""
    live: bool = False


class FieldError(msgspec.Struct):
    field: str
    message: str


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Size limits; oversize input is rejected, never truncated."""

    max_title_chars: int = 200
    max_body_chars: int = 30_000
    max_variants: int = 200
    max_variant_chars: int = 200
    max_list_items: int = 50
    max_item_chars: int = 64


# ---------------------------------------------------------------- domain errors


class KbError(Exception):
    """Base of knowledge-base errors; ``code`` is stable for API clients."""

    code = "kb_error"

    def __init__(self, message: str, details: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ArticleNotFound(KbError):
    code = "article_not_found"


class ArticleExists(KbError):
    code = "article_exists"


class VersionConflict(KbError):
    code = "version_conflict"


class InvalidTransition(KbError):
    code = "invalid_transition"


class InvalidArticle(KbError):
    code = "invalid_article"


class ArticleTooLarge(KbError):
    code = "body_too_large"


# ---------------------------------------------------------------- helpers


def check_transition(current: str, target: str) -> None:
    allowed = TRANSITIONS.get(current, ())
    if target not in allowed:
        raise InvalidTransition(
            f"cannot move an article from {current!r} to {target!r}; allowed: {list(allowed)}",
            {"from": current, "to": target, "allowed": list(allowed)},
        )


def valid_id(article_id: str) -> bool:
    return bool(_ID.match(article_id))


def _clean_list(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        s = item.strip()
        if s and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def clean_content(content: ArticleContent) -> ArticleContent:
    """Strip whitespace and drop empty/duplicate list items, so two spellings of one edit compare equal."""
    return msgspec.structs.replace(
        content,
        title=content.title.strip(),
        body=content.body.strip(),
        variants=_clean_list(content.variants),
        category=_clean_list(content.category),
        tags=_clean_list(content.tags),
        keywords=_clean_list(content.keywords),
        channels=_clean_list(content.channels),
        intents=_clean_list(content.intents),
        products=_clean_list(content.products),
        pages=_clean_list(content.pages),
        translations={lang.strip().lower(): ArticleTranslation(title=t.title.strip(), body=t.body.strip(),
                                                               variants=_clean_list(t.variants))
                      for lang, t in content.translations.items()},
    )


def validate_content(content: ArticleContent, limits: Limits) -> list[FieldError]:
    """Every problem at once (an import reports all of a row's errors, not the first)."""
    errors: list[FieldError] = []
    if not content.title.strip():
        errors.append(FieldError("title", "must not be empty"))
    elif len(content.title) > limits.max_title_chars:
        errors.append(FieldError("title", f"{len(content.title)} characters; the limit is {limits.max_title_chars}"))
    if len(content.body) > limits.max_body_chars:
        errors.append(FieldError("body", f"{len(content.body)} characters; the limit is {limits.max_body_chars}"))
    if len(content.variants) > limits.max_variants:
        errors.append(FieldError("variants", f"{len(content.variants)} variants; the limit is {limits.max_variants}"))
    for i, v in enumerate(content.variants):
        if len(v) > limits.max_variant_chars:
            errors.append(FieldError(f"variants[{i}]", f"longer than {limits.max_variant_chars} characters"))
    for name in ("category", "tags", "keywords", "channels", "intents", "products", "pages"):
        items = getattr(content, name)
        if len(items) > limits.max_list_items:
            errors.append(FieldError(name, f"{len(items)} items; the limit is {limits.max_list_items}"))
        for i, item in enumerate(items):
            if len(item) > (limits.max_item_chars if name != "pages" else 256):
                errors.append(FieldError(f"{name}[{i}]", "item too long"))
    if not -1.0 <= content.boost <= 1.0:
        errors.append(FieldError("boost", "must be between -1 and 1"))
    if len(content.translations) > 10:
        errors.append(FieldError("translations", "at most 10 languages"))
    for lang, t in content.translations.items():
        where = f"translations.{lang}"
        if not _LANGUAGE.match(lang):
            errors.append(FieldError(where, "a language code such as en or zh-hant"))
        if not t.title.strip() or len(t.title) > limits.max_title_chars:
            errors.append(FieldError(f"{where}.title", f"must be 1..{limits.max_title_chars} characters"))
        if len(t.body) > limits.max_body_chars:
            errors.append(FieldError(f"{where}.body", f"{len(t.body)} characters; the limit is {limits.max_body_chars}"))
        if len(t.variants) > limits.max_variants or any(len(v) > limits.max_variant_chars for v in t.variants):
            errors.append(FieldError(f"{where}.variants", f"at most {limits.max_variants} of "
                                                          f"{limits.max_variant_chars} characters"))
    for i, m in enumerate(content.media):
        if not m.url.strip() or len(m.url) > 2048:
            errors.append(FieldError(f"media[{i}].url", "must be 1..2048 characters"))
    return errors


def check_content(content: ArticleContent, limits: Limits) -> ArticleContent:
    """Clean and validate; oversize bodies raise :class:`ArticleTooLarge`, other problems :class:`InvalidArticle`."""
    content = clean_content(content)
    errors = validate_content(content, limits)
    if errors:
        details = [msgspec.to_builtins(e) for e in errors]
        if any(e.field == "body" for e in errors):
            raise ArticleTooLarge(f"article body over {limits.max_body_chars} characters",
                                  {"limit": limits.max_body_chars, "errors": details})
        raise InvalidArticle("; ".join(f"{e.field}: {e.message}" for e in errors), details)
    return content


class FieldDiff(msgspec.Struct):
    field: str
    before: object
    after: object
    unified: list[str] = msgspec.field(default_factory=list)  # line diff for text fields


def diff_content(a: ArticleContent, b: ArticleContent, from_label: str = "a", to_label: str = "b") -> list[FieldDiff]:
    """Field-by-field changes from ``a`` to ``b``; text fields also get a unified line diff."""
    out: list[FieldDiff] = []
    for name in CONTENT_FIELDS:
        before, after = getattr(a, name), getattr(b, name)
        if before == after:
            continue
        unified: list[str] = []
        if isinstance(before, str):
            unified = list(difflib.unified_diff(before.splitlines(), after.splitlines(), from_label, to_label,
                                                lineterm="", n=1))
        out.append(FieldDiff(name, msgspec.to_builtins(before), msgspec.to_builtins(after), unified))
    return out


def transition_role(current: str, target: str) -> str | None:
    """The role a move needs; ``None`` for moves that are not allowed at all (the store says why)."""
    return TRANSITION_ROLE.get((current, target))
