"""Text normalisation: the one place where raw customer input becomes comparable text.

Customers type full-width letters (ａｐｐ登录), traditional characters (帳號), stray zero-width
characters pasted from other apps, repeated punctuation (？？？) and emoji. Everything downstream
(encoder, keyword rules, entities, BM25) sees the output of :class:`Normalizer`, so a rule written
as ``app登录`` also fires for ``ＡＰＰ登錄``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache, cached_property

_WS = re.compile(r"\s+")
# a run of 2+ identical punctuation marks ("？？？", "!!!", "。。。") collapses to one
_REPEATED_PUNCT = re.compile(r"([!?,.;:~。，！？；：、…])\1+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class NormalizerConfig:
    """Switches are recorded in the model bundle so training and serving normalise alike."""

    nfkc: bool = True
    casefold: bool = True
    traditional_to_simplified: bool = True
    collapse_punctuation: bool = True
    strip_emoji: bool = False


def _is_emoji(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x1F000 <= cp <= 0x1FAFF
        or 0x2600 <= cp <= 0x27BF
        or 0x1F900 <= cp <= 0x1F9FF
        or cp in (0x200D, 0xFE0F, 0x20E3)
    )


def _drop_control(text: str, strip_emoji: bool) -> str:
    out: list[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\t\n\r\f\v":
            out.append(" ")
        elif cat in ("Cc", "Cs", "Co", "Cn") or cat == "Cf" and ch != "\u200d" or strip_emoji and _is_emoji(ch):
            continue
        else:
            out.append(ch)
    return "".join(out)


class Normalizer:
    """Callable ``text -> normalised text``. Cheap to build; OpenCC loads on first use."""

    def __init__(self, config: NormalizerConfig | None = None) -> None:
        self.config = config or NormalizerConfig()

    @cached_property
    def _t2s(self):
        import opencc

        return opencc.OpenCC("t2s")

    def __call__(self, text: str) -> str:
        cfg = self.config
        if cfg.nfkc:
            text = unicodedata.normalize("NFKC", text)  # full-width → half-width, ligatures, ...
        text = _drop_control(text, cfg.strip_emoji)
        if cfg.traditional_to_simplified and _HAN.search(text):
            text = self._t2s.convert(text)
        if cfg.casefold:
            text = text.casefold()
        if cfg.collapse_punctuation:
            text = _REPEATED_PUNCT.sub(r"\1", text)
        return _WS.sub(" ", text).strip()


def detect_language(text: str) -> str:
    """``zh`` if Han characters make up a real part of the letters, ``en`` for Latin-only text.

    Mixed input such as ``app登录不了`` counts as Chinese: the customer writes Chinese with an
    English product word. ``und`` when there are no letters at all (digits, emoji).
    """
    han = len(_HAN.findall(text))
    latin_words = len(re.findall(r"[A-Za-z]+", text))
    if han == 0 and latin_words == 0:
        return "und"
    if han >= 1 and han >= latin_words:
        return "zh"
    if han == 0:
        return "en"
    return "zh" if han * 2 >= latin_words else "en"


def fold_width(text: str) -> str:
    """Full-width → half-width per character, keeping the length (and so character offsets).

    Entity spans must point into the text the customer sent; full normalisation can change the
    length (whitespace collapsing, NFKC expansions), this never does.
    """
    out: list[str] = []
    for ch in text:
        folded = unicodedata.normalize("NFKC", ch)
        out.append(folded if len(folded) == 1 else ch)
    return "".join(out)


@cache
def _converter(config: str):
    import opencc

    return opencc.OpenCC(config)


def is_traditional(text: str) -> bool:
    """Whether the text is written in traditional characters (some of its Han characters have a
    different simplified form): 優惠券怎麼用 yes, 优惠券怎么用 and 好的 no."""
    han = "".join(_HAN.findall(text))
    return bool(han) and _converter("t2s").convert(han) != han


def to_traditional(text: str) -> str:
    """Simplified → traditional characters (OpenCC ``s2t``), for domains that answer in kind."""
    return _converter("s2t").convert(text) if _HAN.search(text) else text
