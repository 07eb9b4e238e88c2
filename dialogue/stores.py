"""Tracker stores behind one interface: in-memory, SQL (SQLite by default, PostgreSQL) and Redis.

Every store keeps the full append-only event log of a conversation plus a snapshot of the derived
state, and loads a tracker as *snapshot + bounded tail*. Two guarantees hold across processes and
replicas:

* **one message at a time per conversation** — :meth:`TrackerStore.lock` is a per-conversation
  lock (an in-process lock plus, for SQL, a lease row and, for Redis, a token lock with expiry);
* **no lost update, even if a lock lease expired** — :meth:`TrackerStore.save` appends only if the
  log still has the length the tracker was loaded with, else it raises :class:`ConcurrentUpdate`.

``build_store("memory" | "sqlite:///path.db" | "postgresql+psycopg://..." | "redis://...")``.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .events import Event, decode_event, encode_event, event_name
from .state import DialogueState, decode_state, encode_state
from .tracker import Tracker

DEFAULT_LEASE_S = 30.0
DEFAULT_WAIT_S = 10.0
DEFAULT_TIMEOUT_S = 3.0  # connect/read timeout towards Redis and PostgreSQL
_ID_CHARS = 200  # a conversation id (≤128) behind a tenant prefix (≤33, dialogue/tenancy.py)
_KV_KEY_CHARS = 400  # "<tenant>/identity:<kind ≤64>:<value ≤256>"


class StoreError(RuntimeError):
    pass


class ConversationBusy(StoreError):
    """The conversation's lock could not be taken within the wait time."""


class ConcurrentUpdate(StoreError):
    """Someone else appended events to the conversation since this tracker was loaded."""


class _StripedLocks:
    """In-process locks by conversation id; a fixed number of stripes bounds memory. Re-entrant,
    because a thread holding a conversation takes the visitor index's lock, which may share its stripe."""

    def __init__(self, stripes: int = 4096) -> None:
        self._locks = [threading.RLock() for _ in range(stripes)]

    def get(self, key: str) -> threading.RLock:
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        return self._locks[h % len(self._locks)]


class TrackerStore(ABC):
    """Subclasses implement the storage primitives; snapshots and locking policy live here."""

    def __init__(self, snapshot_every: int = 60, keep_turns: int = 6, lease_s: float = DEFAULT_LEASE_S,
                 wait_s: float = DEFAULT_WAIT_S) -> None:
        self.snapshot_every = snapshot_every
        self.keep_turns = keep_turns
        self.lease_s = lease_s
        self.wait_s = wait_s
        self._local = _StripedLocks()
        self.outbox: Any = None  # a lingxi.dialogue.outbox.Outbox: announcements staged with each append

    # ---- primitives
    @abstractmethod
    def _read(self, cid: str) -> tuple[int, DialogueState | None, list[Event]] | None:
        """(snapshot seq, snapshot state, events from seq on) or None when unknown."""

    @abstractmethod
    def _append(self, cid: str, expected: int, events: list[Event],
                snapshot: tuple[int, DialogueState] | None) -> None:
        """Append ``events`` iff the log has ``expected`` events; store ``snapshot`` if given."""

    @abstractmethod
    def events(self, cid: str, start: int = 0) -> list[Event]:
        """The stored log from ``start`` (the whole history by default)."""

    @abstractmethod
    def keys(self) -> list[str]:
        ...

    @abstractmethod
    def kv_get(self, key: str) -> bytes | None:
        """A small side table (visitor records live here), shared like the trackers."""

    @abstractmethod
    def kv_set(self, key: str, value: bytes) -> None:
        ...

    @contextmanager
    def _remote_lock(self, cid: str, deadline: float) -> Iterator[None]:
        yield

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    # ---- public API
    def exists(self, cid: str) -> bool:
        return self._read(cid) is not None

    def load(self, cid: str) -> Tracker | None:
        found = self._read(cid)
        if found is None:
            return None
        seq, state, tail = found
        return Tracker(cid, state, seq, tail)

    def load_or_create(self, cid: str) -> Tracker:
        return self.load(cid) or Tracker(cid)

    def save(self, tracker: Tracker) -> None:
        new = tracker.new_events
        if not new:
            return
        snap = tracker.snapshot_point(self.snapshot_every, self.keep_turns)
        self._append(tracker.conversation_id, tracker.stored, new, snap)
        tracker.mark_saved()
        if snap:
            tracker.rebase(*snap)

    @contextmanager
    def lock(self, cid: str, wait_s: float | None = None) -> Iterator[None]:
        """Hold the conversation for one turn. Raises :class:`ConversationBusy` after ``wait_s``."""
        wait = self.wait_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait
        local = self._local.get(cid)
        if not local.acquire(timeout=max(wait, 0.0)):
            raise ConversationBusy(f"conversation {cid!r} is busy")
        try:
            with self._remote_lock(cid, deadline):
                yield
        finally:
            local.release()


# ---------------------------------------------------------------------- memory


class MemoryTrackerStore(TrackerStore):
    """Process-local; events are kept encoded so nothing is shared by reference with callers."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._logs: dict[str, list[bytes]] = {}
        self._snaps: dict[str, tuple[int, bytes]] = {}
        self._kv: dict[str, bytes] = {}
        self._guard = threading.Lock()

    def kv_get(self, key):
        with self._guard:
            return self._kv.get(key)

    def kv_set(self, key, value):
        with self._guard:
            self._kv[key] = bytes(value)

    def _read(self, cid):
        with self._guard:
            log = self._logs.get(cid)
            if log is None:
                return None
            seq, raw = self._snaps.get(cid, (0, b""))
            tail = list(log[seq:])
        return seq, decode_state(raw) if raw else None, [decode_event(b) for b in tail]

    def _append(self, cid, expected, events, snapshot):
        encoded = [encode_event(e) for e in events]
        with self._guard:
            log = self._logs.setdefault(cid, [])
            if len(log) != expected:
                raise ConcurrentUpdate(f"conversation {cid!r} has {len(log)} events, expected {expected}")
            log.extend(encoded)
            if self.outbox is not None:
                self.outbox.stage(None, cid, expected, events)
            if snapshot:
                self._snaps[cid] = (snapshot[0], encode_state(snapshot[1]))

    def events(self, cid, start=0):
        with self._guard:
            return [decode_event(b) for b in self._logs.get(cid, [])[start:]]

    def keys(self):
        with self._guard:
            return list(self._logs)


# ---------------------------------------------------------------------- SQL


class SQLTrackerStore(TrackerStore):
    """SQLAlchemy Core over SQLite (default, WAL) or PostgreSQL. Events are JSON text rows."""

    def __init__(self, url: str, prefix: str = "lingxi_dialogue", timeout_s: float = DEFAULT_TIMEOUT_S,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import sqlalchemy as sa

        self.sa = sa
        self.url = url
        self.engine = make_engine(url, timeout_s)
        md = sa.MetaData()
        self.metadata = md
        self.conversations = sa.Table(
            f"{prefix}_conversations", md,
            sa.Column("conversation_id", sa.String(_ID_CHARS), primary_key=True),
            sa.Column("event_count", sa.Integer, nullable=False),
            sa.Column("created", sa.Float, nullable=False),
            sa.Column("updated", sa.Float, nullable=False),
        )
        self.events_t = sa.Table(
            f"{prefix}_events", md,
            sa.Column("conversation_id", sa.String(_ID_CHARS), primary_key=True),
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("ts", sa.Float, nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("data", sa.Text, nullable=False),
        )
        self.snapshots = sa.Table(
            f"{prefix}_snapshots", md,
            sa.Column("conversation_id", sa.String(_ID_CHARS), primary_key=True),
            sa.Column("seq", sa.Integer, nullable=False),
            sa.Column("state", sa.Text, nullable=False),
        )
        self.locks = sa.Table(
            f"{prefix}_locks", md,
            sa.Column("name", sa.String(_ID_CHARS + 40), primary_key=True),
            sa.Column("owner", sa.String(64), nullable=False),
            sa.Column("expires", sa.Float, nullable=False),
        )
        self.kv = sa.Table(
            f"{prefix}_kv", md,
            sa.Column("key", sa.String(_KV_KEY_CHARS), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
        from lingxi.retrieval.store import create_tables

        create_tables(md, self.engine)  # replicas may start together on an empty database
        self._widen_columns()

    def _widen_columns(self) -> None:
        """Tables created before tenants had narrower key columns; PostgreSQL enforces the width
        (SQLite does not), so widen them in place (a catalogue-only change for varchar)."""
        if self.engine.dialect.name != "postgresql":
            return
        sa = self.sa
        wanted = [(t.name, c.name, c.type.length) for t in self.metadata.sorted_tables for c in t.columns
                  if isinstance(c.type, sa.String) and c.type.length]
        with self.engine.begin() as conn:
            for table, column, length in wanted:
                current = conn.execute(sa.text(
                    "SELECT character_maximum_length FROM information_schema.columns WHERE table_schema = "
                    "current_schema() AND table_name = :t AND column_name = :c"),
                    {"t": table, "c": column}).scalar()
                if current is not None and current < length:
                    conn.execute(sa.text(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" '
                                         f"TYPE varchar({length})"))

    def close(self) -> None:
        self.engine.dispose()

    def drop(self) -> None:
        """Remove this store's tables (tests)."""
        self.metadata.drop_all(self.engine)

    def kv_get(self, key):
        with self.engine.connect() as conn:
            row = conn.execute(self.sa.select(self.kv.c.value).where(self.kv.c.key == key)).first()
        return row.value.encode() if row else None

    def kv_set(self, key, value):
        with self.engine.begin() as conn:
            res = conn.execute(self.kv.update().where(self.kv.c.key == key).values(value=value.decode()))
            if res.rowcount == 0:
                conn.execute(self.kv.insert().values(key=key, value=value.decode()))

    def _read(self, cid):
        sa = self.sa
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.conversations.c.event_count)
                               .where(self.conversations.c.conversation_id == cid)).first()
            if row is None:
                return None
            snap = conn.execute(sa.select(self.snapshots.c.seq, self.snapshots.c.state)
                                .where(self.snapshots.c.conversation_id == cid)).first()
            seq = snap.seq if snap else 0
            rows = conn.execute(sa.select(self.events_t.c.data)
                                .where(self.events_t.c.conversation_id == cid, self.events_t.c.seq >= seq)
                                .order_by(self.events_t.c.seq)).all()
        return seq, decode_state(snap.state) if snap else None, [decode_event(r.data) for r in rows]

    def _append(self, cid, expected, events, snapshot):
        sa = self.sa
        now = time.time()
        rows = [{"conversation_id": cid, "seq": expected + i, "ts": e.ts, "kind": event_name(e),
                 "data": encode_event(e).decode()} for i, e in enumerate(events)]
        try:
            with self.engine.begin() as conn:
                if expected == 0:
                    conn.execute(self.conversations.insert().values(
                        conversation_id=cid, event_count=len(events), created=now, updated=now))
                else:
                    res = conn.execute(self.conversations.update()
                                       .where(self.conversations.c.conversation_id == cid,
                                              self.conversations.c.event_count == expected)
                                       .values(event_count=expected + len(events), updated=now))
                    if res.rowcount != 1:
                        raise ConcurrentUpdate(f"conversation {cid!r} changed since it was loaded")
                conn.execute(self.events_t.insert(), rows)
                if self.outbox is not None:  # same transaction: announced iff saved
                    self.outbox.stage(conn, cid, expected, events)
                if snapshot:
                    conn.execute(self.snapshots.delete().where(self.snapshots.c.conversation_id == cid))
                    conn.execute(self.snapshots.insert().values(
                        conversation_id=cid, seq=snapshot[0], state=encode_state(snapshot[1]).decode()))
        except sa.exc.IntegrityError as exc:
            raise ConcurrentUpdate(f"conversation {cid!r} changed since it was loaded") from exc

    def events(self, cid, start=0):
        sa = self.sa
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.events_t.c.data)
                                .where(self.events_t.c.conversation_id == cid, self.events_t.c.seq >= start)
                                .order_by(self.events_t.c.seq)).all()
        return [decode_event(r.data) for r in rows]

    def keys(self):
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(self.sa.select(self.conversations.c.conversation_id))]

    @contextmanager
    def _remote_lock(self, cid: str, deadline: float) -> Iterator[None]:
        """A lease row: taken if absent or expired; released by its owner only."""
        sa = self.sa
        name = f"conv:{cid}"
        owner = uuid.uuid4().hex
        pause = 0.002
        while True:
            now = time.time()
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.locks.insert().values(name=name, owner=owner, expires=now + self.lease_s))
                break
            except sa.exc.IntegrityError:
                with self.engine.begin() as conn:
                    res = conn.execute(self.locks.update()
                                       .where(self.locks.c.name == name, self.locks.c.expires < now)
                                       .values(owner=owner, expires=now + self.lease_s))
                if res.rowcount == 1:
                    break
            if time.monotonic() >= deadline:
                raise ConversationBusy(f"conversation {cid!r} is busy (held by another process)")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        try:
            yield
        finally:
            with self.engine.begin() as conn:
                conn.execute(self.locks.delete().where(self.locks.c.name == name, self.locks.c.owner == owner))


def make_engine(url: str, timeout_s: float = DEFAULT_TIMEOUT_S):
    """A SQLAlchemy engine; SQLite files get WAL journaling and a busy timeout, PostgreSQL a
    connect timeout and a statement timeout."""
    import sqlalchemy as sa

    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    from lingxi.retrieval.store import pg_connect_args  # never wait forever for a connection or a query

    return sa.create_engine(url, pool_pre_ping=True, connect_args=pg_connect_args(url, timeout_s))


# ---------------------------------------------------------------------- Redis

_APPEND_LUA = """
local n = redis.call('LLEN', KEYS[1])
if n ~= tonumber(ARGV[1]) then return -1 - n end
for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('SADD', KEYS[3], ARGV[3])
return redis.call('LLEN', KEYS[1])
"""


class RedisTrackerStore(TrackerStore):
    """Events in a list, the snapshot in a string, both under one hash tag (cluster-safe Lua)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "lingxi", record_exp: int | None = None,
                 client: Any = None, timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import redis

        # timeouts: a dead Redis costs a request at most ~timeout_s (then 503), never a hung worker;
        # redis-py reconnects on the next command once Redis is back
        self.client = client or redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                                     health_check_interval=30)
        self.prefix = prefix
        self.record_exp = record_exp
        self._append_script = self.client.register_script(_APPEND_LUA)

    def _k(self, cid: str, what: str) -> str:
        return f"{self.prefix}:conv:{{{cid}}}:{what}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:conversations"

    def close(self) -> None:
        self.client.close()

    def drop(self) -> None:
        """Remove every key under this store's prefix (tests)."""
        for key in self.client.scan_iter(f"{self.prefix}:*", count=500):
            self.client.delete(key)

    def kv_get(self, key):
        return self.client.get(f"{self.prefix}:kv:{key}")

    def kv_set(self, key, value):
        self.client.set(f"{self.prefix}:kv:{key}", value)

    def _read(self, cid):
        snap_raw = self.client.get(self._k(cid, "snap"))
        seq, state = 0, None
        if snap_raw:
            head, _, body = snap_raw.partition(b"\n")
            seq, state = int(head), decode_state(body)
        raw = self.client.lrange(self._k(cid, "events"), seq, -1)
        if not raw and seq == 0 and not self.client.exists(self._k(cid, "events")):
            return None
        return seq, state, [decode_event(b) for b in raw]

    def _append(self, cid, expected, events, snapshot):
        snap = b""
        if snapshot:
            snap = str(snapshot[0]).encode() + b"\n" + encode_state(snapshot[1])
        args = [expected, snap, cid, *[encode_event(e) for e in events]]
        result = self._append_script(keys=[self._k(cid, "events"), self._k(cid, "snap"), self._index], args=args)
        if int(result) < 0:
            raise ConcurrentUpdate(f"conversation {cid!r} has {-int(result) - 1} events, expected {expected}")
        if self.record_exp:
            self.client.expire(self._k(cid, "events"), self.record_exp)
            self.client.expire(self._k(cid, "snap"), self.record_exp)

    def events(self, cid, start=0):
        return [decode_event(b) for b in self.client.lrange(self._k(cid, "events"), start, -1)]

    def keys(self):
        return sorted(k.decode() for k in self.client.smembers(self._index))

    @contextmanager
    def _remote_lock(self, cid: str, deadline: float) -> Iterator[None]:
        from redis.exceptions import LockError

        lock = self.client.lock(self._k(cid, "lock"), timeout=self.lease_s, sleep=0.003,
                                blocking_timeout=max(deadline - time.monotonic(), 0.0), thread_local=False)
        if not lock.acquire():
            raise ConversationBusy(f"conversation {cid!r} is busy (held by another replica)")
        try:
            yield
        finally:
            # LockError: the lease expired and someone else holds it now; their save checks the seq
            with suppress(LockError):
                lock.release()


def build_store(url: str | None, **kwargs: Any) -> TrackerStore:
    """``memory`` | ``sqlite:///file.db`` | any SQLAlchemy URL | ``redis://host:port/db``."""
    if not url or url == "memory":
        kwargs.pop("timeout_s", None)
        return MemoryTrackerStore(**kwargs)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisTrackerStore(url, **kwargs)
    return SQLTrackerStore(url, **kwargs)
