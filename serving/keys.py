"""API keys in a database: created, listed and revoked from the CLI (``lingxi keys``) or ``/v1/keys``.

A key looks like ``lx_<key_id>_<secret>``: ``key_id`` (12 hex digits) is public and names the key
in listings and logs; the secret is 32 random bytes. Only the SHA-256 digest of the whole key is
stored, so a copy of the database does not reveal a usable key.

Why SHA-256 and not argon2/bcrypt: slow password hashes exist to make guessing *low-entropy*
human passwords expensive. A 256-bit random secret cannot be guessed at any hash speed, so a slow
hash would add nothing but ~50 ms of CPU to every request (on two cores that caps the API at a few
dozen requests per second); an unsalted digest also lets a presented key be found with one
indexed lookup.

Revocation takes effect at once on every worker and replica: ``lingxi_api_key_state.version`` is
bumped in the same transaction as every create and revoke, and :class:`KeyCache` re-reads a key
whenever that version moved (one single-row read per request; no time-based staleness).

SQLite (``<home>/keys.db``) by default, PostgreSQL by URL (``keys_url``) for replicas.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from lingxi.dialogue.stores import make_engine  # WAL; reads do not take SQLite's write lock
from lingxi.retrieval.store import create_tables, insert_if_missing, sqlite_url

from .faults import BackendUnavailable
from .settings import ROLES, TENANT_PATTERN

metadata = MetaData()

keys_t = Table(
    "lingxi_api_keys", metadata,
    Column("key_id", String(32), primary_key=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("tenant", String(64), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False, default=""),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

state_t = Table(
    "lingxi_api_key_state", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
)

_VERSION_SQL = f"SELECT version FROM {state_t.name} WHERE id = 1"  # constant: no parameters to bind
_NAME = re.compile(r"^[\w.@:\- ]{1,128}$")


class KeyProblem(ValueError):
    """Bad input for a key operation; ``code`` is the stable API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class KeyRecord(msgspec.Struct, kw_only=True):
    """What is known about a key (never its secret)."""

    key_id: str
    name: str
    tenant: str
    role: str
    created_at: datetime
    created_by: str = ""
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _record(row) -> KeyRecord:
    return KeyRecord(key_id=row.key_id, name=row.name, tenant=row.tenant, role=row.role,
                     created_at=_utc(row.created_at), created_by=row.created_by or "",
                     revoked_at=_utc(row.revoked_at))


def check_key_fields(name: str, tenant: str, role: str) -> None:
    if not _NAME.match(name or ""):
        raise KeyProblem("invalid_field", "`name` must be 1..128 letters, digits, spaces or . @ : _ -")
    if not re.match(TENANT_PATTERN, tenant or ""):
        raise KeyProblem("invalid_tenant", "`tenant` must be 1..32 lowercase letters, digits, _ or -, "
                                          "starting with a letter or digit")
    if role not in ROLES:
        raise KeyProblem("invalid_role", f"`role` must be one of {list(ROLES)}")


class WouldWait(Exception):  # noqa: N818 - a signal to the caller, not an error
    """A no-wait read could not answer at once (store busy, remote or not set up): read in a thread."""


def _nowait_engine(url: str) -> Engine | None:
    """For a SQLite *file*: a second engine whose reads give up at once instead of waiting for a lock
    (busy timeout 0). The file is in WAL mode (set by the main engine), where reads almost never
    wait, so the event loop can read the key version itself instead of hopping to a worker thread:
    0.15-0.35 ms less per request in a sequential in-process run (evals/RESULTS.md)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None  # remote databases can take milliseconds; an in-memory one is per connection
    return create_engine(url, connect_args={"timeout": 0, "check_same_thread": False})


class KeyStore:
    """The key table and its version counter. Thread-safe (one connection per call).

    ``version`` and ``find`` take ``nowait=True`` for callers on an event loop: on a SQLite file they
    read through an engine that never waits for a lock (a busy file fails at once with the driver's
    "database is locked"); on any other store they raise :class:`WouldWait`. :class:`KeyCache` turns
    either failure into :class:`WouldWait`, and the caller reads normally in a worker thread.
    """

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self._nowait = _nowait_engine(url) if engine is None else None

    @property
    def reads_without_waiting(self) -> bool:
        return self._nowait is not None

    def _reader(self, nowait: bool) -> Engine:
        if not nowait:
            return self.engine
        if self._nowait is None:
            raise WouldWait("this key store is read in a worker thread")
        return self._nowait

    @classmethod
    def from_settings(cls, settings) -> KeyStore:
        """The configured store; tables are created by :meth:`create_schema` (or the first lookup)."""
        url = getattr(settings, "keys_url", None) or sqlite_url(Path(settings.home) / "keys.db")
        return cls(url)

    def create_schema(self) -> KeyStore:
        create_tables(metadata, self.engine)
        with self.engine.begin() as conn:
            insert_if_missing(conn, state_t, {"id": 1, "version": 0})
        return self

    def dispose(self) -> None:
        self.engine.dispose()
        if self._nowait is not None:
            self._nowait.dispose()

    def version(self, nowait: bool = False) -> int:
        """Bumped by every create and revoke; 0 means no key was ever created here."""
        # Read on every request: a fixed driver-level statement skips SQLAlchemy's per-call statement
        # compilation and cache-key generation, which cost more than the read itself (7% of the
        # request path's GIL time under load).
        with self._reader(nowait).connect() as conn:
            return int(conn.exec_driver_sql(_VERSION_SQL).scalar_one())

    def find(self, sha256: str, nowait: bool = False) -> KeyRecord | None:
        with self._reader(nowait).connect() as conn:
            row = conn.execute(select(keys_t).where(keys_t.c.sha256 == sha256)).first()
        return _record(row) if row else None

    def create(self, name: str, tenant: str, role: str, created_by: str = "") -> tuple[KeyRecord, str]:
        """A new key; returns the record and the key itself (shown once, never stored)."""
        check_key_fields(name, tenant, role)
        for _ in range(5):
            key_id = secrets.token_hex(6)
            key = f"lx_{key_id}_{secrets.token_urlsafe(32)}"
            now = datetime.now(UTC)
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(keys_t).values(key_id=key_id, sha256=digest(key), name=name,
                                                       tenant=tenant, role=role, created_at=now,
                                                       created_by=created_by[:128]))
                    self._bump(conn)
            except IntegrityError:  # a key_id collision (48 random bits): draw again
                continue
            return KeyRecord(key_id=key_id, name=name, tenant=tenant, role=role, created_at=now,
                             created_by=created_by[:128]), key
        raise RuntimeError("could not draw a unique key id")

    def list(self, tenant: str | None = None, include_revoked: bool = False) -> list[KeyRecord]:
        query = select(keys_t).order_by(keys_t.c.tenant, keys_t.c.created_at, keys_t.c.key_id)
        if tenant is not None:
            query = query.where(keys_t.c.tenant == tenant)
        if not include_revoked:
            query = query.where(keys_t.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def revoke(self, key_id: str, tenant: str | None = None) -> KeyRecord:
        """Revoke ``key_id`` (only within ``tenant`` when given). Revoking twice is not an error."""
        with self.engine.begin() as conn:
            query = select(keys_t).where(keys_t.c.key_id == key_id)
            if tenant is not None:
                query = query.where(keys_t.c.tenant == tenant)
            row = conn.execute(query.with_for_update()).first()
            if row is None:
                raise KeyProblem("key_not_found", f"no key {key_id!r}")
            if row.revoked_at is None:
                conn.execute(update(keys_t).where(keys_t.c.key_id == key_id)
                             .values(revoked_at=datetime.now(UTC)))
                self._bump(conn)
            row = conn.execute(select(keys_t).where(keys_t.c.key_id == key_id)).one()
        return _record(row)

    def _bump(self, conn) -> None:
        conn.execute(update(state_t).where(state_t.c.id == 1).values(version=state_t.c.version + 1))


class KeyCache:
    """Looks keys up in a :class:`KeyStore`, remembering answers until the key version moves.

    Each lookup reads the version row; a cached answer (positive or negative) is used only when it
    was read at that same version, so a revocation committed before a request starts is seen by
    that request on every process. When the database is unreachable, an *active* key checked
    within the last ``outage_grace_s`` seconds keeps working (a revocation cannot be committed
    while the database is down anyway); anything else raises
    :class:`~lingxi.serving.faults.BackendUnavailable`. After a failure the database is left alone
    for ``retry_s`` so requests do not each wait for a timeout.
    """

    def __init__(self, store: KeyStore, outage_grace_s: float = 300.0, retry_s: float = 2.0,
                 max_entries: int = 10_000) -> None:
        self.store = store
        self.outage_grace_s = outage_grace_s
        self.retry_s = retry_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[int, float, KeyRecord | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._schema_ready = False
        self.last_version: int | None = None

    def ready_store(self) -> KeyStore:
        """The store, its tables created on first contact (the database may come up after the server)."""
        if not self._schema_ready:
            self.store.create_schema()
            self._schema_ready = True
        return self.store

    def _version(self) -> int:
        return self.ready_store().version()

    def has_keys(self, nowait: bool = False) -> bool:
        """Whether any key was ever created (then keys are required); True when unknown (fail closed).

        ``nowait``: answer only from a read that does not wait, else raise :class:`WouldWait`."""
        if nowait:
            self.last_version = self._nowait_read(lambda: self.store.version(nowait=True))
            return self.last_version > 0
        try:
            self.last_version = self._version()
        except Exception:  # noqa: BLE001 - unreachable: keep the last answer
            return self.last_version is None or self.last_version > 0
        return self.last_version > 0

    def _nowait_read(self, read):
        """``read()`` if the store is set up and up; any failure becomes :class:`WouldWait`, so the
        normal path (with its outage handling) decides."""
        if not self._schema_ready or time.monotonic() < self._down_until:
            raise WouldWait("key store not ready or recently down")
        try:
            return read()
        except WouldWait:
            raise
        except Exception as exc:  # noqa: BLE001 - locked, gone, anything: the thread path handles it
            raise WouldWait(str(exc)) from exc

    def lookup(self, sha256: str, nowait: bool = False) -> KeyRecord | None:
        if nowait:
            return self._nowait_read(lambda: self._fresh(sha256, time.monotonic(), nowait=True))
        now = time.monotonic()
        if now >= self._down_until:
            try:
                return self._fresh(sha256, now)
            except Exception as exc:  # noqa: BLE001 - any database failure: fall back to the cache
                self._down_until = now + self.retry_s
                cause = exc
        else:
            cause = None
        with self._lock:
            entry = self._entries.get(sha256)
        record = entry[2] if entry is not None else None
        if record is not None and record.active and now - entry[1] <= self.outage_grace_s:
            return record
        raise BackendUnavailable("the key store is unreachable") from cause

    def _fresh(self, sha256: str, now: float, nowait: bool = False) -> KeyRecord | None:
        version = self.store.version(nowait=True) if nowait else self._version()
        self.last_version = version
        with self._lock:
            entry = self._entries.get(sha256)
            if entry is not None and entry[0] == version:
                self._entries[sha256] = (version, now, entry[2])
                self._entries.move_to_end(sha256)
                return entry[2]
        record = self.store.find(sha256, nowait=nowait)
        with self._lock:
            self._entries[sha256] = (version, now, record)
            self._entries.move_to_end(sha256)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return record
