"""Knowledge search: dense + BM25 candidates, fusion, boosts, and an explanation of every score.

``final = relevance × exp(priority + personal + feedback)`` where ``relevance`` is the fused score
(:mod:`~lingxi.retrieval.fusion`), ``priority`` the editor's search boost, ``personal`` matches
between the article and the visitor's recent pages/products/tags, and ``feedback`` the bounded
quality factor from :mod:`~lingxi.retrieval.feedback`. Multiplying keeps boosts proportional:
they reorder close candidates and never lift an irrelevant article to the top on their own.
"""

from __future__ import annotations

import html
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from urllib.parse import urlparse

import msgspec
import numpy as np

from lingxi.nlu.normalize import fold_width

from .articles import Article, KbError
from .chunking import Unit
from .fusion import FusedHit, FusionConfig, HybridFuser
from .index import KbIndex

_CJK = re.compile(r"[\u3400-\u9fff]")


class InvalidQuery(KbError):
    code = "invalid_query"


class RankingConfig(msgspec.Struct, frozen=True, kw_only=True):
    priority_weight: float = 0.3  # boost 1.0 (the maximum) multiplies by e^0.3 ≈ 1.35
    page_boost: float = 0.2
    product_boost: float = 0.2
    tag_boost: float = 0.1
    personal_cap: float = 0.4
    use_feedback: bool = True
    max_query_chars: int = 500
    max_top_k: int = 50


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    query: str
    channel: str | None = None
    visitor_tags: list[str] = msgspec.field(default_factory=list)
    recent_pages: list[str] = msgspec.field(default_factory=list)
    recent_products: list[str] = msgspec.field(default_factory=list)
    intent: str | None = None
    top_k: int = 5


class Why(msgspec.Struct, kw_only=True):
    """Why a result ranked where it did. Scores are ``None`` when that retriever did not find it."""

    dense: float | None
    dense_rank: int | None
    sparse: float | None
    sparse_rank: int | None
    fusion: str
    relevance: float
    boosts: dict[str, float]
    final: float
    matched_terms: list[str]
    matched_by: str  # the unit that matched best: title / variant / body


class SearchHit(msgspec.Struct, kw_only=True):
    rank: int
    article_id: str
    title: str
    score: float
    passage: str
    highlighted: str  # HTML-escaped passage with <mark> around query terms
    highlights: list[tuple[int, int]]  # character spans in ``passage``
    matched_question: str | None  # the title or variant that matched, if one did
    category: list[str]
    tags: list[str]
    why: Why


class SearchResponse(msgspec.Struct, kw_only=True):
    search_id: str
    query: str
    results: list[SearchHit]
    revision: int
    took_ms: float


def validate_request(req: SearchRequest, cfg: RankingConfig) -> None:
    if not req.query.strip():
        raise InvalidQuery("`query` must contain at least one non-space character")
    if len(req.query) > cfg.max_query_chars:
        raise InvalidQuery(f"`query` has {len(req.query)} characters; the limit is {cfg.max_query_chars}")
    if not 1 <= req.top_k <= cfg.max_top_k:
        raise InvalidQuery(f"`top_k` must be 1..{cfg.max_top_k}")
    for name in ("visitor_tags", "recent_pages", "recent_products"):
        items = getattr(req, name)
        if len(items) > 50 or any(len(i) > 512 for i in items):
            raise InvalidQuery(f"`{name}`: at most 50 items of at most 512 characters")


def visible(article: Article, channel: str | None) -> bool:
    return not article.channels or channel is None or channel in article.channels


def _path(page: str) -> str:
    parsed = urlparse(page)
    return (parsed.path or page).rstrip("/") or "/"


def personal_boosts(article: Article, req: SearchRequest, cfg: RankingConfig) -> dict[str, float]:
    """Boosts from the visitor's context; each names what matched so the explanation is readable."""
    out: dict[str, float] = {}
    if article.pages and req.recent_pages:
        paths = [_path(p) for p in req.recent_pages]
        if any(p == pre.rstrip("/") or p.startswith(pre.rstrip("/") + "/") for p in paths for pre in article.pages):
            out["recent_page"] = cfg.page_boost
    if req.recent_products:
        mine = {x.casefold() for x in (*article.products, *article.tags, *article.keywords)}
        if any(p.casefold() in mine for p in req.recent_products):
            out["recent_product"] = cfg.product_boost
    if req.visitor_tags and set(req.visitor_tags) & set(article.tags):
        out["visitor_tag"] = cfg.tag_boost
    total = sum(out.values())
    if total > cfg.personal_cap:
        out = {k: v * cfg.personal_cap / total for k, v in out.items()}
    return out


def highlight(text: str, terms: Sequence[str]) -> tuple[list[tuple[int, int]], str]:
    """Spans of ``terms`` in ``text`` (width- and case-insensitive) and the HTML with ``<mark>``.

    Single-character terms (到, 账, "a") are skipped when the query has longer ones: marking every
    occurrence of one character helps nobody.
    """
    folded = fold_width(text).lower()
    spans: list[tuple[int, int]] = []
    longest = max((len(t) for t in terms), default=0)
    for term in sorted(set(terms), key=len, reverse=True):
        t = term.lower()
        if not t.strip() or (len(t) == 1 and (longest > 1 or not _CJK.match(t))):
            continue
        start = 0
        while (pos := folded.find(t, start)) >= 0:
            spans.append((pos, pos + len(t)))
            start = pos + len(t)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    parts, cur = [], 0
    for s, e in merged:
        parts.append(html.escape(text[cur:s]))
        parts.append(f"<mark>{html.escape(text[s:e])}</mark>")
        cur = e
    parts.append(html.escape(text[cur:]))
    return merged, "".join(parts)


def _best_units(index: KbIndex, hit: FusedHit) -> tuple[Unit | None, Unit | None]:
    """(matched question unit or None, body passage unit or None) for the hit."""
    matched = [index.unit(u) for u in (hit.dense_unit, hit.sparse_unit) if u is not None]
    matched = [u for u in matched if u is not None]
    question = next((u for u in matched if u.kind in ("title", "variant")), None)
    body = next((u for u in matched if u.kind == "body"), None)
    if body is None:
        body = next((u for u in index.units_of(hit.doc_id) if u.kind == "body"), None)
    return question, body


class KnowledgeSearch:
    """Compose an index, a fuser, feedback and boosts into ranked, explained results.

    ``articles`` maps each indexed id to its live article; ``feedback_boosts(ids, intent)`` returns
    the quality boost per id (or nothing when feedback is off).
    """

    def __init__(self, fusion: FusionConfig | None = None, ranking: RankingConfig | None = None) -> None:
        self.fusion = fusion or FusionConfig()
        self.ranking = ranking or RankingConfig()
        self._fuser = HybridFuser(self.fusion)

    def search(self, req: SearchRequest, index: KbIndex, articles: Mapping[str, Article],
               feedback_boosts: Callable[[Sequence[str], str | None], Mapping[str, float]] | None = None,
               query_vector: np.ndarray | None = None, exclude_units: AbstractSet[int] = frozenset()
               ) -> SearchResponse:
        """``query_vector``: the query's embedding when the caller already has it from the index's
        encoder (a conversation turn reuses the intent model's e5 part); ``exclude_units``: units to
        leave out (leave-one-out calibration)."""
        started = time.perf_counter()
        validate_request(req, self.ranking)
        analyzer = index.analyzer
        normalized = analyzer.normalize(req.query)
        terms = analyzer.terms(normalized, normalized=True)
        qvec = index.encode_queries([req.query]) if query_vector is None else np.atleast_2d(query_vector)

        def allowed(doc_id: str) -> bool:
            article = articles.get(doc_id)
            return article is not None and visible(article, req.channel)

        depth = self.fusion.depth
        dense = index.dense_search(qvec, depth, allowed, exclude_units)[0]
        sparse = index.sparse_search(terms, depth, allowed, exclude_units) if terms else []
        fused = self._fuser.run(dense, sparse)
        fb = (feedback_boosts([h.doc_id for h in fused], req.intent)
              if feedback_boosts is not None and self.ranking.use_feedback else {})

        scored: list[tuple[float, FusedHit, dict[str, float]]] = []
        for hit in fused:
            article = articles[hit.doc_id]
            boosts: dict[str, float] = {}
            if article.boost:
                boosts["priority"] = self.ranking.priority_weight * article.boost
            boosts.update(personal_boosts(article, req, self.ranking))
            if fb.get(hit.doc_id):
                boosts["feedback"] = fb[hit.doc_id]
            final = hit.score * math.exp(sum(boosts.values()))
            scored.append((final, hit, boosts))
        scored.sort(key=lambda x: (-x[0], x[1].dense_rank or 10**9))

        results: list[SearchHit] = []
        for final, hit, boosts in scored[: req.top_k]:
            article = articles[hit.doc_id]
            question, body = _best_units(index, hit)
            passage = body.text if body else (question.text if question else article.title)
            spans, marked = highlight(passage, terms)
            matched_by = "none"
            best_id = hit.dense_unit if hit.dense_unit is not None else hit.sparse_unit
            best_unit = index.unit(best_id) if best_id is not None else None
            if best_unit is not None:
                matched_by = best_unit.kind
            folded = fold_width(passage).lower() + "\n" + (fold_width(question.text).lower() if question else "")
            matched_terms = sorted({t for t in terms if t.lower() in folded})
            why = Why(dense=hit.dense, dense_rank=hit.dense_rank, sparse=hit.sparse, sparse_rank=hit.sparse_rank,
                      fusion=self.fusion.label(), relevance=round(hit.score, 6),
                      boosts={k: round(v, 4) for k, v in boosts.items()}, final=round(final, 6),
                      matched_terms=matched_terms, matched_by=matched_by)
            results.append(SearchHit(
                rank=len(results) + 1, article_id=article.id, title=article.title, score=round(final, 6),
                passage=passage, highlighted=marked, highlights=spans,
                matched_question=question.text if question else None,
                category=list(article.category), tags=list(article.tags), why=why))
        return SearchResponse(search_id=uuid.uuid4().hex, query=req.query, results=results, revision=index.revision_,
                              took_ms=round((time.perf_counter() - started) * 1000, 2))
