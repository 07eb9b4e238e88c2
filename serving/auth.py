"""API keys: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

Roles: ``read`` < ``server`` < ``editor`` < ``reviewer`` < ``admin``. ``read`` is the public site key
every shop embeds in its pages (it may act only on conversations it opened, see
:mod:`lingxi.serving.capabilities`); ``server`` is a shop backend or server-side channel;
``agent`` (a human agent) ranks with ``server`` and may also use the agent inbox
(:func:`require_agent`), which editors and above may use as well.

Keys come from two places: the settings file (``api_keys``, given in clear or as SHA-256 digests)
and the key database (``lingxi keys create``, ``/v1/keys``; see :mod:`lingxi.serving.keys`), which
is consulted on every request so that a revocation holds at once on every worker and replica.
Every key carries a tenant; the guard stores the admitted :class:`Principal` in the request scope
and handlers read it with :func:`principal` to scope every read and write to that tenant.

With no keys configured anywhere the server runs open (anonymous admin of the ``default``
tenant) but binds to loopback only (enforced by the CLI) and says so in its log; once any key
exists, keys are always enforced. The guard also applies the per-key rate limit
(:mod:`lingxi.serving.limits`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from dataclasses import dataclass

import anyio
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from lingxi.dialogue.tenancy import current_tenant

from .errors import ApiError
from .keys import KeyCache, WouldWait
from .limits import client_source, enforce_rate_limit
from .settings import ApiKey

ROLE_RANK = {"read": 0, "agent": 1, "server": 1, "editor": 2, "reviewer": 3, "admin": 4}  # agent: + the inbox
DEFAULT_TENANT = "default"
_PENDING = object()  # authenticate: no answer yet from the no-wait read


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, its role, the tenant whose data it may touch, and a key id
    that names the key without revealing it (``config:<name>`` for keys from the settings file)."""

    name: str
    role: str
    tenant: str = DEFAULT_TENANT
    key_id: str = "anonymous"


ANONYMOUS = Principal("anonymous", "admin")


def principal(connection: ASGIConnection) -> Principal:
    """The caller a guard admitted (anonymous admin of the default tenant when keys are off)."""
    found = connection.scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else ANONYMOUS


class KeyRing:
    """Config-file keys plus (optionally) the key database behind a :class:`KeyCache`."""

    def __init__(self, keys: list[ApiKey], cache: KeyCache | None = None) -> None:
        self._digests = [(k.sha256.lower() if k.sha256 else key_digest(k.key or ""), k) for k in keys]
        self.cache = cache

    @property
    def enabled(self) -> bool:
        """Keys are required (config keys exist, or a key was ever created in the database)."""
        return self._enabled()

    def _enabled(self, nowait: bool = False) -> bool:
        return bool(self._digests) or (self.cache is not None and self.cache.has_keys(nowait=nowait))

    def _config_match(self, digest: str) -> ApiKey | None:
        found = None
        for known, key in self._digests:
            if hmac.compare_digest(known, digest):
                found = key
        return found

    def identify(self, presented: str, nowait: bool = False) -> Principal | None:
        """The principal for a presented key, or None if unknown or revoked (may block on the key DB;
        with ``nowait``, raises :class:`~lingxi.serving.keys.WouldWait` instead)."""
        digest = key_digest(presented)
        key = self._config_match(digest)
        if key is not None:
            return Principal(key.name, key.role, key.tenant, f"config:{key.name}")
        if self.cache is None:
            return None
        record = self.cache.lookup(digest, nowait=nowait)
        if record is None or not record.active:
            return None
        return Principal(record.name, record.role, record.tenant, record.key_id)

    def lookup(self, presented: str) -> ApiKey | None:
        """The key as an :class:`ApiKey` (digest only), or None."""
        found = self.identify(presented) if presented else None
        if found is None:
            return None
        return ApiKey(name=found.name, role=found.role, tenant=found.tenant, sha256=key_digest(presented))

    def resolve(self, presented: str | None, nowait: bool = False) -> Principal | None:
        """Blocking: the caller, :data:`ANONYMOUS` in open mode, or None when a valid key is missing.
        ``nowait``: raise :class:`~lingxi.serving.keys.WouldWait` rather than wait for the key DB."""
        if presented:
            return self.identify(presented, nowait)
        return None if self._enabled(nowait) else ANONYMOUS

    async def authenticate(self, presented: str | None) -> Principal:
        """The caller, or 401 ``unauthorized``.

        A SQLite key file is read on the event loop by a read that never waits (the key version, and
        the key itself when the version moved); anything else, or a read that would wait, goes to a
        worker thread. Either way the key version is read for every request."""
        if self.cache is None:
            found = self.resolve(presented)
        else:
            found = _PENDING
            if self.cache.store.reads_without_waiting:
                with contextlib.suppress(WouldWait):
                    found = self.resolve(presented, nowait=True)
            if found is _PENDING:
                found = await anyio.to_thread.run_sync(self.resolve, presented)
        if found is None:
            if not presented:
                raise ApiError(401, "unauthorized",
                               "missing API key (send X-API-Key or Authorization: Bearer)")
            raise ApiError(401, "unauthorized", "invalid or revoked API key")
        return found


def presented_key(connection: ASGIConnection) -> str | None:
    key = connection.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = connection.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def operator_tenant(connection: ASGIConnection) -> str:
    settings = getattr(connection.app.state, "settings", None)
    return getattr(settings, "operator_tenant", DEFAULT_TENANT) or DEFAULT_TENANT


def require(role: str, *, query_token: str | None = None, operator: bool = False):
    """A litestar guard that admits keys of ``role`` or higher and applies the per-key rate limit.

    ``query_token``: also accept the key as that query parameter (Rasa widgets cannot set headers).
    ``operator``: server-wide operations (model reload, registry) — only the operator tenant's keys.
    """

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        ring: KeyRing = connection.app.state.keyring
        presented = presented_key(connection)
        if not presented and query_token:
            presented = (connection.query_params.get(query_token) or "").strip() or None
        limiter = getattr(connection.app.state, "rate_limiter", None)
        try:
            caller = await ring.authenticate(presented)
        except ApiError:
            if presented:  # guessing keys: failures are limited per client address (429 once exhausted)
                await enforce_rate_limit(limiter, f"auth-failures:{client_source(connection)}")
            raise
        if caller is not ANONYMOUS:
            await enforce_rate_limit(limiter, f"{caller.tenant}:{caller.key_id}")
        if ROLE_RANK[caller.role] < ROLE_RANK[role]:
            raise ApiError(403, "forbidden", f"this key has role {caller.role!r}; {role!r} is required")
        if operator and caller.tenant != operator_tenant(connection):
            raise ApiError(403, "forbidden", "server-wide operations need a key of the operator tenant")
        connection.scope.setdefault("state", {})["principal"] = caller
        current_tenant.set(caller.tenant)  # scopes the conversation stores for this request

    return guard


def require_agent():
    """The agent inbox: keys of role ``agent``, or ``editor`` and above (a shop owner answering)."""
    base = require("read")

    async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        await base(connection, handler)
        caller = principal(connection)
        if caller.role != "agent" and ROLE_RANK[caller.role] < ROLE_RANK["editor"]:
            raise ApiError(403, "forbidden", f"this key has role {caller.role!r}; 'agent' or 'editor' is required")

    return guard
