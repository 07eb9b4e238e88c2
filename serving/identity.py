"""Identity tokens: how a shop's backend vouches for who a widget visitor is.

A browser can claim any phone number or user id, so the server links a visitor to earlier history
only on the word of the shop itself: either a call with a server-side key, or an *identity token*
the shop's backend minted for the logged-in customer and put in its page (the same scheme as
Intercom's and Crisp's identity verification, plus an expiry).

Format (ASCII, four dot-separated parts)::

    lx1.<user_id as base64url without padding>.<expiry, Unix seconds>.<signature>

``signature`` is base64url (no padding) of ``HMAC-SHA256(secret, "lx1.<user_id b64>.<expiry>")``
where ``secret`` is the tenant's identity secret (setting ``identity_secrets``, never sent to a
browser). A verified token becomes the identity ``shop_user:<user_id>``; server-side keys may send
that identity directly to link the same account from other channels.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

PREFIX = "lx1"
VERIFIED_KIND = "shop_user"
MAX_TOKEN_CHARS = 1024
MAX_TTL_S = 31 * 86_400  # a token valid for longer than a month is refused (mint short-lived ones)


class InvalidIdentityToken(ValueError):
    """The token is malformed, expired, too long-lived or not signed with the tenant's secret."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode("utf-8"), body.encode("ascii"), hashlib.sha256).digest())


def mint_identity_token(secret: str, user_id: str, ttl_s: float = 3600, now: float | None = None) -> str:
    """What the shop's backend does (shown here for tests and Python backends)."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    body = f"{PREFIX}.{_b64(user_id.encode('utf-8'))}.{expiry}"
    return f"{body}.{_signature(secret, body)}"


def verify_identity_token(token: str, secret: str | None, now: float | None = None) -> str:
    """The user id the token vouches for, or :class:`InvalidIdentityToken`."""
    if not secret:
        raise InvalidIdentityToken("this tenant has no identity secret configured: identity tokens are off")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise InvalidIdentityToken("malformed identity token")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != PREFIX or not parts[2].isdigit():
        raise InvalidIdentityToken("malformed identity token (expected lx1.<user>.<expiry>.<signature>)")
    body = ".".join(parts[:3])
    if not hmac.compare_digest(_signature(secret, body), parts[3]):
        raise InvalidIdentityToken("identity token signature does not match")
    expiry, now = int(parts[2]), time.time() if now is None else now
    if expiry < now:
        raise InvalidIdentityToken("identity token expired")
    if expiry > now + MAX_TTL_S:
        raise InvalidIdentityToken("identity token valid for too long (at most 31 days)")
    try:
        user_id = _unb64(parts[1]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise InvalidIdentityToken("malformed user id in identity token") from None
    if not user_id.strip() or len(user_id) > 256:
        raise InvalidIdentityToken("the user id must be 1..256 characters")
    return user_id
