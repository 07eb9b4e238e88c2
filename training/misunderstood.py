"""The misunderstood queue: what the bot failed to understand, deduplicated, for operators to label.

It is a fold over the event store (:mod:`lingxi.training.events`), advanced by :meth:`MisunderstoodQueue.sync`
from a cursor kept in the same database and moved in the same transaction, so each event counts once:

* a ``parse`` the dialogue answered with a **fallback**, a **clarify** question, or an answer with
  **low confidence** (below ``QueueConfig.low_confidence``); a bare ``/v1/parse`` call counts by its
  NLU decision (``out_of_scope`` → fallback, ``clarify``, a low-confidence ``answer``);
* a **handoff** the bot caused (repeated fallbacks, negative sentiment), with the customer's last
  message (an explicit "转人工" or a designed flow/rule handoff is not a misunderstanding);
* a **wrong answer**: the bot answered an intent and the customer then voted "not resolved" in
  the same conversation; the answer's text is queued with the intent the bot wrongly chose.

Utterances are deduplicated by their normalised text (width, case, traditional→simplified,
punctuation and spaces folded), with a count, per-reason counts, the last intent the bot
predicted and when it was first and last seen.

Operators resolve an entry: ``intent`` (an existing intent), ``new_intent`` (a name for an
intent the bot does not have yet), ``article`` (a KB article answers it) or ``ignore``.
Resolved intent labels are the *operator labels* retraining uses.

A clarification the customer resolved by picking an option is a **weak label** (the vague text →
the picked intent), stored apart in ``weak_labels`` with counts. :meth:`MisunderstoodQueue.labels`
returns both kinds, each with a training weight: operator labels 1, weak labels
``QueueConfig.weak_weight`` and only when most pickers agreed; a label whose text the bot had
answered with another intent is a *hard negative* and weighs ``hard_negative_weight`` times more.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
from sqlalchemy import (
    Column,
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
    update,
)
from sqlalchemy.engine import Connection

from lingxi.datasets.domain import OOS_LABEL
from lingxi.nlu.normalize import Normalizer
from lingxi.retrieval.store import create_tables, insert_if_missing

from .events import Clarification, EventStore, Handoff, Parse, StoredEvent, Vote, cursors_t

Reason = Literal["fallback", "clarify", "low_confidence", "handoff", "wrong_answer"]
REASONS: tuple[str, ...] = ("fallback", "clarify", "low_confidence", "handoff", "wrong_answer")
Action = Literal["intent", "new_intent", "article", "ignore"]
Status = Literal["open", "resolved", "ignored"]
CURSOR = "misunderstood"
_DESIGNED_HANDOFFS = ("explicit_request", "rule:", "flow:")  # handoffs the bot did on purpose
_INTENT_NAME = re.compile(r"^[A-Za-z0-9_\-.:\u4e00-\u9fff]{1,64}$")


@dataclass(frozen=True)
class QueueConfig:
    low_confidence: float = 0.5  # an answer below this confidence is queued
    weak_weight: float = 0.3  # a weak label counts this much of an operator label …
    weak_min_agreement: float = 0.6  # … when at least this share of the pickers chose the same intent
    weak_min_count: int = 1
    hard_negative_weight: float = 2.0


class QueueError(ValueError):
    """A refused queue operation (bad id, bad action); ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Entry(msgspec.Struct, kw_only=True):
    id: int
    tenant: str
    bot: str | None
    text: str
    normalized: str
    count: int
    reasons: dict[str, int]
    predicted: str | None  # the intent the bot last chose for it (if any)
    confidence: float | None
    first_seen: float
    last_seen: float
    last_conversation_id: str | None
    channel: str | None
    status: Status
    action: Action | None = None
    target: str | None = None
    resolved_by: str | None = None
    resolved_at: float | None = None
    note: str | None = None


class Label(msgspec.Struct, kw_only=True, frozen=True):
    text: str
    intent: str
    source: Literal["operator", "weak"]
    weight: float
    count: int
    hard_negative: bool = False  # the bot answered it with another intent
    predicted: str | None = None
    new_intent: bool = False


metadata = MetaData()

entries_t = Table(
    "misunderstood", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("bot", String(128), nullable=False, default=""),
    Column("key", String(40), nullable=False),  # sha1 of the normalised text
    Column("text", Text, nullable=False),
    Column("normalized", Text, nullable=False),
    Column("count", Integer, nullable=False, default=0),
    Column("reasons", Text, nullable=False, default="{}"),
    Column("predicted", String(128), nullable=True),
    Column("confidence", Float, nullable=True),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("last_conversation_id", String(128), nullable=True),
    Column("channel", String(64), nullable=True),
    Column("status", String(16), nullable=False, default="open"),
    Column("action", String(16), nullable=True),
    Column("target", String(128), nullable=True),
    Column("resolved_by", String(128), nullable=True),
    Column("resolved_at", Float, nullable=True),
    Column("note", String(500), nullable=True),
    UniqueConstraint("tenant", "bot", "key", name="uq_misunderstood_text"),
    Index("ix_misunderstood_status", "tenant", "status", "last_seen"),
)

weak_t = Table(
    "weak_labels", metadata,
    Column("tenant", String(64), nullable=False),
    Column("bot", String(128), nullable=False, default=""),
    Column("key", String(40), nullable=False),
    Column("text", Text, nullable=False),
    Column("intent", String(128), nullable=False),
    Column("count", Integer, nullable=False, default=0),
    Column("predicted", String(128), nullable=True),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    UniqueConstraint("tenant", "bot", "key", "intent", name="uq_weak_label"),
)

_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)


class MisunderstoodQueue:
    """The queue's tables live in the event store's database (so cursor and queue commit together)."""

    def __init__(self, events: EventStore, config: QueueConfig | None = None,
                 normalizer: Normalizer | None = None) -> None:
        self.events = events
        self.engine = events.engine
        self.config = config or QueueConfig()
        self._normalize = normalizer or Normalizer()

    def create_schema(self) -> MisunderstoodQueue:
        create_tables(metadata, self.engine)  # replicas may start together on an empty database
        return self

    # ------------------------------------------------------------ normalisation
    def normalized(self, text: str) -> str:
        """The dedup form: normalised, then punctuation and spaces dropped (kept if nothing else is left)."""
        norm = self._normalize(text).strip()
        folded = _PUNCT.sub("", norm)
        return folded or norm

    @staticmethod
    def _key(normalized: str) -> str:
        return hashlib.sha1(normalized.encode("utf-8")).hexdigest()

    # ------------------------------------------------------------ folding events in
    def sync(self, batch: int = 2000) -> int:
        """Fold the events stored since the last sync; returns how many events were read."""
        total = 0
        while True:
            n = self._sync_once(batch)
            total += n
            if n < batch:
                return total

    def _sync_once(self, batch: int) -> int:
        with self.engine.begin() as conn:
            cursor = self._lock_cursor(conn)
            new = self.events.read(cursor, batch, ("parse", "handoff", "clarification", "vote"), conn=conn)
            if not new:
                return 0
            for e in new:
                self._fold(conn, e)
            conn.execute(update(cursors_t).where(cursors_t.c.name == CURSOR).values(seq=new[-1].seq))
        return len(new)

    def _lock_cursor(self, conn: Connection) -> int:
        """The cursor, locked for this transaction (PostgreSQL: row lock; SQLite: the write lock is held)."""
        row = conn.execute(select(cursors_t.c.seq).where(cursors_t.c.name == CURSOR).with_for_update()).first()
        if row is not None:
            return int(row[0])
        insert_if_missing(conn, cursors_t, {"name": CURSOR, "seq": 0})
        row = conn.execute(select(cursors_t.c.seq).where(cursors_t.c.name == CURSOR).with_for_update()).first()
        return int(row[0]) if row else 0

    def _fold(self, conn: Connection, e: StoredEvent) -> None:
        p = e.payload
        if isinstance(p, Parse):
            reason = self._parse_reason(p)
            if reason:
                predicted = p.intent if p.decision == "answer" or p.action == "answer" else None
                self._add(conn, e, p.text, reason, predicted, p.confidence)
        elif isinstance(p, Handoff) and p.text and not p.reason.startswith(_DESIGNED_HANDOFFS):
            self._add(conn, e, p.text, "handoff", p.intent, None)
        elif isinstance(p, Vote) and not p.resolved and e.conversation_id:
            answered = self._last_answer(e)
            if answered is not None and answered.payload.intent:  # type: ignore[union-attr]
                ap: Parse = answered.payload  # type: ignore[assignment]
                self._add(conn, e, ap.text, "wrong_answer", ap.intent, ap.confidence)
        elif isinstance(p, Clarification) and p.kind == "intent" and p.chosen:
            self._add_weak(conn, e, p.text, p.chosen)

    def _parse_reason(self, p: Parse) -> Reason | None:
        if p.button:
            return None
        if p.action is None:  # a bare /v1/parse call: the NLU decision is all there is
            if p.decision in ("out_of_scope", "reject"):
                return "fallback"
            if p.decision == "clarify":
                return "clarify"
            return "low_confidence" if p.confidence < self.config.low_confidence else None
        if p.action == "fallback":
            return "fallback"
        if p.action == "clarify":
            return "clarify"
        if p.action == "answer" and p.confidence < self.config.low_confidence:
            return "low_confidence"
        return None

    def _last_answer(self, vote: StoredEvent) -> StoredEvent | None:
        found = self.events.query(vote.tenant, types=["parse"], conversation_id=vote.conversation_id,
                                  until=vote.ts + 1e-6)
        for e in reversed(found):
            p = e.payload
            if isinstance(p, Parse) and not p.button and (p.action == "answer" or (p.action is None
                                                                                  and p.decision == "answer")):
                return e
        return None

    def _add(self, conn: Connection, e: StoredEvent, text: str, reason: Reason, predicted: str | None,
             confidence: float | None) -> None:
        norm = self.normalized(text)
        if not norm:
            return
        key, bot = self._key(norm), e.bot or ""
        where = (entries_t.c.tenant == e.tenant, entries_t.c.bot == bot, entries_t.c.key == key)
        row = conn.execute(select(entries_t.c.id, entries_t.c.reasons, entries_t.c.first_seen,
                                  entries_t.c.last_seen).where(*where)).first()
        if row is None:
            conn.execute(insert(entries_t).values(
                tenant=e.tenant, bot=bot, key=key, text=text, normalized=norm, count=1,
                reasons=json.dumps({reason: 1}), predicted=predicted, confidence=confidence, first_seen=e.ts,
                last_seen=e.ts, last_conversation_id=e.conversation_id, channel=e.channel, status="open"))
            return
        reasons = json.loads(row.reasons)
        reasons[reason] = reasons.get(reason, 0) + 1
        changes: dict = {"count": entries_t.c.count + 1, "reasons": json.dumps(reasons, sort_keys=True),
                         "first_seen": min(row.first_seen, e.ts)}
        if e.ts >= row.last_seen:
            changes.update(last_seen=e.ts, last_conversation_id=e.conversation_id, channel=e.channel)
            if predicted is not None:
                changes.update(predicted=predicted, confidence=confidence)
        conn.execute(update(entries_t).where(*where).values(**changes))

    def _add_weak(self, conn: Connection, e: StoredEvent, text: str, intent: str) -> None:
        norm = self.normalized(text)
        if not norm:
            return
        key, bot = self._key(norm), e.bot or ""
        where = (weak_t.c.tenant == e.tenant, weak_t.c.bot == bot, weak_t.c.key == key, weak_t.c.intent == intent)
        row = conn.execute(select(weak_t.c.last_seen).where(*where)).first()
        if row is None:
            conn.execute(insert(weak_t).values(tenant=e.tenant, bot=bot, key=key, text=text, intent=intent, count=1,
                                               first_seen=e.ts, last_seen=e.ts))
        else:
            conn.execute(update(weak_t).where(*where).values(count=weak_t.c.count + 1,
                                                             last_seen=max(row.last_seen, e.ts)))

    # ------------------------------------------------------------ operators
    def list(self, tenant: str, *, status: Status | None = "open", reason: str | None = None,
             bot: str | None = None, q: str | None = None, min_count: int = 1, sort: str = "count",
             limit: int = 50, offset: int = 0) -> tuple[list[Entry], int]:
        """Entries of ``tenant`` matching the filters, most frequent (or most recent) first; and the total."""
        conds = [entries_t.c.tenant == tenant, entries_t.c.count >= min_count]
        if status is not None:
            conds.append(entries_t.c.status == status)
        if bot is not None:
            conds.append(entries_t.c.bot == bot)
        if reason is not None:
            conds.append(entries_t.c.reasons.like(f'%"{reason}":%'))
        if q:
            conds.append(entries_t.c.normalized.contains(self.normalized(q), autoescape=True))
        order = ((entries_t.c.count.desc(), entries_t.c.last_seen.desc()) if sort == "count"
                 else (entries_t.c.last_seen.desc(),))
        with self.events.reader.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(entries_t).where(*conds)).scalar_one())
            rows = conn.execute(select(entries_t).where(*conds).order_by(*order, entries_t.c.id)
                                .limit(limit).offset(offset)).all()
        return [_entry(r) for r in rows], total

    def get(self, tenant: str, entry_id: int) -> Entry:
        with self.events.reader.connect() as conn:
            row = conn.execute(select(entries_t).where(entries_t.c.tenant == tenant, entries_t.c.id == entry_id)).first()
        if row is None:
            raise QueueError("not_found", f"no misunderstood entry {entry_id}")
        return _entry(row)

    def resolve(self, tenant: str, entry_ids: Sequence[int], action: Action, target: str | None, by: str,
                note: str | None = None, now: float | None = None) -> list[Entry]:
        """Resolve entries (all or none: an unknown id refuses the whole call). Checking that ``target``
        exists (intent, article) is the caller's job; here only its form is checked."""
        if action not in ("intent", "new_intent", "article", "ignore"):
            raise QueueError("invalid_action", "`action` must be one of intent, new_intent, article, ignore")
        if action == "ignore":
            target = None
        elif not target or not target.strip():
            raise QueueError("missing_target", f"`target` is required for action {action!r}")
        elif action in ("intent", "new_intent") and not _INTENT_NAME.match(target):
            raise QueueError("invalid_target", "an intent name is 1..64 letters, digits, Chinese characters or _ - . :")
        elif len(target) > 128:
            raise QueueError("invalid_target", "`target` is at most 128 characters")
        if not entry_ids:
            raise QueueError("missing_ids", "give at least one entry id")
        ids = list(dict.fromkeys(entry_ids))
        values = {"status": "ignored" if action == "ignore" else "resolved", "action": action, "target": target,
                  "resolved_by": by[:128], "resolved_at": now or time.time(), "note": (note or None) and note[:500]}
        with self.engine.begin() as conn:
            found = {r[0] for r in conn.execute(select(entries_t.c.id).where(entries_t.c.tenant == tenant,
                                                                             entries_t.c.id.in_(ids)))}
            missing = [i for i in ids if i not in found]
            if missing:
                raise QueueError("not_found", f"no misunderstood entries {missing}")
            conn.execute(update(entries_t).where(entries_t.c.tenant == tenant, entries_t.c.id.in_(ids))
                         .values(**values))
        return [self.get(tenant, i) for i in ids]

    def reopen(self, tenant: str, entry_id: int) -> Entry:
        with self.engine.begin() as conn:
            done = conn.execute(update(entries_t).where(entries_t.c.tenant == tenant, entries_t.c.id == entry_id)
                                .values(status="open", action=None, target=None, resolved_by=None,
                                        resolved_at=None, note=None)).rowcount
        if not done:
            raise QueueError("not_found", f"no misunderstood entry {entry_id}")
        return self.get(tenant, entry_id)

    # ------------------------------------------------------------ training data
    def labels(self, tenant: str, bot: str | None = None, include_unassigned: bool = True,
               known_intents: Sequence[str] = ()) -> list[Label]:
        """Operator labels (intent / new_intent resolutions) and agreed weak labels, with weights;
        ignored utterances the bot had answered come back as out-of-scope hard negatives.

        ``bot``: only that bot's entries (plus entries without a bot when ``include_unassigned``).
        Weak labels never override an operator's decision on the same text (label or ignore).
        """
        cfg = self.config
        bots = None if bot is None else ([bot, ""] if include_unassigned else [bot])
        with self.events.reader.connect() as conn:
            q = select(entries_t).where(entries_t.c.tenant == tenant, entries_t.c.status != "open")
            w = select(weak_t).where(weak_t.c.tenant == tenant)
            if bots is not None:
                q, w = q.where(entries_t.c.bot.in_(bots)), w.where(weak_t.c.bot.in_(bots))
            decided = conn.execute(q).all()
            weak_rows = conn.execute(w).all()
            predicted_of = dict(conn.execute(select(entries_t.c.key, entries_t.c.predicted)
                                             .where(entries_t.c.tenant == tenant)).all())
        known = set(known_intents)
        out: list[Label] = []
        taken = {r.key for r in decided}
        for r in decided:
            if r.action == "ignore" and r.predicted:  # the bot answered what it should not have: out of scope
                out.append(Label(text=r.text, intent=OOS_LABEL, source="operator", count=r.count,
                                 weight=cfg.hard_negative_weight, hard_negative=True, predicted=r.predicted))
                continue
            if r.action not in ("intent", "new_intent") or not r.target:
                continue
            hard = r.predicted is not None and r.predicted != r.target
            out.append(Label(text=r.text, intent=r.target, source="operator", count=r.count,
                             weight=cfg.hard_negative_weight if hard else 1.0, hard_negative=hard,
                             predicted=r.predicted, new_intent=r.action == "new_intent" or (bool(known)
                                                                                           and r.target not in known)))
        by_key: dict[str, list] = {}
        for r in weak_rows:
            if r.key not in taken:
                by_key.setdefault(r.key, []).append(r)
        for rows in by_key.values():
            total = sum(r.count for r in rows)
            top = max(rows, key=lambda r: (r.count, r.last_seen))
            if top.count < cfg.weak_min_count or top.count / total < cfg.weak_min_agreement:
                continue
            predicted = predicted_of.get(top.key)
            hard = predicted is not None and predicted != top.intent
            out.append(Label(text=top.text, intent=top.intent, source="weak", count=top.count,
                             weight=cfg.weak_weight * (cfg.hard_negative_weight if hard else 1.0),
                             hard_negative=hard, predicted=predicted))
        return out


def _entry(r) -> Entry:
    return Entry(id=r.id, tenant=r.tenant, bot=r.bot or None, text=r.text, normalized=r.normalized, count=r.count,
                 reasons=json.loads(r.reasons), predicted=r.predicted, confidence=r.confidence,
                 first_seen=r.first_seen, last_seen=r.last_seen, last_conversation_id=r.last_conversation_id,
                 channel=r.channel, status=r.status, action=r.action, target=r.target, resolved_by=r.resolved_by,
                 resolved_at=r.resolved_at, note=r.note)
