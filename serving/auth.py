"""API keys: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``; roles ``read`` < ``editor`` < ``reviewer`` < ``admin``.

Keys are compared by SHA-256 digest in constant time, so configuration may hold digests only.
With no keys configured the server runs open but binds to loopback (enforced by the CLI) and
says so in its log; configured keys are always enforced.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from .errors import ApiError
from .settings import ApiKey

ROLE_RANK = {"read": 0, "editor": 1, "reviewer": 2, "admin": 3}


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, its role and the tenant whose data it may touch."""

    name: str
    role: str
    tenant: str = DEFAULT_TENANT


def principal(connection: ASGIConnection) -> Principal:
    """The caller a guard admitted (anonymous admin of the default tenant when keys are off)."""
    found = connection.scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else Principal("anonymous", "admin")


class KeyRing:
    def __init__(self, keys: list[ApiKey]) -> None:
        self._digests = [(k.sha256.lower() if k.sha256 else key_digest(k.key or ""), k) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def lookup(self, presented: str) -> ApiKey | None:
        digest = key_digest(presented)
        found = None
        for known, key in self._digests:
            if hmac.compare_digest(known, digest):
                found = key
        return found


def presented_key(connection: ASGIConnection) -> str | None:
    key = connection.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = connection.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def require(role: str):
    """A litestar guard that admits keys of ``role`` or higher."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        ring: KeyRing = connection.app.state.keyring
        if not ring.enabled:
            connection.scope.setdefault("state", {})["principal"] = Principal("anonymous", "admin")
            return
        presented = presented_key(connection)
        if not presented:
            raise ApiError(401, "unauthorized", "missing API key (send X-API-Key or Authorization: Bearer)")
        key = ring.lookup(presented)
        if key is None:
            raise ApiError(401, "unauthorized", "invalid API key")
        if ROLE_RANK[key.role] < ROLE_RANK[role]:
            raise ApiError(403, "forbidden", f"this key has role {key.role!r}; {role!r} is required")
        connection.scope.setdefault("state", {})["principal"] = Principal(key.name, key.role, key.tenant)

    return guard
