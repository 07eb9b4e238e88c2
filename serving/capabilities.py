"""What a public site key may do with conversations: only act on the ones it opened.

Every shop embeds its site key (a ``read``-role key) in public pages, so the key proves nothing
about *who* is calling. ``POST /v1/conversations`` with a site key returns a per-conversation
``conversation_token`` (random, shown once; only its SHA-256 digest is kept in the conversation
store's side table, so every replica sees it). Messages, behaviour events and reads of that
conversation with a site key must send it back as ``X-Conversation-Token``. Keys of role
``server`` and above (shop backends, server-side channels, operators) are trusted with every
conversation of their tenant, as before; with no keys configured (loopback only) so is everyone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from litestar.connection import ASGIConnection

from .auth import ANONYMOUS, ROLE_RANK, Principal, principal
from .errors import ApiError

TOKEN_HEADER = "x-conversation-token"
SERVER_ROLE = "server"  # the lowest role that is not public: shop backends and server-side channels


def _key(cid: str) -> str:
    return f"capability:{cid}"  # the tenant-scoped store prefixes it with the tenant


def is_public(caller: Principal) -> bool:
    """A site key (role ``read``): anything it sends is a browser's claim."""
    return caller is not ANONYMOUS and ROLE_RANK[caller.role] < ROLE_RANK[SERVER_ROLE]


def public_caller(connection: ASGIConnection) -> bool:
    return is_public(principal(connection))


def mint_conversation_token(store, cid: str) -> str:
    """A new token for ``cid``; only its digest is stored."""
    token = secrets.token_urlsafe(24)
    store.kv_set(_key(cid), hashlib.sha256(token.encode("ascii")).hexdigest().encode("ascii"))
    return token


def require_conversation_token(connection: ASGIConnection, store, cid: str) -> None:
    """403 ``conversation_forbidden`` unless the caller is trusted or holds ``cid``'s token.

    The answer is the same whether or not the conversation exists, so a site key cannot probe ids."""
    if not public_caller(connection):
        return
    presented = (connection.headers.get(TOKEN_HEADER) or "").strip()
    stored = store.kv_get(_key(cid)) if presented else None
    if not stored or not hmac.compare_digest(
            hashlib.sha256(presented.encode("utf-8")).hexdigest().encode("ascii"), bytes(stored)):
        raise ApiError(403, "conversation_forbidden",
                       "a site key acts only on conversations it opened: send the conversation_token that "
                       "POST /v1/conversations returned as X-Conversation-Token")


def require_trusted(connection: ASGIConnection, what: str) -> None:
    """403 for a site key: ``what`` needs a server-side or operator key."""
    if public_caller(connection):
        raise ApiError(403, "forbidden", f"{what} needs a key of role {SERVER_ROLE!r} or higher; a site key "
                                         "(role 'read') is public")
