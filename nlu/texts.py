"""Texts a bot says, in one language or several: ``"您好"`` or ``{zh: "您好", en: "Hello"}``.

Domain files give a reply, a label or a prompt either as one string (the domain's language) or as
a mapping by language code; :func:`pick_text` chooses the customer's language and falls back to
the domain's default language only where no translation exists.
"""

from __future__ import annotations

Text = str | dict[str, str]  # one text, or per language: {zh: ..., en: ...}
DEFAULT_LANGUAGE = "zh"


def pick_text(text: Text | None, language: str | None = None, default: str = DEFAULT_LANGUAGE) -> str:
    """The text in ``language``; else in ``default``; else the first one given; "" for none."""
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    return text.get(language or default) or text.get(default) or next(iter(text.values()), "")


def has_language(text: Text | None, language: str, default: str = DEFAULT_LANGUAGE) -> bool:
    """Whether ``text`` can be said in ``language`` without falling back (a plain string counts as
    the domain's ``default`` language only)."""
    if text is None:
        return False
    if isinstance(text, str):
        return language == default
    return bool(text.get(language))
