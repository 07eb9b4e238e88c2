"""Feedback that carries over to new queries: what *similar* past queries clicked and resolved.

The per-article quality in :mod:`~lingxi.retrieval.feedback` is the same whatever the customer
asked, so it can push down an article that rarely helps but cannot tell which article answers
*this* question. Customers ask the same thing in many words, though, and the outcomes of earlier
searches are evidence for later ones that mean the same ("learning to rank from clicks" through
query similarity, a.k.a. click-through expansion):

* every search that received feedback becomes a remembered query (its normalised text and
  embedding, from the encoder the index uses) with per-(query, article) counters: clicks,
  bounces (short dwell), resolved and not-resolved votes;
* a new query looks up its ``neighbours`` most similar remembered queries; each counts with a
  weight ``exp((cos - 1) / temperature)``, so close paraphrases dominate;
* per candidate article, the boost is the weighted share of the neighbours' explicit evidence
  that speaks for it (resolved votes, good clicks) minus what speaks against it (not-resolved
  votes, bounces), times ``strength``. A pseudo-weight at ``reference_similarity`` in the
  denominator shrinks evidence that only distant queries provide towards no boost. Articles no
  neighbour has evidence on get none; impressions alone are not evidence (they are the ranker's
  own doing, and skipping across *different* questions says little).

Measured with the replay simulator (``evals/replay.py``; figures in ``evals/RESULTS.md``): on
StackFAQ the memory cuts the held-out error; the per-article quality factor alone does not help
there, because every FAQ is the right answer to some questions and a distractor for others.

The memory is a fold over the feedback events (the ``query`` arrives with a search's impressions
and clicks/votes are joined by ``search_id``), so it can be rebuilt or caught up from the
durable event store at any time (:meth:`ClickMemory.sync`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import numpy as np

from lingxi.nlu.encoders import Encoder
from lingxi.nlu.normalize import Normalizer
from lingxi.training.events import FEEDBACK_TYPES, EventStore

from .feedback import FeedbackEvent, Stats, examination, from_store_event


class ClickMemoryConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How far feedback travels between queries and how hard it may push.

    A remembered query at cosine ``s`` counts with weight ``exp((s - 1) / temperature)``: with
    multilingual-e5 (paraphrases ≈ 0.9–0.95, unrelated questions ≈ 0.8–0.87) and 0.02, a close
    paraphrase outweighs a loosely related question 10–100×. ``reference_similarity`` is the
    prior: evidence from neighbours much less similar than it is diluted towards no boost.
    """

    neighbours: int = 20
    temperature: float = 0.02
    reference_similarity: float = 0.90
    strength: float = 1.0  # the largest boost (a factor e ≈ 2.7), reached with unanimous close evidence
    click_weight: float = 0.5  # a good click is half a "resolved" vote; a bounce half a "not resolved"
    position_eta: float = 1.0
    short_dwell_ms: int = 10_000
    max_searches: int = 200_000  # search_id → query links kept for late clicks/votes


def _add(s: Stats, e: FeedbackEvent, cfg: ClickMemoryConfig) -> None:
    if e.type == "impression":
        s.impressions += 1
        s.examinations += examination(e.rank or 1, cfg.position_eta)
    elif e.type == "click":
        s.clicks += 1
    elif e.type == "dwell":
        if (e.dwell_ms or 0) < cfg.short_dwell_ms:
            s.short_dwells += 1
    elif e.resolved:
        s.resolved += 1
    else:
        s.not_resolved += 1


def _net(s: Stats, click_weight: float) -> float:
    """Signed evidence that the article answered the query: votes, plus good clicks minus bounces at a discount."""
    return s.resolved - s.not_resolved + click_weight * (s.good_clicks - s.short_dwells)


def _mass(s: Stats, click_weight: float) -> float:
    """How much explicit evidence there is at all (impressions alone are not evidence: they are the ranker's doing)."""
    return s.resolved + s.not_resolved + click_weight * s.clicks


class ClickMemory:
    """``observe(events)`` folds feedback in; ``boosts(query, article_ids)`` reads it for a new query."""

    def __init__(self, encoder: Encoder, config: ClickMemoryConfig | None = None) -> None:
        self.encoder = encoder
        self.config = config or ClickMemoryConfig()
        self._normalize = Normalizer()
        self._texts: list[str] = []
        self._row_of: dict[str, int] = {}
        self._vectors = np.zeros((0, encoder.dim), np.float32)
        self._stats: list[dict[str, Stats]] = []  # per remembered query: article → counters
        self._search_row: dict[str, int] = {}
        self._cursor = 0  # last event id read by :meth:`sync`
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """How many distinct queries are remembered."""
        return len(self._texts)

    # ------------------------------------------------------------------ writing
    def _add_rows(self, texts: Sequence[str]) -> None:
        new = [t for t in dict.fromkeys(texts) if t not in self._row_of]
        if not new:
            return
        vectors = np.asarray(self.encoder.encode(new, "query"), np.float32)
        for t in new:
            self._row_of[t] = len(self._texts)
            self._texts.append(t)
            self._stats.append({})
        self._vectors = np.vstack([self._vectors, vectors])

    def observe(self, events: Iterable[FeedbackEvent]) -> int:
        """Fold events in; returns how many were attributed to a query (the others are skipped).

        An event belongs to its own ``query``, or to the query of its ``search_id`` (learned from
        any event of that search that carries one, in this batch or an earlier one).
        """
        events = list(events)
        with self._lock:
            search_text: dict[str, str] = {}
            for e in events:
                if e.query and e.query.strip() and e.search_id:
                    search_text.setdefault(e.search_id, self._normalize(e.query))
            texts = [self._normalize(e.query) if e.query and e.query.strip() else search_text.get(e.search_id or "", "")
                     for e in events]
            self._add_rows([t for t in texts if t])
            for sid, text in search_text.items():
                self._search_row[sid] = self._row_of[text]
            if len(self._search_row) > self.config.max_searches:  # forget the oldest links
                for sid in list(self._search_row)[: len(self._search_row) - self.config.max_searches]:
                    del self._search_row[sid]
            used = 0
            for e, text in zip(events, texts, strict=True):
                row = self._row_of[text] if text else self._search_row.get(e.search_id or "")
                if row is not None:
                    _add(self._stats[row].setdefault(e.article_id, Stats()), e, self.config)
                    used += 1
        return used

    def sync(self, store: EventStore, tenant: str = "default", batch: int = 5000) -> int:
        """Catch up from the durable event store (feedback events after the last one read)."""
        total = 0
        while True:
            new = store.read(self._cursor, batch, FEEDBACK_TYPES, tenant=tenant)
            if not new:
                return total
            self._cursor = new[-1].seq
            total += self.observe(from_store_event(e) for e in new)

    # ------------------------------------------------------------------ reading
    def positive_pairs(self) -> list[tuple[str, str]]:
        """(remembered query, article id) wherever the explicit evidence says the article answered
        the query (resolved votes and good clicks outweigh not-resolved votes and bounces): what the
        feedback can teach the encoder (``training.finetune.finetune_on_pairs``)."""
        with self._lock:
            return [(self._texts[row], a) for row, stats in enumerate(self._stats) for a, s in stats.items()
                    if _net(s, self.config.click_weight) > 0]

    def _weight(self, similarity: float) -> float:
        return math.exp((similarity - 1.0) / self.config.temperature)

    def neighbours(self, query_vector: np.ndarray) -> list[tuple[int, float]]:
        """(row, cosine) of the ``neighbours`` most similar remembered queries, best first."""
        if not self._texts:
            return []
        sims = self._vectors @ np.asarray(query_vector, np.float32).reshape(-1)
        k = min(self.config.neighbours, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        return [(int(r), float(sims[r])) for r in top[np.argsort(-sims[top])]]

    def boosts(self, query: str | np.ndarray, article_ids: Iterable[str]) -> dict[str, float]:
        """Boost per article in ``article_ids`` for a query (its text, or its vector from the same encoder).

        ``strength · Σ_j w_j·net_j(a) / (Σ_j w_j·mass_j + w(reference_similarity))``: the weighted
        share of similar queries' explicit evidence that speaks for (or against) the article.
        Articles no neighbour has evidence on are left out (no boost).
        """
        cfg = self.config
        vector = self.encoder.encode([self._normalize(query)], "query")[0] if isinstance(query, str) else query
        wanted = set(article_ids)
        net: dict[str, float] = {}
        mass = self._weight(cfg.reference_similarity)
        with self._lock:
            for row, sim in self.neighbours(vector):
                w = self._weight(sim)
                for a, s in self._stats[row].items():
                    mass += w * _mass(s, cfg.click_weight)
                    if a in wanted:
                        net[a] = net.get(a, 0.0) + w * _net(s, cfg.click_weight)
        return {a: cfg.strength * v / mass for a, v in net.items() if v}


def combine(*parts: Mapping[str, float]) -> dict[str, float]:
    """Sum boosts from several sources (article quality + click memory)."""
    out: dict[str, float] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0.0) + v
    return out
