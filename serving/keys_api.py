"""``/v1/keys``: a tenant's admins list, create and revoke their tenant's API keys.

Keys of other tenants are invisible (a foreign ``key_id`` is 404, as if it did not exist), and a
new key's role can be at most the creator's. A server running open (no keys yet) refuses these
routes: the first key comes from ``lingxi keys create``. Keys from the settings file are not listed
and cannot be revoked here (edit the file). The new key is in the response once and never again.
"""

from __future__ import annotations

import msgspec
from litestar import Request, Router, delete, get, post
from litestar.connection import ASGIConnection

from .auth import ANONYMOUS, ROLE_RANK, principal, require
from .errors import ApiError
from .keys import KeyProblem, KeyRecord, KeyStore
from .settings import Role


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    role: Role = "read"


class KeyCreated(msgspec.Struct, kw_only=True):
    """``key`` is shown only in this response; store it now."""

    key: str
    record: KeyRecord


def _store(connection: ASGIConnection) -> KeyStore:
    if principal(connection) is ANONYMOUS:  # open mode: a key created here would lock everyone else out
        raise ApiError(403, "key_required", "managing keys over HTTP needs an admin key; create the first one "
                                            "with `lingxi keys create --role admin`")
    cache = getattr(connection.app.state.keyring, "cache", None)
    if cache is None:
        raise ApiError(404, "key_store_disabled", "this server has no key database")
    return cache.ready_store()


def _problem(exc: KeyProblem) -> ApiError:
    return ApiError(404 if exc.code == "key_not_found" else 422, exc.code, exc.message)


@get("/keys", guards=[require("admin")], sync_to_thread=True, tags=["keys"])
def list_keys(request: Request, include_revoked: bool = False) -> list[KeyRecord]:
    """This tenant's keys (never their secrets), oldest first."""
    return _store(request).list(principal(request).tenant, include_revoked)


@post("/keys", guards=[require("admin")], sync_to_thread=True, tags=["keys"], status_code=201)
def create_key(request: Request, data: KeyCreate) -> KeyCreated:
    """A new key for this tenant with a role up to the caller's own."""
    caller = principal(request)
    if ROLE_RANK[data.role] > ROLE_RANK[caller.role]:
        raise ApiError(403, "forbidden", f"a {caller.role!r} key cannot create a {data.role!r} key")
    try:
        record, key = _store(request).create(data.name, caller.tenant, data.role, created_by=caller.name)
    except KeyProblem as exc:
        raise _problem(exc) from None
    return KeyCreated(key=key, record=record)


@delete("/keys/{key_id:str}", guards=[require("admin")], sync_to_thread=True, tags=["keys"], status_code=200)
def revoke_key(request: Request, key_id: str) -> KeyRecord:
    """Revoke one of this tenant's keys; every worker and replica refuses it from the next request on."""
    try:
        return _store(request).revoke(key_id, principal(request).tenant)
    except KeyProblem as exc:
        raise _problem(exc) from None


keys_router = Router(path="/v1", route_handlers=[list_keys, create_key, revoke_key])
