"""Type-ahead: what to offer while the customer is still typing, cheap enough for every keystroke.

Everything is in memory: article titles and question variants of live articles, and hot queries
(frequent recent searches). Matching runs from cheap to expensive and stops once it has enough:
prefix (binary search over sorted normalised strings), substring (Chinese questions rarely start
with the word typed: "退款" should find "怎么申请退款"), then fuzzy (RapidFuzz ``partial_ratio``)
for typos such as 退宽多久 → 退款多久 (from three characters on; shorter input has too little to go on).

Hot queries come from customers, so they are only offered when several people searched them and
they do not look like personal data or links (:func:`lingxi.nlu.redact.contains_personal`).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from lingxi.nlu.redact import contains_personal

from .analysis import Analyzer
from .articles import Article

_PERSONAL = re.compile(r"\d{5,}|@|[a-z]{2}\d{8,}", re.IGNORECASE)


def _unsafe(query: str, normalized: str) -> bool:
    """A hot query is shown to every visitor: nothing that may be personal data or a link."""
    return bool(_PERSONAL.search(normalized)) or contains_personal(query) or contains_personal(normalized)

Match = Literal["prefix", "substring", "fuzzy"]
_MATCH_SCORE = {"prefix": 3.0, "substring": 2.0}
_KIND_SCORE = {"title": 0.3, "variant": 0.2, "hot": 0.1}


class Suggestion(msgspec.Struct, kw_only=True):
    text: str
    kind: Literal["title", "variant", "hot"]
    match: Match
    score: float
    article_id: str | None = None
    title: str | None = None


class _Entry(msgspec.Struct, frozen=True):
    text: str
    norm: str
    kind: str
    weight: float
    article_id: str | None
    title: str | None
    channels: tuple[str, ...]


class Suggester:
    """``rebuild(articles, hot)`` then ``suggest(prefix)``; a rebuild swaps all tables at once."""

    def __init__(self, analyzer: Analyzer | None = None, fuzzy_cutoff: float = 70.0, min_hot_count: int = 3,
                 max_hot: int = 2000) -> None:
        self.analyzer = analyzer or Analyzer()
        self.fuzzy_cutoff = fuzzy_cutoff
        self.min_hot_count = min_hot_count
        self.max_hot = max_hot
        self._entries: list[_Entry] = []
        self._sorted: list[tuple[str, int]] = []
        self._norms: list[str] = []

    def rebuild(self, articles: Iterable[Article], hot: Mapping[str, int] | None = None) -> Suggester:
        entries: list[_Entry] = []
        norm = self.analyzer.normalize
        for a in articles:
            weight = 0.2 * a.boost
            channels = tuple(a.channels)
            entries.append(_Entry(a.title, norm(a.title), "title", weight, a.id, a.title, channels))
            for v in a.variants:
                entries.append(_Entry(v, norm(v), "variant", weight, a.id, a.title, channels))
        known = {e.norm for e in entries}
        hot_items = sorted((hot or {}).items(), key=lambda kv: -kv[1])[: self.max_hot]
        for q, n in hot_items:
            nq = norm(q)
            if n < self.min_hot_count or not nq or nq in known or _unsafe(q, nq):
                continue
            known.add(nq)
            entries.append(_Entry(q, nq, "hot", 0.25 * math.log1p(n), None, None, ()))
        self._entries = entries
        self._norms = [e.norm for e in entries]
        self._sorted = sorted((e.norm, i) for i, e in enumerate(entries))
        return self

    @property
    def size(self) -> int:
        return len(self._entries)

    def suggest(self, text: str, channel: str | None = None, limit: int = 8) -> list[Suggestion]:
        q = self.analyzer.normalize(text)
        if not q or limit <= 0:
            return []
        entries, found = self._entries, {}

        def take(i: int, match: Match, quality: float) -> None:
            e = entries[i]
            if e.channels and channel is not None and channel not in e.channels:
                return
            score = quality + _KIND_SCORE[e.kind] + e.weight - len(e.norm) / 1000
            key = e.article_id or f"hot:{e.norm}"
            if key not in found or found[key].score < score:
                found[key] = Suggestion(text=e.text, kind=e.kind, match=match, score=round(score, 4),
                                        article_id=e.article_id, title=e.title)

        start = bisect.bisect_left(self._sorted, (q, -1))
        for norm, i in self._sorted[start:]:
            if not norm.startswith(q):
                break
            take(i, "prefix", _MATCH_SCORE["prefix"])
        if len(found) < limit:
            for i, norm in enumerate(self._norms):
                if q in norm and not norm.startswith(q):
                    take(i, "substring", _MATCH_SCORE["substring"])
        if len(found) < limit and len(q) >= 3:  # a typo in one of two characters is just another word
            from rapidfuzz import fuzz, process

            for _, score, i in process.extract(q, self._norms, scorer=fuzz.partial_ratio, limit=limit * 3,
                                               score_cutoff=self.fuzzy_cutoff):
                if q not in self._norms[i]:
                    take(i, "fuzzy", 1.5 * score / 100)
        return sorted(found.values(), key=lambda s: -s.score)[:limit]
