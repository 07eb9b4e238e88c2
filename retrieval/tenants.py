"""One knowledge base per tenant: separate tables, separate index, separate feedback.

Isolation is physical, so no query can forget a ``WHERE tenant = …``:

* **SQLite** (the default): each tenant has its own database file,
  ``<kb dir>/tenants/<tenant>/kb.db``, beside the default tenant's ``kb.db``.
* **PostgreSQL**: each tenant has its own schema, ``lingxi_tenant_<tenant>``, in the same
  database (SQLAlchemy's ``schema_translate_map`` points the unchanged table definitions at it);
  all tenants share one connection pool.

The ``default`` tenant keeps the store the knowledge base always had (``kb.db`` / the ``public``
schema), so a knowledge base built before tenants existed belongs to ``default`` without any
migration. Other tenants start empty (no demo seeding) and are started on their first request.
Every tenant's index lives in ``<index parent>/tenants/<tenant>/index``; the encoder is shared.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import msgspec
from sqlalchemy import Engine, text
from sqlalchemy.schema import CreateSchema

from lingxi.training.events import EventStore

from .service import KbConfig, KbService
from .store import SCHEMA_LOCK, make_engine, sqlite_url

log = logging.getLogger("lingxi.retrieval")

DEFAULT_TENANT = "default"


def tenant_schema(tenant: str) -> str:
    return f"lingxi_tenant_{tenant}"


class KbTenants:
    """The knowledge bases of all tenants; ``get(tenant)`` starts one on first use (thread-safe)."""

    def __init__(self, config: KbConfig, home: str | Path, default: KbService | None = None,
                 events: EventStore | None = None) -> None:
        self.config = config
        self.home = Path(home)
        self.events = events  # the server's event store: each tenant's feedback counters fold their events
        self._started: dict[str, KbService] = {DEFAULT_TENANT: default} if default is not None else {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._shared_engine: Engine | None = None

    @property
    def default(self) -> KbService | None:
        return self._started.get(DEFAULT_TENANT)

    def started(self, tenant: str) -> KbService | None:
        """The tenant's knowledge base if it is running (never blocks)."""
        return self._started.get(tenant)

    def get(self, tenant: str) -> KbService:
        """The tenant's knowledge base, started now if needed (may block: schema, index build)."""
        kb = self._started.get(tenant)
        if kb is not None:
            return kb
        with self._guard:
            lock = self._locks.setdefault(tenant, threading.Lock())
        with lock:
            kb = self._started.get(tenant)
            if kb is None:
                kb = self._start(tenant)
                self._started[tenant] = kb
        return kb

    def close(self, keep_default: bool = False) -> None:
        """Close every started knowledge base (``keep_default``: not the default one, its owner will)."""
        for tenant, kb in list(self._started.items()):
            if keep_default and tenant == DEFAULT_TENANT:
                continue
            try:
                kb.close()
            except Exception as exc:  # noqa: BLE001 - close the others all the same
                log.warning("closing the knowledge base of %s failed: %s", tenant, exc)
        if self._shared_engine is not None:
            self._shared_engine.dispose()

    # ------------------------------------------------------------ per-tenant wiring
    def _url(self) -> str:
        return self.config.url or sqlite_url(self.home / "kb" / "kb.db")

    def _index_root(self) -> Path:
        return Path(self.config.index_dir) if self.config.index_dir else self.home / "kb" / "index"

    def _start(self, tenant: str) -> KbService:
        url = self._url()
        engine = None
        if tenant == DEFAULT_TENANT:
            config = self.config
        else:
            index_dir = self._index_root().parent / "tenants" / tenant / "index"
            if url.startswith("sqlite"):
                path = url.split("///", 1)[1] if "///" in url else ""
                if not path or path == ":memory:":
                    raise ValueError("an in-memory SQLite knowledge base cannot hold several tenants")
                url = sqlite_url(Path(path).parent / "tenants" / tenant / Path(path).name)
            else:
                engine = self._engine_for(url, tenant)
            config = msgspec.structs.replace(self.config, url=url, index_dir=str(index_dir), seed_demo=False)
        default = self._started.get(DEFAULT_TENANT)
        encoder = default.encoder if default is not None else None
        log.info("starting the knowledge base of tenant %s", tenant)
        return KbService(config, home=self.home, encoder=encoder, engine=engine, events=self.events,
                         tenant=tenant).start()

    def _engine_for(self, url: str, tenant: str) -> Engine:
        with self._guard:
            if self._shared_engine is None:
                self._shared_engine = make_engine(url)
        schema = tenant_schema(tenant)
        with self._shared_engine.begin() as conn:  # one replica at a time, as for tables
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
            conn.execute(CreateSchema(schema, if_not_exists=True))
        return self._shared_engine.execution_options(schema_translate_map={None: schema})
