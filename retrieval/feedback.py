"""Feedback on search results → smoothed article quality → a bounded rerank factor, and editing flags.

Events (stable wire names): ``impression`` (shown at ``rank``), ``click``, ``dwell`` (time on the
article after a click) and ``vote`` (``resolved`` true/false). They live in the one event store
(:mod:`lingxi.training.events`), whatever brought them in (``POST /v1/feedback`` here, or
``POST /v1/events``), and are folded into counters per article and per (intent, article)
*incrementally*: :meth:`FeedbackStore.advance` reads the events after its cursor and adds them, in
the same transaction that moves the cursor, so every event counts exactly once.

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

* **Served impressions only.** Anything a browser sends is a claim, so with ``served_only`` (the
  default) an event counts only against an impression the server itself served (:meth:`FeedbackStore.serve`:
  search results of ``/v1/kb/search``, article cards in a conversation), matched by ``search_id``
  and article: each served impression counts at most one impression, click, dwell and vote, and
  each *source* (the conversation, or the searching client's address) moves an article at most
  ``max_per_source_day`` times per event type per day. A thousand votes with fresh ids and no
  impression behind them therefore count nothing.

* **Decay.** What customers did last year says little about an article edited since, so every
  event's weight halves every ``half_life_days``. Counters use *forward decay* (Cormode et al.
  2009): an event at time t adds ``2^((t - L)/h)`` for a fixed landmark L, and reading at time
  ``now`` multiplies by ``2^(-(now - L)/h)``; old events never have to be revisited. The all-time
  raw counts are kept beside them for display.

The rerank factor is ``exp(boost)`` with ``boost = a·ln(ctr/ctr₀) + b·ln(res/res₀)`` clipped to
[``min_boost``, ``max_boost``]. The clip is asymmetric on purpose: good feedback can lift an
article about 2× (enough to pass a close competitor, not an irrelevant one to the top), while an
article that many customers say did not help can sink far, below clearly weaker matches. Because
of the smoothing, a big penalty needs many votes. An article is *flagged* for editing when enough
votes say it does not resolve.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
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
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection

from lingxi.training.events import (
    FEEDBACK_TYPES,
    Click,
    Dwell,
    Event,
    EventStore,
    Impression,
    KnownArticles,
    StoredEvent,
    Vote,
)

from .articles import KbError
from .store import create_tables, insert_if_missing

EventType = Literal["impression", "click", "dwell", "vote"]
ALL_INTENTS = ""  # the intent key of per-article counters

fb_metadata = MetaData()
legacy_metadata = MetaData()

# Before the event store, feedback had its own event table; :meth:`FeedbackStore.create_schema`
# copies its rows into the event store once (ids ``legacy-kb-<id>``). Nothing writes it any more.
events_t = Table(
    "kb_feedback_events", legacy_metadata,
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

counters_t = Table(
    "kb_feedback_counters", fb_metadata,
    Column("article_id", String(64), nullable=False),
    Column("intent", String(64), nullable=False),
    # all-time raw counts (for people) …
    Column("impressions", Integer, nullable=False, default=0),
    Column("examinations", Float, nullable=False, default=0.0),
    Column("clicks", Integer, nullable=False, default=0),
    Column("short_dwells", Integer, nullable=False, default=0),
    Column("resolved", Integer, nullable=False, default=0),
    Column("not_resolved", Integer, nullable=False, default=0),
    # … and forward-decayed weights relative to the landmark (for ranking)
    Column("w_impressions", Float, nullable=False, default=0.0),
    Column("w_examinations", Float, nullable=False, default=0.0),
    Column("w_clicks", Float, nullable=False, default=0.0),
    Column("w_short_dwells", Float, nullable=False, default=0.0),
    Column("w_resolved", Float, nullable=False, default=0.0),
    Column("w_not_resolved", Float, nullable=False, default=0.0),
    PrimaryKeyConstraint("article_id", "intent"),
)

fb_meta_t = Table(  # "cursor": last event seq folded in; "landmark": L of the forward decay
    "kb_feedback_meta", fb_metadata,
    Column("key", String(32), primary_key=True),
    Column("value", Float, nullable=False),
)

queries_t = Table(
    "kb_query_stats", fb_metadata,
    Column("query", String(200), nullable=False),
    Column("day", String(10), nullable=False),
    Column("count", Integer, nullable=False, default=0),
    PrimaryKeyConstraint("query", "day"),
)

served_t = Table(  # impressions the server served: the only thing client feedback may count against
    "kb_served", fb_metadata,
    Column("search_id", String(64), nullable=False),
    Column("article_id", String(64), nullable=False),
    Column("source", String(128), nullable=False),  # "conv:<id>" or "addr:<hash>": who it was shown to
    Column("served_at", Float, nullable=False),
    Column("impression", Integer, nullable=False, default=0),  # 1 once the matching event was counted
    Column("click", Integer, nullable=False, default=0),
    Column("dwell", Integer, nullable=False, default=0),
    Column("vote", Integer, nullable=False, default=0),
    PrimaryKeyConstraint("search_id", "article_id"),
)

caps_t = Table(  # how often one source moved one article per event type and day
    "kb_feedback_caps", fb_metadata,
    Column("source", String(128), nullable=False),
    Column("article_id", String(64), nullable=False),
    Column("day", String(10), nullable=False),
    Column("type", String(16), nullable=False),
    Column("count", Integer, nullable=False, default=0),
    PrimaryKeyConstraint("source", "article_id", "day", "type"),
)

query_sources_t = Table(  # distinct searchers per query and day: a hot query needs several people
    "kb_query_sources", fb_metadata,
    Column("query", String(200), nullable=False),
    Column("day", String(10), nullable=False),
    Column("source", String(128), nullable=False),
    PrimaryKeyConstraint("query", "day", "source"),
)

_COUNTERS = ("impressions", "examinations", "clicks", "short_dwells", "resolved", "not_resolved")


class InvalidFeedback(KbError):
    code = "invalid_feedback"


class FeedbackEvent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``event_id`` (optional) makes a retried request idempotent, as in ``POST /v1/events``."""

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
    event_id: str | None = None
    conversation_id: str | None = None


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
    half_life_days: float = 30.0  # 0 or less: no decay
    served_only: bool = True  # count feedback only against impressions the server served (see above)
    max_per_source_day: int = 1  # per (source, article, event type, day) when served_only
    served_keep_days: float = 30.0  # feedback on an impression older than this no longer counts


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


def _with_counts(q: Quality, raw: Stats) -> Quality:
    return msgspec.structs.replace(q, impressions=raw.impressions, clicks=raw.clicks, votes=raw.votes,
                                   resolved=raw.resolved)


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
    for name, limit in (("query", 500), ("intent", 64), ("search_id", 64), ("channel", 64), ("visitor_id", 128),
                        ("conversation_id", 128)):
        value = getattr(e, name)
        if value is not None and len(value) > limit:
            raise InvalidFeedback(f"`{name}` longer than {limit} characters")
    if e.event_id is not None and not _EVENT_ID.match(e.event_id):
        raise InvalidFeedback("`event_id` must be 1..128 letters, digits or _ . : @ / + = -")


_EVENT_ID = re.compile(r"^[\w.:@/+=\-]{1,128}$")


def to_store_event(e: FeedbackEvent, tenant: str, now: float) -> Event:
    """The event-store form of a (validated) feedback event."""
    if e.type == "impression":
        payload = Impression(article_id=e.article_id, rank=e.rank or 1, search_id=e.search_id, query=e.query,
                             intent=e.intent)
    elif e.type == "click":
        payload = Click(article_id=e.article_id, rank=e.rank, search_id=e.search_id, query=e.query, intent=e.intent)
    elif e.type == "dwell":
        payload = Dwell(article_id=e.article_id, dwell_ms=e.dwell_ms or 0, search_id=e.search_id, intent=e.intent)
    else:
        payload = Vote(article_id=e.article_id, resolved=bool(e.resolved), search_id=e.search_id, query=e.query,
                       intent=e.intent)
    ts = e.at.timestamp() if e.at is not None else now
    return Event(event_id=e.event_id or f"fb:{uuid.uuid4().hex}", payload=payload, ts=ts, tenant=tenant,
                 conversation_id=e.conversation_id, visitor_id=e.visitor_id, channel=e.channel)


def from_store_event(e: StoredEvent) -> FeedbackEvent:
    """A stored ``impression`` / ``click`` / ``dwell`` / ``vote`` as a :class:`FeedbackEvent`."""
    p = e.payload
    return FeedbackEvent(type=e.type, article_id=p.article_id, rank=getattr(p, "rank", None),  # type: ignore[arg-type]
                         search_id=p.search_id, query=getattr(p, "query", None), intent=p.intent,
                         dwell_ms=getattr(p, "dwell_ms", None), resolved=getattr(p, "resolved", None),
                         channel=e.channel, visitor_id=e.visitor_id, event_id=e.event_id,
                         conversation_id=e.conversation_id, at=datetime.fromtimestamp(e.ts, UTC))


def feedback_after(store: EventStore, after: int, limit: int = 5000) -> list[tuple[int, FeedbackEvent]]:
    """(seq, event) of the feedback events after ``after``: for consumers that keep their own cursor."""
    return [(e.seq, from_store_event(e)) for e in store.read(after, limit, FEEDBACK_TYPES)]


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


_WEIGHTED = tuple(f"w_{c}" for c in ("impressions", *_COUNTERS[1:]))


class FeedbackStore:
    """Counters folded from the event store, kept in the KB database and mirrored in memory for ranking.

    :meth:`record` appends to the event store and folds at once; events that arrive another way
    (``POST /v1/events``, other replicas) are folded by :meth:`advance`, which the KB service calls
    every few seconds. Replicas sharing the KB database must share the event store too: the cursor
    is one number. Without an ``events`` store the events go to the KB database itself. Only
    ``tenant``'s events count: every tenant has its own knowledge base.
    """

    def __init__(self, engine: Engine, config: QualityConfig | None = None, events: EventStore | None = None,
                 clock: Callable[[], float] = time.time, tenant: str = "default") -> None:
        self.engine = engine
        self.tenant = tenant
        self.config = config or QualityConfig()
        self.events = events or EventStore(engine.url.render_as_string(hide_password=True), engine=engine)
        self.clock = clock
        self.model = QualityModel(self.config)
        self.known_articles: KnownArticles | None = None  # set by the KB so unknown ids get flagged
        self._stats: dict[tuple[str, str], Stats] = {}  # all-time raw counts
        self._weights: dict[tuple[str, str], Stats] = {}  # forward-decayed weights (floats)
        self._cursor = 0
        self._landmark: float | None = None
        self._pending_queries: Counter[tuple[str, str]] = Counter()
        self._pending_sources: set[tuple[str, str, str]] = set()
        self._hot_seen: set[tuple[str, str]] = set()
        self._serves = 0  # (query, source) pairs behind the cached hot queries
        self._hot_cache: tuple[float, dict[str, int]] = (0.0, {})
        self._lock = threading.Lock()
        self._advance_lock = threading.Lock()

    def create_schema(self) -> FeedbackStore:
        create_tables(fb_metadata, self.engine)
        self.events.create_schema()
        with self.engine.begin() as conn:
            insert_if_missing(conn, fb_meta_t, {"key": "cursor", "value": 0})
        self._import_legacy()
        return self

    def reload(self) -> FeedbackStore:
        """Read the counters (as folded by any replica) into memory."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(counters_t)).all()
            meta = dict(conn.execute(select(fb_meta_t.c.key, fb_meta_t.c.value)).all())
        stats = {(r.article_id, r.intent): Stats(**{c: getattr(r, c) for c in _COUNTERS}) for r in rows}
        weights = {(r.article_id, r.intent): Stats(**{c[2:]: getattr(r, c) for c in _WEIGHTED}) for r in rows}
        with self._lock:
            self._stats, self._weights = stats, weights
            self._cursor, self._landmark = int(meta.get("cursor", 0)), meta.get("landmark")
            self.model.fit(self._decayed_all())
        return self

    # -- decay
    def _factor(self, at: float | None = None) -> float:
        """What a stored weight is worth at ``at`` (now by default)."""
        h = self.config.half_life_days * 86_400
        if h <= 0 or self._landmark is None:
            return 1.0
        return 2.0 ** (-((self.clock() if at is None else at) - self._landmark) / h)

    def _weight(self, ts: float, landmark: float) -> float:
        h = self.config.half_life_days * 86_400
        return 1.0 if h <= 0 else 2.0 ** ((ts - landmark) / h)

    def _decayed(self, key: tuple[str, str], factor: float) -> Stats:
        w = self._weights.get(key)
        if w is None:
            return Stats()
        return Stats(**{c: getattr(w, c) * factor for c in _COUNTERS})

    def _decayed_all(self) -> dict[tuple[str, str], Stats]:
        f = self._factor()
        return {k: self._decayed(k, f) for k in self._weights}

    # -- events
    def record(self, events: Sequence[FeedbackEvent]) -> int:
        """Validate all ``events`` (all or none are stored), append them to the event store, fold them in."""
        for e in events:
            validate_event(e)
        now = self.clock()
        self.events.append([to_store_event(e, self.tenant, now) for e in events], known_articles=self.known_articles)
        self.advance()
        return len(events)

    def advance(self, batch: int = 5000) -> int:
        """Fold the feedback events stored after the cursor into the counters; returns how many.

        Counters and cursor move in one transaction of the KB database, under a lock on the cursor
        row, so concurrent replicas never fold an event twice.
        """
        folded = 0
        with self._advance_lock:
            while True:
                n, in_sync = self._advance_once(batch)
                folded += n
                if not in_sync:  # another replica folded events too: take the database's view
                    self.reload()
                if n < batch:
                    break
            with self._lock:
                self.model.fit(self._decayed_all())
        return folded

    def _advance_once(self, batch: int) -> tuple[int, bool]:
        cfg = self.config
        with self.engine.begin() as conn:
            meta = dict(conn.execute(select(fb_meta_t.c.key, fb_meta_t.c.value).with_for_update()).all())
            cursor = int(meta.get("cursor", 0))
            shared = conn if self.events.engine is self.engine else None  # one database: read in this transaction
            new = self.events.read(cursor, batch, FEEDBACK_TYPES, tenant=self.tenant, conn=shared)
            if not new:
                return 0, cursor == self._cursor
            if cfg.served_only:
                new_counted = [e for e in new if self._counts(conn, from_store_event(e))]
            else:
                new_counted = new
            landmark = meta.get("landmark")
            if landmark is None:  # the first replica to fold sets it; a concurrent one reads the winner's
                insert_if_missing(conn, fb_meta_t, {"key": "landmark", "value": min(e.ts for e in new)})
                landmark = conn.execute(select(fb_meta_t.c.value).where(fb_meta_t.c.key == "landmark")).scalar_one()
            h = cfg.half_life_days * 86_400
            latest = max(self.clock(), max(e.ts for e in new))
            rebased = h > 0 and (latest - landmark) / h > 500  # keep 2^x far from overflowing
            if rebased:
                shrink = 2.0 ** (-(latest - landmark) / h)
                conn.execute(update(counters_t).values({c: counters_t.c[c] * shrink for c in _WEIGHTED}))
                landmark = latest
                conn.execute(update(fb_meta_t).where(fb_meta_t.c.key == "landmark").values(value=landmark))
            incs: dict[tuple[str, str], dict[str, float]] = {}
            for e in new_counted:
                fe = from_store_event(e)
                raw = _increments(fe, cfg)
                if not raw:
                    continue
                w = self._weight(e.ts, landmark)
                for intent in {ALL_INTENTS, fe.intent or ALL_INTENTS}:
                    acc = incs.setdefault((fe.article_id, intent), {})
                    for c, v in raw.items():
                        acc[c] = acc.get(c, 0) + v
                        acc[f"w_{c}"] = acc.get(f"w_{c}", 0.0) + v * w
            for (article_id, intent), inc in incs.items():
                _upsert_add(conn, counters_t, {"article_id": article_id, "intent": intent}, inc)
            conn.execute(update(fb_meta_t).where(fb_meta_t.c.key == "cursor").values(value=new[-1].seq))
        in_sync = cursor == self._cursor and not rebased
        if in_sync:
            with self._lock:
                for key, inc in incs.items():
                    s = self._stats.setdefault(key, Stats())
                    w = self._weights.setdefault(key, Stats())
                    for c, v in inc.items():
                        target, name = (w, c[2:]) if c.startswith("w_") else (s, c)
                        setattr(target, name, getattr(target, name) + v)
                self._cursor, self._landmark = new[-1].seq, landmark
        return len(new), in_sync

    # -- served impressions
    def serve(self, search_id: str, article_ids: Sequence[str], source: str, now: float | None = None) -> None:
        """Remember that ``article_ids`` were shown to ``source`` under ``search_id`` (the server did it)."""
        if not search_id or not article_ids:
            return
        at = self.clock() if now is None else now
        with self.engine.begin() as conn:
            for article_id in dict.fromkeys(article_ids):
                insert_if_missing(conn, served_t, {"search_id": search_id[:64], "article_id": article_id[:64],
                                                   "source": source[:128], "served_at": at})
        self._serves += 1
        if self._serves % 1000 == 1:
            self._prune(at)

    def _prune(self, now: float) -> None:
        """Forget served impressions, caps and searcher lists too old to matter (they only grow otherwise)."""
        keep = self.config.served_keep_days * 86_400
        oldest_day = datetime.fromtimestamp(now - max(keep, 8 * 86_400), UTC).date().isoformat()
        with self.engine.begin() as conn:
            conn.execute(served_t.delete().where(served_t.c.served_at < now - keep))
            conn.execute(caps_t.delete().where(caps_t.c.day < oldest_day))
            conn.execute(query_sources_t.delete().where(query_sources_t.c.day < oldest_day))

    def _counts(self, conn: Connection, e: FeedbackEvent) -> bool:
        """Whether ``e`` may move the counters (in the folding transaction): it matches a served
        impression not yet used for its type, and its source is under the daily cap."""
        if not e.search_id:
            return False
        row = conn.execute(select(served_t).where(served_t.c.search_id == e.search_id,
                                                  served_t.c.article_id == e.article_id)).first()
        if row is None or getattr(row, e.type) or row.served_at < self.clock() - self.config.served_keep_days * 86_400:
            return False
        if e.type != "impression":
            day = datetime.fromtimestamp(self.clock(), UTC).date().isoformat()  # not the client's timestamp
            keys = {"source": row.source, "article_id": e.article_id, "day": day, "type": e.type}
            used = conn.execute(select(caps_t.c.count).where(*[caps_t.c[k] == v for k, v in keys.items()])).scalar()
            if (used or 0) >= self.config.max_per_source_day:
                return False
            _upsert_add(conn, caps_t, keys, {"count": 1})
        conn.execute(update(served_t).where(served_t.c.search_id == e.search_id,
                                            served_t.c.article_id == e.article_id).values({e.type: 1}))
        return True

    def _import_legacy(self) -> int:
        """Copy rows of the old ``kb_feedback_events`` table into the event store (once)."""
        if not inspect(self.engine).has_table(events_t.name):
            return 0
        with self.engine.connect() as conn:
            if conn.execute(select(fb_meta_t.c.value).where(fb_meta_t.c.key == "legacy_imported")).first():
                return 0
            rows = conn.execute(select(events_t).order_by(events_t.c.id)).all()
        copied = []
        for r in rows:
            at = r.at if r.at is None or r.at.tzinfo else r.at.replace(tzinfo=UTC)
            fe = FeedbackEvent(type=r.type, article_id=r.article_id, rank=r.rank, search_id=r.search_id,
                               query=r.query, intent=r.intent, dwell_ms=r.dwell_ms,
                               resolved=None if r.resolved is None else bool(r.resolved), channel=r.channel,
                               visitor_id=r.visitor_id, at=at, event_id=f"legacy-kb-{r.id}")
            copied.append(to_store_event(fe, self.tenant, self.clock()))
        for start in range(0, len(copied), 1000):
            self.events.append(copied[start:start + 1000])
        with self.engine.begin() as conn:
            conn.execute(insert(fb_meta_t).values(key="legacy_imported", value=len(copied)))
        return len(copied)

    # -- scores
    def stats(self, article_id: str, intent: str = ALL_INTENTS) -> Stats:
        """All-time raw counts."""
        return self._stats.get((article_id, intent), Stats())

    def quality(self, article_id: str, intent: str | None = None) -> Quality:
        """Article quality from decayed evidence; with an intent, the (intent, article) estimate shrunk
        towards the article's. The counts in the answer are all-time raw counts."""
        with self._lock:
            f = self._factor()
            key = (article_id, ALL_INTENTS)
            base = _with_counts(self.model.quality(self._decayed(key, f)), self._stats.get(key, Stats()))
            if not intent or (article_id, intent) not in self._weights:
                return base
            q = self.model.quality(self._decayed((article_id, intent), f), base.ctr, base.resolution)
            return _with_counts(q, self._stats.get((article_id, intent), Stats()))

    def boosts(self, article_ids: Iterable[str], intent: str | None = None) -> dict[str, float]:
        return {a: self.quality(a, intent).boost for a in article_ids}

    def flags(self) -> dict[str, Flag]:
        """Articles whose smoothed resolution rate is poor on enough (decayed) votes: candidates for editing."""
        cfg = self.config
        out: dict[str, Flag] = {}
        with self._lock:
            f = self._factor()
            items = [(a, self._stats.get((a, i), Stats()), self._decayed((a, i), f).votes)
                     for (a, i) in self._weights if i == ALL_INTENTS]
        for article_id, s, recent_votes in items:
            if recent_votes < cfg.flag_min_votes:
                continue
            q = self.quality(article_id)
            if q.resolution <= cfg.flag_max_resolution:
                out[article_id] = Flag(article_id=article_id, resolution=q.resolution, votes=s.votes,
                                       not_resolved=s.not_resolved,
                                       reason=f"{s.not_resolved} of {s.votes} votes say it did not resolve the "
                                              f"question (smoothed resolution rate {q.resolution:.0%})")
        return out

    # -- hot queries
    def record_query(self, query: str, flush_every: int = 20, source: str | None = None) -> None:
        """Count a (normalised) search query for hot-query suggestions; written in small batches.
        ``source`` names the searcher (hot queries count distinct searchers, not searches)."""
        redact = getattr(self.events, "redact", None)  # the event store's PII redaction (redact_pii)
        if redact is not None and query:
            query = redact(query)
        if not query or len(query) > 200:
            return
        day = date.today().isoformat()
        with self._lock:
            self._pending_queries[(query, day)] += 1
            self._pending_sources.add((query, day, (source or "unknown")[:128]))
            due = sum(self._pending_queries.values()) >= flush_every
        if due:
            self.flush_queries()

    def flush_queries(self) -> None:
        with self._lock:
            pending, self._pending_queries = self._pending_queries, Counter()
            sources, self._pending_sources = self._pending_sources, set()
        if not pending:
            return
        with self.engine.begin() as conn:
            for (query, day), n in pending.items():
                _upsert_add(conn, queries_t, {"query": query, "day": day}, {"count": n})
            for query, day, source in sources:
                insert_if_missing(conn, query_sources_t, {"query": query, "day": day, "source": source})
        self._hot_cache = (0.0, {})

    def hot_queries(self, days: int = 7, limit: int = 500, max_age_s: float = 60.0) -> dict[str, int]:
        """Query → distinct searchers (source and day) over the last ``days`` days (cached for
        ``max_age_s``), plus unflushed ones: the same person searching six times counts once a day."""
        cached_at, cached = self._hot_cache
        if time.monotonic() - cached_at > max_age_s:
            since = (date.today() - timedelta(days=days - 1)).isoformat()
            with self.engine.connect() as conn:
                rows = conn.execute(select(query_sources_t.c.query, query_sources_t.c.source)
                                    .where(query_sources_t.c.day >= since).distinct()).all()
            totals: Counter[str] = Counter(q for q, _ in rows)
            cached = dict(totals.most_common(limit))
            self._hot_cache = (time.monotonic(), cached)
            self._hot_seen = {(q, src) for q, src in rows}
        with self._lock:
            pending = set(self._pending_sources)
        seen = self._hot_seen
        extra = Counter(q for q, src in {(q, src) for q, _, src in pending} if (q, src) not in seen)
        if not extra:
            return cached
        merged = Counter(cached)
        merged.update(extra)
        return dict(merged.most_common(limit))
