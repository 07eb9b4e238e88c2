"""A durable outbox of conversation events that a human-agent platform must hear about.

Why here: the outbox row is written by the tracker store *in the same transaction* as the events
it announces (:meth:`lingxi.dialogue.stores.SQLTrackerStore._append`), so a handoff that is saved is
always announced and one that failed to save never is. Delivery (signed webhooks, retries) is the
serving layer's job; this module only stages, claims and settles rows.

One row per announced event; its id is derived from the stored key and the event's position in the
log, so it is stable across retries and replays and receivers can deduplicate on it.

Kinds: ``handoff`` (a live or leave-a-message handoff), ``message`` (the customer wrote while a
human holds the conversation), ``released`` (the conversation went back to the bot).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from .events import Event, HandedOff, HandoffReleased, TurnDecided, UserUttered

DEFAULT_TENANT = "default"
STATUSES = ("pending", "delivered", "failed")


class OutboxItem(msgspec.Struct, kw_only=True):
    event_id: str
    tenant: str
    conversation_id: str
    seq: int
    kind: str
    created: float
    status: str = "pending"
    attempts: int = 0
    next_at: float = 0.0
    last_error: str | None = None
    last_status: int | None = None
    delivered_at: float | None = None


def split_key(key: str) -> tuple[str, str]:
    """``(tenant, conversation id)`` of a stored key (``<tenant>/<id>``; the default tenant has no prefix)."""
    tenant, sep, cid = key.partition("/")
    return (tenant, cid) if sep else (DEFAULT_TENANT, key)


def event_id(key: str, seq: int) -> str:
    return "evt_" + hashlib.sha256(f"{key}\n{seq}".encode()).hexdigest()[:32]


def announced(events: Sequence[Event]) -> list[tuple[int, str]]:
    """``(index, kind)`` of the events in one saved batch that the platform must hear about.

    A customer message counts while a human holds the conversation: the policy then records it and
    decides ``silent`` in the same batch."""
    silent = any(isinstance(e, TurnDecided) and e.decision == "silent" for e in events)
    out: list[tuple[int, str]] = []
    for i, e in enumerate(events):
        if isinstance(e, HandedOff):
            out.append((i, "handoff"))
        elif isinstance(e, UserUttered) and silent:
            out.append((i, "message"))
        elif isinstance(e, HandoffReleased):
            out.append((i, "released"))
    return out


class Outbox:
    """Stages rows (inside the store's transaction) and lets a deliverer claim and settle them.

    ``accepts(tenant)``: only tenants with a configured platform get rows."""

    def __init__(self, accepts: Callable[[str], bool] | None = None) -> None:
        self.accepts = accepts or (lambda _tenant: True)

    def items_for(self, key: str, expected: int, events: Sequence[Event], now: float) -> list[OutboxItem]:
        tenant, cid = split_key(key)
        if not self.accepts(tenant):
            return []
        return [OutboxItem(event_id=event_id(key, expected + i), tenant=tenant, conversation_id=cid,
                           seq=expected + i, kind=kind, created=now, next_at=now)
                for i, kind in announced(events)]

    # ---- implemented per backend
    def stage(self, conn: Any, key: str, expected: int, events: Sequence[Event]) -> None:
        raise NotImplementedError

    def claim(self, limit: int, lease_s: float, now: float | None = None) -> list[OutboxItem]:
        """Due pending rows, at most one per conversation and only its oldest (announcements keep
        their order); each is leased (``next_at`` moved) so another deliverer skips it meanwhile."""
        raise NotImplementedError

    def settle(self, item_id: str, *, ok: bool, error: str | None = None, status: int | None = None,
               retry_at: float | None = None) -> None:
        """Delivered; or failed with a retry at ``retry_at``; or (``retry_at`` None) failed for good."""
        raise NotImplementedError

    def list(self, tenant: str | None, status: str | None, limit: int = 100) -> list[OutboxItem]:
        raise NotImplementedError

    def get(self, item_id: str) -> OutboxItem | None:
        raise NotImplementedError

    def replay(self, item_id: str, now: float | None = None) -> OutboxItem | None:
        """Send again (a failed or delivered row): pending, attempts reset, due now."""
        raise NotImplementedError


class MemoryOutbox(Outbox):
    def __init__(self, accepts: Callable[[str], bool] | None = None) -> None:
        super().__init__(accepts)
        self._rows: dict[str, OutboxItem] = {}
        self._guard = threading.Lock()

    def stage(self, conn, key, expected, events):
        items = self.items_for(key, expected, events, time.time())
        with self._guard:
            for item in items:
                self._rows.setdefault(item.event_id, item)

    def claim(self, limit, lease_s, now=None):
        now = time.time() if now is None else now
        with self._guard:
            pending = sorted((r for r in self._rows.values() if r.status == "pending"), key=lambda r: (r.created, r.seq))
            first: dict[tuple[str, str], OutboxItem] = {}
            for r in pending:
                first.setdefault((r.tenant, r.conversation_id), r)
            out = [r for r in first.values() if r.next_at <= now][:limit]
            for r in out:
                r.next_at = now + lease_s
            return [msgspec.structs.replace(r) for r in out]

    def settle(self, item_id, *, ok, error=None, status=None, retry_at=None):
        with self._guard:
            r = self._rows.get(item_id)
            if r is None:
                return
            r.attempts += 1
            r.last_status = status
            if ok:
                r.status, r.delivered_at, r.last_error = "delivered", time.time(), None
            else:
                r.last_error = error
                if retry_at is None:
                    r.status = "failed"
                else:
                    r.next_at = retry_at

    def list(self, tenant, status, limit=100):
        with self._guard:
            rows = [r for r in self._rows.values() if (tenant is None or r.tenant == tenant)
                    and (status is None or r.status == status)]
        return [msgspec.structs.replace(r) for r in sorted(rows, key=lambda r: (r.created, r.seq))[:limit]]

    def get(self, item_id):
        with self._guard:
            r = self._rows.get(item_id)
            return msgspec.structs.replace(r) if r else None

    def replay(self, item_id, now=None):
        with self._guard:
            r = self._rows.get(item_id)
            if r is None:
                return None
            r.status, r.attempts, r.next_at, r.last_error = "pending", 0, time.time() if now is None else now, None
            return msgspec.structs.replace(r)


class SQLOutbox(Outbox):
    """The outbox table beside the tracker tables (same database, so the same transaction)."""

    def __init__(self, engine: Any, prefix: str = "lingxi_dialogue", accepts: Callable[[str], bool] | None = None
                 ) -> None:
        super().__init__(accepts)
        import sqlalchemy as sa

        from lingxi.retrieval.store import create_tables

        self.sa = sa
        self.engine = engine
        md = sa.MetaData()
        self.table = sa.Table(
            f"{prefix}_outbox", md,
            sa.Column("event_id", sa.String(40), primary_key=True),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("conversation_id", sa.String(200), nullable=False),
            sa.Column("seq", sa.Integer, nullable=False),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("created", sa.Float, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("next_at", sa.Float, nullable=False),
            sa.Column("last_error", sa.Text, nullable=True),
            sa.Column("last_status", sa.Integer, nullable=True),
            sa.Column("delivered_at", sa.Float, nullable=True),
            sa.Index(f"{prefix}_outbox_due", "status", "next_at"),
        )
        create_tables(md, engine)

    @staticmethod
    def _item(row: Any) -> OutboxItem:
        return OutboxItem(**{k: getattr(row, k) for k in OutboxItem.__struct_fields__})

    def stage(self, conn, key, expected, events):
        items = self.items_for(key, expected, events, time.time())
        if items:  # the caller's transaction: the rows commit (or roll back) with the events
            conn.execute(self.table.insert(), [msgspec.structs.asdict(i) for i in items])

    def claim(self, limit, lease_s, now=None):
        sa, t = self.sa, self.table
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            due = conn.execute(sa.select(t).where(t.c.status == "pending", t.c.next_at <= now)
                               .order_by(t.c.created, t.c.seq).limit(limit * 4)).all()
            if not due:
                return []
            convs = {(r.tenant, r.conversation_id) for r in due}
            heads = conn.execute(sa.select(t.c.tenant, t.c.conversation_id, sa.func.min(t.c.seq))
                                 .where(t.c.status == "pending",
                                        t.c.conversation_id.in_(sorted({c for _, c in convs})))
                                 .group_by(t.c.tenant, t.c.conversation_id)).all()
            head = {(r[0], r[1]): r[2] for r in heads}
            out: list[OutboxItem] = []
            for r in due:
                if head.get((r.tenant, r.conversation_id)) != r.seq or len(out) >= limit:
                    continue
                res = conn.execute(t.update().where(t.c.event_id == r.event_id, t.c.status == "pending",
                                                    t.c.next_at == r.next_at).values(next_at=now + lease_s))
                if res.rowcount == 1:
                    out.append(self._item(r))
        return out

    def settle(self, item_id, *, ok, error=None, status=None, retry_at=None):
        t = self.table
        values: dict[str, Any] = {"attempts": t.c.attempts + 1, "last_status": status}
        if ok:
            values.update(status="delivered", delivered_at=time.time(), last_error=None)
        elif retry_at is None:
            values.update(status="failed", last_error=(error or "")[:2000])
        else:
            values.update(next_at=retry_at, last_error=(error or "")[:2000])
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.event_id == item_id).values(**values))

    def list(self, tenant, status, limit=100):
        sa, t = self.sa, self.table
        q = sa.select(t).order_by(t.c.created, t.c.seq).limit(limit)
        if tenant is not None:
            q = q.where(t.c.tenant == tenant)
        if status is not None:
            q = q.where(t.c.status == status)
        with self.engine.connect() as conn:
            return [self._item(r) for r in conn.execute(q)]

    def get(self, item_id):
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(self.sa.select(t).where(t.c.event_id == item_id)).first()
        return self._item(row) if row else None

    def replay(self, item_id, now=None):
        t = self.table
        with self.engine.begin() as conn:
            res = conn.execute(t.update().where(t.c.event_id == item_id).values(
                status="pending", attempts=0, next_at=time.time() if now is None else now, last_error=None))
        return self.get(item_id) if res.rowcount else None
