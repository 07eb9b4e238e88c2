"""Tenants in the dialogue stores: every conversation, visitor and lock key is scoped to a tenant.

The serving layer wraps the service's store once in :class:`TenantScopedStore`; the API guard
sets :data:`current_tenant` for each request from the caller's key, so every load, save, lock and
visitor lookup of that request — whichever handler or hook makes it — touches only that tenant's
keys. Nothing is shared by default: with no tenant in the context the store refuses to work
(``NoTenant``) rather than guess.

Keys of the ``default`` tenant are stored exactly as before tenants existed (so existing
conversations and visitors belong to ``default`` without a migration); any other tenant's keys get
a ``<tenant>/`` prefix. They cannot collide: conversation ids never contain ``/`` (the API
rejects it), visitor keys start with ``visitor:`` or ``identity:``, and tenant names contain
neither ``/`` nor ``:``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .stores import TrackerStore

DEFAULT_TENANT = "default"

current_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("lingxi_tenant", default=None)


class NoTenant(RuntimeError):
    """A tenant-scoped store was used outside a request (or :func:`tenant_scope`)."""


@contextmanager
def tenant_scope(tenant: str) -> Iterator[None]:
    """Run a block as ``tenant`` (background jobs, CLI tools, tests)."""
    token = current_tenant.set(tenant)
    try:
        yield
    finally:
        current_tenant.reset(token)


def scoped_key(tenant: str, key: str) -> str:
    return key if tenant == DEFAULT_TENANT else f"{tenant}/{key}"


class TenantScopedStore(TrackerStore):
    """A view of a shared store that prefixes every key with the current tenant."""

    def __init__(self, inner: TrackerStore) -> None:
        # no super().__init__: locking is the inner store's, and the snapshot policy is read from it
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # url, engine, client … of the inner store
        return getattr(self.inner, name)

    @property
    def snapshot_every(self) -> int:  # type: ignore[override]
        return self.inner.snapshot_every

    @property
    def keep_turns(self) -> int:  # type: ignore[override]
        return self.inner.keep_turns

    @staticmethod
    def tenant() -> str:
        tenant = current_tenant.get()
        if tenant is None:
            raise NoTenant("no tenant in this context: conversations are only reachable for a tenant")
        return tenant

    def _key(self, key: str) -> str:
        return scoped_key(self.tenant(), key)

    # ---- primitives, delegated with scoped keys
    def _read(self, cid):
        return self.inner._read(self._key(cid))

    def _append(self, cid, expected, events, snapshot):
        self.inner._append(self._key(cid), expected, events, snapshot)

    def events(self, cid, start=0):
        return self.inner.events(self._key(cid), start)

    def keys(self):
        tenant = self.tenant()
        every = self.inner.keys()  # noqa: SIM118 - a store, not a dict
        if tenant == DEFAULT_TENANT:
            return [k for k in every if "/" not in k]
        prefix = f"{tenant}/"
        return [k[len(prefix):] for k in every if k.startswith(prefix)]

    def kv_get(self, key):
        return self.inner.kv_get(self._key(key))

    def kv_set(self, key, value):
        self.inner.kv_set(self._key(key), value)

    @contextmanager
    def lock(self, cid: str, wait_s: float | None = None) -> Iterator[None]:
        with self.inner.lock(self._key(cid), wait_s):
            yield

    def close(self) -> None:
        self.inner.close()


def scope_engine_by_tenant(engine: Any) -> None:
    """Put an engine's store (and its visitor index) behind :class:`TenantScopedStore` (idempotent)."""
    store = engine.store
    if isinstance(store, TenantScopedStore):
        return
    scoped = TenantScopedStore(store)
    engine.store = scoped
    visitors = getattr(engine, "visitors", None)
    if visitors is not None and getattr(visitors, "store", None) is store:
        visitors.store = scoped
