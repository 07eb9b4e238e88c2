"""The durable event store: what the bot did and how customers reacted, as one append-only log.

Every consumer of the learning loop reads this log and nothing else: the retriever's feedback
counters (``retrieval/feedback.py``), the misunderstood queue (``training/misunderstood.py``),
retraining (``training/retrain.py``) and the insights. Producers are the conversation API (parse,
reply, clarification, handoff, outcome), the KB feedback endpoint (impression, click, dwell, vote)
and clients posting batches to ``POST /v1/events``.

Schema (table ``events``; SQLite in WAL mode at ``<home>/events.db`` by default, PostgreSQL by URL)

=================  ==========================================================================
``seq``            global, strictly increasing in commit order: the cursor of incremental readers
``tenant``         from the API key, never from the body
``event_id``       the client's id, unique per tenant: a retried batch never double-counts
``type``           wire name, see below (stable: never rename one, add a new type instead)
``ts``             when it happened, seconds since the epoch (client time; default arrival time)
``bot``, ``conversation_id``, ``visitor_id``, ``channel``, ``model_version``: optional context
``payload``        the type's fields as JSON (decoded into the typed structs below)
``flags``          comma-separated, e.g. ``unknown_article``: stored, but marked as doubtful
``received_at``    arrival time (seconds since the epoch)
=================  ==========================================================================

Types (``payload`` fields):

* ``parse`` — the NLU's reading of one customer message: ``text``, ``intent``, ``confidence``,
  ``decision`` (the NLU's: answer | clarify | out_of_scope | rule), ``ranking``, ``language``, ``message_id``, and in
  conversations ``action`` (what the dialogue did: answer, clarify, fallback, handoff …) and ``button``.
* ``reply`` — a bot message: ``text``, ``kind`` (text | clarify | fallback | article …), ``article_id``, ``buttons``.
* ``impression`` (``article_id``, ``rank``), ``click``, ``dwell`` (``dwell_ms``), ``vote`` (``resolved``):
  search feedback, each with optional ``search_id``, ``query``, ``intent``.
* ``clarification`` — the customer picked an option: ``text`` (the vague message), ``options``, ``chosen``.
* ``handoff`` — to a human: ``reason``, ``text`` (last customer message), ``intent``, ``skill_group``.
* ``outcome`` — how a conversation ended: ``contained`` | ``handed_off`` | ``abandoned``.
* ``csat`` — satisfaction: ``stars`` (1–5), ``emoji`` and/or ``text``; optional ``intent``, ``article_id``.

Durability: a batch is one transaction, and the HTTP answer is sent only after it commits. SQLite
runs with ``synchronous=FULL`` (each commit reaches the disk before it returns), so an acknowledged
event survives a killed process and a power cut. Commit order equals ``seq`` order (SQLite takes the
write lock at ``BEGIN``; PostgreSQL writers take a transaction-scoped advisory lock), so a reader
that has seen ``seq = n`` will never later find a new event below ``n``.

Reading (what other modules use):

* :meth:`EventStore.read` — events after a ``seq`` (incremental consumers; keep the cursor with
  :meth:`EventStore.cursor` / :meth:`EventStore.set_cursor`, or in your own database).
* :meth:`EventStore.query` — by tenant, type, bot, channel, conversation and time range.
* :meth:`EventStore.count`, :meth:`EventStore.high_water`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

log = logging.getLogger("lingxi.events")

# ------------------------------------------------------------------ typed payloads

Short = Annotated[str, Meta(min_length=1, max_length=64)]
Name = Annotated[str, Meta(min_length=1, max_length=128)]
Utterance = Annotated[str, Meta(min_length=1, max_length=2000)]
Rank = Annotated[int, Meta(ge=1, le=1000)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]


class _Payload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type",
               omit_defaults=True):
    pass


class Parse(_Payload, frozen=True, tag="parse"):
    """``decision`` is the NLU's (answer | clarify | out_of_scope | rule); ``action`` what the dialogue then did
    (answer, clarify, fallback, handoff, flow, rule, knowledge …; absent for bare ``/v1/parse`` calls)."""

    text: Utterance
    decision: Short
    intent: Name | None = None
    confidence: Probability = 0.0
    ranking: Annotated[list[tuple[Name, Probability]], Meta(max_length=10)] = []
    language: Short | None = None
    message_id: Name | None = None
    action: Short | None = None
    button: bool = False  # the text is an offered button's payload, not typed


class Reply(_Payload, frozen=True, tag="reply"):
    text: Annotated[str, Meta(max_length=4000)] | None = None
    kind: Short = "text"
    article_id: Short | None = None
    buttons: Annotated[list[Annotated[str, Meta(max_length=200)]], Meta(max_length=20)] = []


class Impression(_Payload, frozen=True, tag="impression"):
    article_id: Short
    rank: Rank
    search_id: Short | None = None
    query: Annotated[str, Meta(max_length=500)] | None = None
    intent: Short | None = None


class Click(_Payload, frozen=True, tag="click"):
    article_id: Short
    rank: Rank | None = None
    search_id: Short | None = None
    query: Annotated[str, Meta(max_length=500)] | None = None
    intent: Short | None = None


class Dwell(_Payload, frozen=True, tag="dwell"):
    article_id: Short
    dwell_ms: Annotated[int, Meta(ge=0, le=86_400_000)]
    search_id: Short | None = None
    intent: Short | None = None


class Vote(_Payload, frozen=True, tag="vote"):
    article_id: Short
    resolved: bool
    search_id: Short | None = None
    query: Annotated[str, Meta(max_length=500)] | None = None
    intent: Short | None = None


class Clarification(_Payload, frozen=True, tag="clarification"):
    """The customer resolved a guided question: ``text`` was vague, ``chosen`` is what they meant."""

    text: Utterance
    chosen: Name
    options: Annotated[list[Name], Meta(max_length=20)] = []
    kind: Literal["intent", "menu"] = "intent"
    via: Short = "button"


class Handoff(_Payload, frozen=True, tag="handoff"):
    reason: Annotated[str, Meta(min_length=1, max_length=200)]
    text: Utterance | None = None
    intent: Name | None = None
    skill_group: Short | None = None
    priority: Short | None = None
    mode: Short | None = None


class Outcome(_Payload, frozen=True, tag="outcome"):
    outcome: Literal["contained", "handed_off", "abandoned"]
    turns: Annotated[int, Meta(ge=0)] | None = None


class Csat(_Payload, frozen=True, tag="csat"):
    stars: Annotated[int, Meta(ge=1, le=5)] | None = None
    emoji: Annotated[str, Meta(min_length=1, max_length=16)] | None = None
    text: Utterance | None = None
    intent: Name | None = None
    article_id: Short | None = None
    flow: Name | None = None

    def __post_init__(self) -> None:
        if self.stars is None and self.emoji is None and self.text is None:
            raise ValueError("a csat event needs `stars`, `emoji` or `text`")


Payload = Parse | Reply | Impression | Click | Dwell | Vote | Clarification | Handoff | Outcome | Csat
EVENT_TYPES: dict[str, type[_Payload]] = {
    cls.__struct_config__.tag: cls  # type: ignore[attr-defined,misc]
    for cls in (Parse, Reply, Impression, Click, Dwell, Vote, Clarification, Handoff, Outcome, Csat)
}
FEEDBACK_TYPES = frozenset({"impression", "click", "dwell", "vote"})
# events that react to a conversation, so their conversation should already be known
_REACTIONS = frozenset({"impression", "click", "dwell", "vote", "clarification", "outcome", "csat"})


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event. ``type`` is the payload's wire name."""

    event_id: str
    payload: Payload
    ts: float
    tenant: str = "default"
    bot: str | None = None
    conversation_id: str | None = None
    visitor_id: str | None = None
    channel: str | None = None
    model_version: str | None = None

    @property
    def type(self) -> str:
        return type(self.payload).__struct_config__.tag  # type: ignore[attr-defined,return-value]


class StoredEvent(Event, frozen=True, kw_only=True):
    seq: int
    received_at: float
    flags: tuple[str, ...] = ()


# ------------------------------------------------------------------ ingestion results

Status = Literal["accepted", "duplicate", "rejected"]
# stable rejection codes
UNKNOWN_TYPE, MISSING_ID, INVALID_ID = "unknown_type", "missing_id", "invalid_id"
FUTURE_TIMESTAMP, INVALID_TIMESTAMP = "future_timestamp", "invalid_timestamp"
PAYLOAD_TOO_LARGE, INVALID_EVENT = "payload_too_large", "invalid_event"
# flags of stored events
UNKNOWN_ARTICLE, UNKNOWN_CONVERSATION = "unknown_article", "unknown_conversation"


class EventResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    status: Status
    event_id: str | None = None
    code: str | None = None  # why it was rejected
    reason: str | None = None
    flags: list[str] = []


class IngestReport(msgspec.Struct, kw_only=True):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


@dataclass(frozen=True)
class EventConfig:
    max_future_s: float = 300.0  # client clocks drift; an hour ahead is a bug, not drift
    min_ts: float = 946_684_800.0  # 2000-01-01
    max_payload_bytes: int = 8192
    max_batch: int = 1000


_ID = re.compile(r"^[\w.:@/+=\-]{1,128}$")


class _Wire(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a client sends (``tenant`` comes from its API key; ``type`` is checked before this)."""

    event_id: str
    type: str
    payload: dict[str, Any] = {}
    ts: float | datetime | None = None
    bot: Name | None = None
    conversation_id: Name | None = None
    visitor_id: Name | None = None
    channel: Short | None = None
    model_version: Name | None = None


class _Rejected(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


_json = msgspec.json.Encoder()
_FREE_TEXT_FIELDS = ("text", "query")  # what customers typed; everything else is ids, labels, numbers
_payload_decoder = msgspec.json.Decoder(Payload)


def _clean_msgspec_error(exc: Exception) -> str:
    return str(exc).replace("`$.", "`").replace("`$`", "the event")


def parse_wire(item: Any, tenant: str, now: float, config: EventConfig = EventConfig()) -> Event:
    """One client event → :class:`Event`, or :class:`_Rejected` naming the stable code and why."""
    if not isinstance(item, dict):
        raise _Rejected(INVALID_EVENT, "an event must be a JSON object")
    event_id = item.get("event_id")
    if event_id is None or (isinstance(event_id, str) and not event_id.strip()):
        raise _Rejected(MISSING_ID, "`event_id` is required (a client-generated id, unique per tenant)")
    if not isinstance(event_id, str) or not _ID.match(event_id):
        raise _Rejected(INVALID_ID, "`event_id` must be 1..128 letters, digits or _ . : @ / + = -")
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise _Rejected(UNKNOWN_TYPE, f"unknown event type {kind!r}; known: {sorted(EVENT_TYPES)}")
    size = len(_json.encode(item.get("payload")))
    if size > config.max_payload_bytes:
        raise _Rejected(PAYLOAD_TOO_LARGE, f"payload is {size} bytes; the limit is {config.max_payload_bytes}")
    try:
        wire = msgspec.convert(item, _Wire, strict=False)
    except msgspec.ValidationError as exc:
        raise _Rejected(INVALID_EVENT, _clean_msgspec_error(exc)) from None
    ts = wire.ts.timestamp() if isinstance(wire.ts, datetime) else wire.ts
    if ts is None:
        ts = now
    if ts != ts or ts < config.min_ts:  # NaN or before 2000
        raise _Rejected(INVALID_TIMESTAMP, "`ts` must be seconds since the epoch (or RFC 3339) after 2000-01-01")
    if ts > now + config.max_future_s:
        raise _Rejected(FUTURE_TIMESTAMP, f"`ts` is {ts - now:.0f} s in the future (limit {config.max_future_s:.0f} s)")
    if "type" in wire.payload:
        raise _Rejected(INVALID_EVENT, "`payload.type` is not allowed (the type is the event's `type`)")
    try:
        payload = msgspec.convert({**wire.payload, "type": kind}, Payload, strict=False)
    except msgspec.ValidationError as exc:
        raise _Rejected(INVALID_EVENT, "payload: " + _clean_msgspec_error(exc)) from None
    return Event(event_id=event_id, payload=payload, ts=float(ts), tenant=tenant, bot=wire.bot,
                 conversation_id=wire.conversation_id, visitor_id=wire.visitor_id, channel=wire.channel,
                 model_version=wire.model_version)


# ------------------------------------------------------------------ schema

metadata = MetaData()
_SEQ = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

events_t = Table(
    "events", metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("type", String(32), nullable=False),
    Column("ts", Float, nullable=False),
    Column("bot", String(128), nullable=True),
    Column("conversation_id", String(128), nullable=True),
    Column("visitor_id", String(128), nullable=True),
    Column("channel", String(64), nullable=True),
    Column("model_version", String(128), nullable=True),
    Column("payload", Text, nullable=False),
    Column("flags", String(200), nullable=False, default=""),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("tenant", "event_id", name="uq_events_tenant_event_id"),
    Index("ix_events_tenant_type_ts", "tenant", "type", "ts"),
    Index("ix_events_tenant_ts", "tenant", "ts"),
    Index("ix_events_tenant_conversation", "tenant", "conversation_id"),
)

cursors_t = Table(
    "event_cursors", metadata,
    Column("name", String(128), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

_PG_WRITE_LOCK = 7_147_001  # pg_advisory_xact_lock key: writers commit in seq order


def make_engine(url: str, writer: bool = True) -> Engine:
    """SQLite: WAL, ``synchronous=FULL`` (acknowledged = on disk) and, for the writer, ``BEGIN IMMEDIATE``
    (readers keep SQLite's deferred transactions, so they never queue behind a write); PostgreSQL with
    the project's connect and statement timeouts."""
    from lingxi.retrieval.store import make_engine as store_engine

    return store_engine(url, synchronous="FULL", immediate=writer)


def default_url(home: str | Path) -> str:
    path = Path(home) / "events.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


# ------------------------------------------------------------------ the store

KnownArticles = Callable[[set[str]], set[str]]  # ids → the ones that exist
KnownConversations = Callable[[str, set[str]], set[str]]  # (tenant, ids) → the ones that exist


def _article_of(p: Payload) -> str | None:
    return getattr(p, "article_id", None)


class EventStore:
    """Append-only events with idempotent batch ingestion. Thread-safe (one connection per call)."""

    def __init__(self, url: str, engine: Engine | None = None, config: EventConfig | None = None,
                 clock: Callable[[], float] = time.time, redact: Callable[[str], str] | None = None) -> None:
        """``redact``: applied to every string in a payload before it is stored (e.g. phone numbers and
        e-mails masked by :func:`lingxi.nlu.redact.redact` when ``Settings.redact_pii`` is on)."""
        self.url = url
        self.redact = redact
        self.engine = engine or make_engine(url)
        # SQLite readers on their own engine: a read must not wait for (or deadlock with) the write lock
        sqlite_file = engine is None and url.startswith("sqlite") and ":memory:" not in url
        self.reader = make_engine(url, writer=False) if sqlite_file else self.engine
        self.config = config or EventConfig()
        self.clock = clock

    @classmethod
    def open(cls, url: str, config: EventConfig | None = None) -> EventStore:
        return cls(url, config=config).create_schema()

    def create_schema(self) -> EventStore:
        from lingxi.retrieval.store import create_tables  # replicas may start together on an empty database

        create_tables(metadata, self.engine)
        return self

    def dispose(self) -> None:
        self.engine.dispose()
        if self.reader is not self.engine:
            self.reader.dispose()

    # ------------------------------------------------------------ writing
    def ingest(self, items: Sequence[Any], tenant: str, known_articles: KnownArticles | None = None,
               known_conversations: KnownConversations | None = None) -> IngestReport:
        """Client events (decoded JSON): each is accepted, a duplicate (already stored), or rejected
        with a code and reason; the accepted ones are stored in one transaction before this returns."""
        now = self.clock()
        results: list[EventResult | None] = []
        good: list[tuple[int, Event]] = []
        for i, item in enumerate(items):
            try:
                good.append((i, parse_wire(item, tenant, now, self.config)))
                results.append(None)
            except _Rejected as exc:
                eid = item.get("event_id") if isinstance(item, dict) and isinstance(item.get("event_id"), str) else None
                results.append(EventResult(index=i, status="rejected", event_id=eid, code=exc.code, reason=exc.reason))
        stored = self._store([e for _, e in good], known_articles, known_conversations, now)
        for (i, e), (status, flags) in zip(good, stored, strict=True):
            results[i] = EventResult(index=i, status=status, event_id=e.event_id, flags=list(flags))
        final = [r for r in results if r is not None]
        return IngestReport(accepted=sum(r.status == "accepted" for r in final),
                            duplicates=sum(r.status == "duplicate" for r in final),
                            rejected=sum(r.status == "rejected" for r in final), results=final)

    def append(self, events: Sequence[Event], known_articles: KnownArticles | None = None,
               known_conversations: KnownConversations | None = None) -> list[tuple[Status, tuple[str, ...]]]:
        """Store typed events from our own producers (ids chosen by them, so re-sends are no-ops)."""
        return self._store(list(events), known_articles, known_conversations, self.clock())

    def _flags(self, events: list[Event], known_articles: KnownArticles | None,
               known_conversations: KnownConversations | None) -> list[tuple[str, ...]]:
        """Flags per event. Computed before the write transaction: the lookups may use other
        connections to the same database (the KB's), which must not wait for our write lock."""
        unknown_articles: set[str] = set()
        if known_articles is not None:
            ids = {a for e in events if (a := _article_of(e.payload))}
            unknown_articles = ids - known_articles(ids) if ids else set()
        unknown_convs: set[tuple[str, str]] = set()
        if known_conversations is not None:
            asked: dict[str, set[str]] = {}
            for e in events:
                if e.conversation_id and e.type in _REACTIONS:
                    asked.setdefault(e.tenant, set()).add(e.conversation_id)
            for tenant, ids in asked.items():
                in_batch = {e.conversation_id for e in events if e.tenant == tenant and e.type not in _REACTIONS}
                with self.reader.connect() as conn:
                    seen = {r[0] for r in conn.execute(
                        select(events_t.c.conversation_id).distinct()
                        .where(events_t.c.tenant == tenant, events_t.c.conversation_id.in_(list(ids))))}
                rest = ids - seen - in_batch
                known = known_conversations(tenant, rest) if rest else set()
                unknown_convs |= {(tenant, c) for c in rest - known}
        out = []
        for e in events:
            flags = []
            if _article_of(e.payload) in unknown_articles:
                flags.append(UNKNOWN_ARTICLE)
            if e.type in _REACTIONS and (e.tenant, e.conversation_id) in unknown_convs:
                flags.append(UNKNOWN_CONVERSATION)
            out.append(tuple(flags))
        return out

    def _store(self, events: list[Event], known_articles: KnownArticles | None,
               known_conversations: KnownConversations | None, now: float
               ) -> list[tuple[Status, tuple[str, ...]]]:
        if not events:
            return []
        all_flags = self._flags(events, known_articles, known_conversations)
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_WRITE_LOCK})
            existing: set[tuple[str, str]] = set()
            for tenant in {e.tenant for e in events}:
                ids = [e.event_id for e in events if e.tenant == tenant]
                for start in range(0, len(ids), 500):
                    existing |= {(tenant, r[0]) for r in conn.execute(
                        select(events_t.c.event_id).where(events_t.c.tenant == tenant,
                                                          events_t.c.event_id.in_(ids[start:start + 500])))}
            statuses: list[Status] = []
            for e in events:
                key = (e.tenant, e.event_id)
                if key in existing:
                    statuses.append("duplicate")
                    continue
                existing.add(key)  # a repeat inside the batch is a duplicate too
                statuses.append("accepted")
            out: list[tuple[Status, tuple[str, ...]]] = []
            rows = []
            for e, status, f in zip(events, statuses, all_flags, strict=True):
                if status == "duplicate":
                    out.append((status, ()))
                    continue
                out.append((status, f))
                rows.append({"tenant": e.tenant, "event_id": e.event_id, "type": e.type, "ts": e.ts, "bot": e.bot,
                             "conversation_id": e.conversation_id, "visitor_id": e.visitor_id,
                             "channel": e.channel, "model_version": e.model_version,
                             "payload": self._payload_json(e.payload), "flags": ",".join(f),
                             "received_at": now})
            if rows:
                conn.execute(_insert_ignoring_duplicates(conn), rows)
        return out

    def _payload_json(self, payload: Any) -> str:
        """The payload as stored: free text (``text``, ``query``) redacted when a redactor is set; ids
        and labels are never touched (an article id may well contain a digit run)."""
        if self.redact is None:
            return _json.encode(payload).decode()
        data = msgspec.to_builtins(payload)
        for field in _FREE_TEXT_FIELDS:
            if isinstance(data.get(field), str):
                data[field] = self.redact(data[field])
        return _json.encode(data).decode()

    # ------------------------------------------------------------ reading
    def read(self, after: int = 0, limit: int = 1000, types: Collection[str] | None = None,
             tenant: str | None = None, conn: Connection | None = None) -> list[StoredEvent]:
        """Events with ``seq > after`` in ``seq`` order (at most ``limit``): for incremental consumers.

        ``conn``: a connection of this store's database to read in (a consumer's own transaction)."""
        q = select(events_t).where(events_t.c.seq > after).order_by(events_t.c.seq).limit(limit)
        if types is not None:
            q = q.where(events_t.c.type.in_(list(types)))
        if tenant is not None:
            q = q.where(events_t.c.tenant == tenant)
        if conn is not None:
            return [_row_event(r) for r in conn.execute(q)]
        with self.reader.connect() as c:
            return [_row_event(r) for r in c.execute(q)]

    def iter_after(self, after: int = 0, types: Collection[str] | None = None, batch: int = 2000
                   ) -> Iterator[StoredEvent]:
        """All events after ``after``, fetched ``batch`` at a time."""
        while True:
            chunk = self.read(after, batch, types)
            yield from chunk
            if len(chunk) < batch:
                return
            after = chunk[-1].seq

    def query(self, tenant: str | None, *, types: Collection[str] | None = None, bot: str | None = None,
              channel: str | None = None, conversation_id: str | None = None, since: float | None = None,
              until: float | None = None, flagged: bool | None = None, limit: int | None = None
              ) -> list[StoredEvent]:
        """Events matching every filter given, oldest first (``since <= ts < until``)."""
        q = _filtered(select(events_t), tenant, types, bot, channel, conversation_id, since, until, flagged)
        q = q.order_by(events_t.c.ts, events_t.c.seq)
        if limit is not None:
            q = q.limit(limit)
        with self.reader.connect() as conn:
            return [_row_event(r) for r in conn.execute(q)]

    def count(self, tenant: str | None = None, *, types: Collection[str] | None = None, bot: str | None = None,
              channel: str | None = None, conversation_id: str | None = None, since: float | None = None,
              until: float | None = None, flagged: bool | None = None) -> int:
        q = _filtered(select(func.count()).select_from(events_t), tenant, types, bot, channel, conversation_id,
                      since, until, flagged)
        with self.reader.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def get(self, tenant: str, event_id: str) -> StoredEvent | None:
        with self.reader.connect() as conn:
            row = conn.execute(select(events_t).where(events_t.c.tenant == tenant,
                                                      events_t.c.event_id == event_id)).first()
        return _row_event(row) if row else None

    def high_water(self) -> int:
        """The largest ``seq`` stored (0 when empty)."""
        with self.reader.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(events_t.c.seq), 0))).scalar_one())

    # ------------------------------------------------------------ cursors of consumers sharing this database
    def cursor(self, name: str, conn: Connection | None = None) -> int:
        """Where consumer ``name`` got to (0 if it never ran)."""
        if conn is None:
            with self.reader.connect() as c:
                return self.cursor(name, c)
        found = conn.execute(select(cursors_t.c.seq).where(cursors_t.c.name == name)).scalar()
        return int(found or 0)

    def set_cursor(self, name: str, seq: int, conn: Connection | None = None) -> None:
        """Move ``name`` to ``seq``; pass the consumer's transaction so work and cursor commit together."""
        if conn is None:
            with self.engine.begin() as c:
                self.set_cursor(name, seq, c)
            return
        if conn.execute(update(cursors_t).where(cursors_t.c.name == name).values(seq=seq)).rowcount == 0:
            conn.execute(insert(cursors_t).values(name=name, seq=seq))


def _insert_ignoring_duplicates(conn: Connection):
    """``INSERT ... ON CONFLICT (tenant, event_id) DO NOTHING`` (the pre-check under the write lock
    already removed duplicates; this keeps a racing writer on another database user harmless)."""
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        return insert(events_t)
    return dialect_insert(events_t).on_conflict_do_nothing(index_elements=["tenant", "event_id"])


def _filtered(q, tenant, types, bot, channel, conversation_id, since, until, flagged):
    conds = []
    if tenant is not None:
        conds.append(events_t.c.tenant == tenant)
    if types is not None:
        conds.append(events_t.c.type.in_(list(types)))
    for col, value in ((events_t.c.bot, bot), (events_t.c.channel, channel),
                       (events_t.c.conversation_id, conversation_id)):
        if value is not None:
            conds.append(col == value)
    if since is not None:
        conds.append(events_t.c.ts >= since)
    if until is not None:
        conds.append(events_t.c.ts < until)
    if flagged is True:
        conds.append(events_t.c.flags != "")
    elif flagged is False:
        conds.append(events_t.c.flags == "")
    return q.where(*conds) if conds else q


def _row_event(r) -> StoredEvent:
    return StoredEvent(seq=int(r.seq), event_id=r.event_id, tenant=r.tenant, ts=float(r.ts), bot=r.bot,
                       conversation_id=r.conversation_id, visitor_id=r.visitor_id, channel=r.channel,
                       model_version=r.model_version, payload=_payload_decoder.decode(r.payload),
                       flags=tuple(f for f in (r.flags or "").split(",") if f), received_at=float(r.received_at))


class EventWriter:
    """Batches events the *server* generates (parses, conversation turns) into few transactions.

    A reply must not wait for a disk flush, and many small SQLite commits queue on one write lock,
    so producers :meth:`submit` and a background thread appends every ``max_delay_s`` (or
    ``max_batch`` events). Nothing was acknowledged to anyone for these, so a crash loses at most
    the last ``max_delay_s``; client batches (``POST /v1/events``) go straight to the store instead.
    """

    def __init__(self, store: EventStore, max_delay_s: float = 0.2, max_batch: int = 500,
                 known_articles: KnownArticles | None = None) -> None:
        self.store = store
        self.max_delay_s = max_delay_s
        self.max_batch = max_batch
        self.known_articles = known_articles
        self._pending: list[Event] = []
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lingxi-event-writer", daemon=True)
        self._thread.start()

    def submit(self, events: Sequence[Event]) -> None:
        if not events:
            return
        with self._cond:
            self._pending.extend(events)
            if len(self._pending) >= self.max_batch:
                self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything submitted so far is stored."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while (self._pending or self._busy) and time.monotonic() < deadline:
                self._cond.wait(0.05)

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._closed:
                    self._cond.wait(self.max_delay_s)
                if self._closed and not self._pending:
                    return
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
                self._busy = bool(batch)
            if batch:
                try:
                    self.store.append(batch, known_articles=self.known_articles)
                except Exception:  # noqa: BLE001 - telemetry must never take the bot down
                    log.exception("could not store %d server events; they are lost", len(batch))
            with self._cond:
                self._busy = False
                self._cond.notify_all()
