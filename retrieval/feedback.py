"""Feedback on search results → smoothed article quality → a bounded rerank factor, and editing flags.

Events (stable wire names): ``impression`` (shown at ``rank``), ``click``, ``dwell`` (time on the
article after a click) and ``vote`` (``resolved`` true/false). They are stored durably and folded
into counters per article and per (intent, article).

Why these estimators:

* **Position bias.** A result at rank 5 is looked at far less than one at rank 1, so raw CTR
  punishes whatever ranks low. Each impression counts as ``θ(rank) = rank^-η`` *examinations*
  (η = 1, the usual power-law examination model), and CTR is clicks per examination
  ("clicks over expected clicks").
* **Bayesian smoothing.** CTR and resolution rate are Beta-smoothed towards the collection's rate
  with ``m`` pseudo-observations, so three lucky clicks do not outrank a proven article. The
  per-(intent, article) estimate is smoothed towards the article's own, so sparse intent data
  falls back to what is known about the article.
* **Dwell and votes.** A click followed by a very short dwell (< ``short_dwell_ms``) is a bounce,
  and a click followed by a "not resolved" vote did not satisfy either; neither counts as a good
  click. Customers click the first result whatever it is, so clicks alone would reward rank 1.

The rerank factor is ``exp(boost)`` with ``boost = a·ln(ctr/ctr₀) + b·ln(res/res₀)`` clipped to
[``min_boost``, ``max_boost``]. The clip is asymmetric on purpose: good feedback can lift an
article about 2× (enough to pass a close competitor, not an irrelevant one to the top), while an
article that many customers say did not help can sink far, below clearly weaker matches. Because
of the smoothing, a big penalty needs many votes. An article is *flagged* for editing when enough
votes say it does not resolve.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import msgspec
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.engine import Connection

from .articles import KbError

EventType = Literal["impression", "click", "dwell", "vote"]
ALL_INTENTS = ""  # the intent key of per-article counters

fb_metadata = MetaData()

events_t = Table(
    "kb_feedback_events", fb_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("type", String(16), nullable=False),
    Column("article_id", String(64), nullable=False, index=True),
    Column("search_id", String(64), nullable=True),
    Column("query", Text, nullable=True),
    Column("intent", String(64), nullable=True),
    Column("rank", Integer, nullable=True),
    Column("dwell_ms", Integer, nullable=True),
    Column("resolved", Integer, nullable=True),
    Column("channel", String(64), nullable=True),
    Column("visitor_id", String(128), nullable=True),
)

stats_t = Table(
    "kb_feedback_stats", fb_metadata,
    Column("article_id", String(64), nullable=False),
    Column("intent", String(64), nullable=False),
    Column("impressions", Integer, nullable=False, default=0),
    Column("examinations", Float, nullable=False, default=0.0),
    Column("clicks", Integer, nullable=False, default=0),
    Column("short_dwells", Integer, nullable=False, default=0),
    Column("resolved", Integer, nullable=False, default=0),
    Column("not_resolved", Integer, nullable=False, default=0),
    PrimaryKeyConstraint("article_id", "intent"),
)

queries_t = Table(
    "kb_query_stats", fb_metadata,
    Column("query", String(200), nullable=False),
    Column("day", String(10), nullable=False),
    Column("count", Integer, nullable=False, default=0),
    PrimaryKeyConstraint("query", "day"),
)

_COUNTERS = ("impressions", "examinations", "clicks", "short_dwells", "resolved", "not_resolved")


class InvalidFeedback(KbError):
    code = "invalid_feedback"


class FeedbackEvent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: EventType
    article_id: str
    rank: int | None = None
    search_id: str | None = None
    query: str | None = None
    intent: str | None = None
    dwell_ms: int | None = None
    resolved: bool | None = None
    channel: str | None = None
    visitor_id: str | None = None
    at: datetime | None = None


class QualityConfig(msgspec.Struct, frozen=True, kw_only=True):
    position_eta: float = 1.0
    short_dwell_ms: int = 10_000
    ctr_prior_strength: float = 20.0  # pseudo-examinations
    resolution_prior_strength: float = 5.0  # pseudo-votes
    default_ctr: float = 0.1  # prior collection rates, outweighed as feedback accumulates
    default_resolution: float = 0.6
    collection_prior_examinations: float = 100.0
    collection_prior_votes: float = 50.0
    click_weight: float = 0.5
    resolution_weight: float = 1.0
    max_boost: float = 0.7
    min_boost: float = -2.0
    flag_min_votes: int = 5
    flag_max_resolution: float = 0.4


class Stats(msgspec.Struct, kw_only=True):
    impressions: int = 0
    examinations: float = 0.0
    clicks: int = 0
    short_dwells: int = 0
    resolved: int = 0
    not_resolved: int = 0

    @property
    def good_clicks(self) -> float:
        """Clicks that satisfied: not a bounce, and not followed by a "did not resolve" vote."""
        return max(0, self.clicks - self.short_dwells - self.not_resolved)

    @property
    def votes(self) -> int:
        return self.resolved + self.not_resolved


class Quality(msgspec.Struct, kw_only=True):
    """Smoothed estimates for one article (or one intent's view of it) and the boost they give."""

    ctr: float
    resolution: float
    boost: float
    impressions: int
    clicks: int
    votes: int
    resolved: int


class Flag(msgspec.Struct, kw_only=True):
    article_id: str
    resolution: float
    votes: int
    not_resolved: int
    reason: str


def examination(rank: int, eta: float) -> float:
    """Probability a result at ``rank`` (1-based) is looked at, relative to rank 1."""
    return float(max(1, rank)) ** -eta


def validate_event(e: FeedbackEvent) -> None:
    if not e.article_id.strip() or len(e.article_id) > 64:
        raise InvalidFeedback("`article_id` must be 1..64 characters")
    if e.type in ("impression", "click") and e.rank is not None and not 1 <= e.rank <= 1000:
        raise InvalidFeedback("`rank` must be 1..1000")
    if e.type == "impression" and e.rank is None:
        raise InvalidFeedback("an impression needs `rank` (1-based position shown)")
    if e.type == "dwell" and (e.dwell_ms is None or not 0 <= e.dwell_ms <= 86_400_000):
        raise InvalidFeedback("a dwell event needs `dwell_ms` between 0 and 86400000")
    if e.type == "vote" and e.resolved is None:
        raise InvalidFeedback("a vote needs `resolved` (true or false)")
    for name, limit in (("query", 500), ("intent", 64), ("search_id", 64), ("channel", 64), ("visitor_id", 128)):
        value = getattr(e, name)
        if value is not None and len(value) > limit:
            raise InvalidFeedback(f"`{name}` longer than {limit} characters")


def _increments(e: FeedbackEvent, cfg: QualityConfig) -> dict[str, float]:
    if e.type == "impression":
        return {"impressions": 1, "examinations": examination(e.rank or 1, cfg.position_eta)}
    if e.type == "click":
        return {"clicks": 1}
    if e.type == "dwell":
        return {"short_dwells": 1} if (e.dwell_ms or 0) < cfg.short_dwell_ms else {}
    return {"resolved": 1} if e.resolved else {"not_resolved": 1}


def _upsert_add(conn: Connection, table: Table, keys: dict[str, object], inc: dict[str, float]) -> None:
    """``INSERT ... ON CONFLICT DO UPDATE SET c = c + excluded.c`` on SQLite and PostgreSQL."""
    dialect = conn.dialect.name
    values = {**keys, **{col.name: 0 for col in table.columns if col.name not in keys}, **inc}
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        stmt = dialect_insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={c: table.c[c] + stmt.excluded[c] for c in inc})
        conn.execute(stmt)
        return
    where = [table.c[k] == v for k, v in keys.items()]
    updated = conn.execute(table.update().where(*where).values({c: table.c[c] + v for c, v in inc.items()}))
    if updated.rowcount == 0:
        conn.execute(insert(table).values(**values))


class QualityModel:
    """Turns counters into :class:`Quality` (an estimator over stats; ``fit`` takes the counters)."""

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        self.ctr0_ = self.config.default_ctr
        self.res0_ = self.config.default_resolution

    def fit(self, stats: dict[tuple[str, str], Stats]) -> QualityModel:
        """Collection rates, themselves shrunk towards the configured defaults.

        Without that, the first article with many votes *is* the collection average and looks
        normal however badly it does.
        """
        cfg = self.config
        overall = [s for (_, intent), s in stats.items() if intent == ALL_INTENTS]
        exams = sum(s.examinations for s in overall)
        clicks = sum(s.good_clicks for s in overall)
        votes = sum(s.votes for s in overall)
        resolved = sum(s.resolved for s in overall)
        m_c, m_r = cfg.collection_prior_examinations, cfg.collection_prior_votes
        self.ctr0_ = min(0.95, max(0.01, (clicks + m_c * cfg.default_ctr) / (exams + m_c)))
        self.res0_ = min(0.95, max(0.05, (resolved + m_r * cfg.default_resolution) / (votes + m_r)))
        return self

    def quality(self, s: Stats, ctr_prior: float | None = None, res_prior: float | None = None) -> Quality:
        cfg = self.config
        cp = self.ctr0_ if ctr_prior is None else ctr_prior
        rp = self.res0_ if res_prior is None else res_prior
        ctr = (s.good_clicks + cfg.ctr_prior_strength * cp) / (s.examinations + cfg.ctr_prior_strength)
        res = (s.resolved + cfg.resolution_prior_strength * rp) / (s.votes + cfg.resolution_prior_strength)
        ctr = min(max(ctr, 1e-4), 1.0)  # clicks can exceed expected examinations at rank 1
        boost = cfg.click_weight * math.log(ctr / self.ctr0_) + cfg.resolution_weight * math.log(res / self.res0_)
        boost = max(cfg.min_boost, min(cfg.max_boost, boost))
        return Quality(ctr=ctr, resolution=res, boost=boost, impressions=s.impressions, clicks=s.clicks,
                       votes=s.votes, resolved=s.resolved)


class FeedbackStore:
    """Durable events + counters, with an in-memory copy of the counters for ranking.

    Counters change in the same transaction as their event. Replicas sharing a database call
    :meth:`reload` now and then to see each other's feedback.
    """

    def __init__(self, engine: Engine, config: QualityConfig | None = None) -> None:
        self.engine = engine
        self.config = config or QualityConfig()
        self.model = QualityModel(self.config)
        self._stats: dict[tuple[str, str], Stats] = {}
        self._pending_queries: Counter[tuple[str, str]] = Counter()
        self._hot_cache: tuple[float, dict[str, int]] = (0.0, {})
        self._lock = threading.Lock()

    def create_schema(self) -> FeedbackStore:
        fb_metadata.create_all(self.engine)
        return self

    def reload(self) -> FeedbackStore:
        with self.engine.connect() as conn:
            rows = conn.execute(select(stats_t)).all()
        stats = {(r.article_id, r.intent): Stats(**{c: getattr(r, c) for c in _COUNTERS}) for r in rows}
        with self._lock:
            self._stats = stats
            self.model.fit(stats)
        return self

    # -- events
    def record(self, events: Sequence[FeedbackEvent]) -> int:
        """Store ``events`` (validated first: all or none) and update the counters."""
        for e in events:
            validate_event(e)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            for e in events:
                conn.execute(insert(events_t).values(
                    at=e.at or now, type=e.type, article_id=e.article_id, search_id=e.search_id, query=e.query,
                    intent=e.intent, rank=e.rank, dwell_ms=e.dwell_ms,
                    resolved=None if e.resolved is None else int(e.resolved), channel=e.channel,
                    visitor_id=e.visitor_id))
                inc = _increments(e, self.config)
                if not inc:
                    continue
                for intent in {ALL_INTENTS, e.intent or ALL_INTENTS}:
                    _upsert_add(conn, stats_t, {"article_id": e.article_id, "intent": intent}, inc)
        with self._lock:
            for e in events:
                inc = _increments(e, self.config)
                for intent in {ALL_INTENTS, e.intent or ALL_INTENTS}:
                    s = self._stats.setdefault((e.article_id, intent), Stats())
                    for c, v in inc.items():
                        setattr(s, c, getattr(s, c) + v)
            self.model.fit(self._stats)
        return len(events)

    # -- scores
    def stats(self, article_id: str, intent: str = ALL_INTENTS) -> Stats:
        return self._stats.get((article_id, intent), Stats())

    def quality(self, article_id: str, intent: str | None = None) -> Quality:
        """Article quality; with an intent, the (intent, article) estimate shrunk towards the article's."""
        with self._lock:
            base = self.model.quality(self._stats.get((article_id, ALL_INTENTS), Stats()))
            if not intent or (article_id, intent) not in self._stats:
                return base
            return self.model.quality(self._stats[(article_id, intent)], base.ctr, base.resolution)

    def boosts(self, article_ids: Iterable[str], intent: str | None = None) -> dict[str, float]:
        return {a: self.quality(a, intent).boost for a in article_ids}

    def flags(self) -> dict[str, Flag]:
        """Articles whose smoothed resolution rate is poor on enough votes: candidates for editing."""
        cfg = self.config
        out: dict[str, Flag] = {}
        with self._lock:
            items = [(a, s) for (a, intent), s in self._stats.items() if intent == ALL_INTENTS]
        for article_id, s in items:
            if s.votes < cfg.flag_min_votes:
                continue
            q = self.quality(article_id)
            if q.resolution <= cfg.flag_max_resolution:
                out[article_id] = Flag(article_id=article_id, resolution=q.resolution, votes=s.votes,
                                       not_resolved=s.not_resolved,
                                       reason=f"{s.not_resolved} of {s.votes} votes say it did not resolve the "
                                              f"question (smoothed resolution rate {q.resolution:.0%})")
        return out

    # -- hot queries
    def record_query(self, query: str, flush_every: int = 20) -> None:
        """Count a (normalised) search query for hot-query suggestions; written in small batches."""
        if not query or len(query) > 200:
            return
        with self._lock:
            self._pending_queries[(query, date.today().isoformat())] += 1
            due = sum(self._pending_queries.values()) >= flush_every
        if due:
            self.flush_queries()

    def flush_queries(self) -> None:
        with self._lock:
            pending, self._pending_queries = self._pending_queries, Counter()
        if not pending:
            return
        with self.engine.begin() as conn:
            for (query, day), n in pending.items():
                _upsert_add(conn, queries_t, {"query": query, "day": day}, {"count": n})
        self._hot_cache = (0.0, {})

    def hot_queries(self, days: int = 7, limit: int = 500, max_age_s: float = 60.0) -> dict[str, int]:
        """Query → count over the last ``days`` days (cached for ``max_age_s``), plus unflushed counts."""
        cached_at, cached = self._hot_cache
        if time.monotonic() - cached_at > max_age_s:
            since = (date.today() - timedelta(days=days - 1)).isoformat()
            with self.engine.connect() as conn:
                rows = conn.execute(select(queries_t.c.query, queries_t.c.count).where(queries_t.c.day >= since)).all()
            totals: Counter[str] = Counter()
            for q, n in rows:
                totals[q] += n
            cached = dict(totals.most_common(limit))
            self._hot_cache = (time.monotonic(), cached)
        with self._lock:
            extra = Counter(q for (q, _), n in self._pending_queries.items() for _ in range(n))
        if not extra:
            return cached
        merged = Counter(cached)
        merged.update(extra)
        return dict(merged.most_common(limit))
