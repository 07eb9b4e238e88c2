"""Request limits: per-key rate limiting, slow-body cut-off, nesting depth, CORS.

* **Rate limiting** is a token bucket per API key (``rate_limit_per_s`` tokens a second, at most
  ``rate_limit_burst`` saved up). In-process by default; with ``rate_limit_url = "redis://…"`` the
  buckets live in Redis (one atomic Lua script per request, Redis's clock) so every replica draws
  from the same bucket. If Redis is unreachable the limiter falls back to in-process buckets for
  a few seconds at a time and says so in the log: an outage of the limiter must not take the API down.
* **Slow bodies**: a client that trickles its body keeps a worker's connection open; the body
  must arrive within ``body_timeout_s`` or the request ends with 408 ``body_timeout``. (Slow
  *headers* never reach the application; the proxy in front cuts those off — see serving/README.md.)
* **Depth**: free-form JSON fields (slots, event data) are limited to :data:`MAX_JSON_DEPTH`
  levels, so nothing is stored that cannot be read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError

log = logging.getLogger("lingxi.serving")

MAX_JSON_DEPTH = 8


# ---------------------------------------------------------------------- rate limiting


def client_source(connection: Any, tenant: str = "") -> str:
    """A stable, non-reversible name for the calling address (``addr:<hash>``): feedback and hot-query
    counts are per person, and the failed-authentication limit is per address."""
    import hashlib

    client = getattr(connection, "client", None)
    host = getattr(client, "host", None) or "unknown"
    return "addr:" + hashlib.sha256(f"{tenant}|{host}".encode()).hexdigest()[:24]



class LocalBuckets:
    """Token buckets in this process. ``take`` returns 0 when admitted, else seconds until a token."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) > self.max_keys:  # full buckets carry no information: forget them
                full = self.burst / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
        return wait


_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(saved[1]) or burst
local at = tonumber(saved[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RateLimiter:
    """Per-key token buckets, in Redis when ``url`` is given (shared by replicas), else in-process."""

    def __init__(self, rate: float, burst: int, url: str | None = None, timeout_s: float = 0.5,
                 retry_s: float = 5.0, prefix: str = "lingxi:ratelimit") -> None:
        self.rate, self.burst, self.url = rate, burst, url
        self.timeout_s, self.retry_s, self.prefix = timeout_s, retry_s, prefix
        self.local = LocalBuckets(rate, burst)
        self._client: Any = None
        self._script: Any = None
        self._down_until = 0.0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _redis(self):
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                                   socket_connect_timeout=self.timeout_s)
            self._script = self._client.register_script(_TAKE_LUA)
        return self._script

    async def take(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds to wait before retrying."""
        if not self.enabled:
            return 0.0
        if self.url and time.monotonic() >= self._down_until:
            try:
                with anyio.fail_after(self.timeout_s * 2):
                    script = self._redis()
                    return float(await script(keys=[f"{self.prefix}:{key}"], args=[self.rate, self.burst]))
            except Exception as exc:  # noqa: BLE001 - Redis down or slow: limit in-process meanwhile
                log.warning("rate limiter: Redis unavailable (%s); limiting per process for %.0f s",
                            type(exc).__name__, self.retry_s)
                self._down_until = time.monotonic() + self.retry_s
                await self.aclose()
        return self.local.take(key)

    async def aclose(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                await client.aclose()


@asynccontextmanager
async def limits_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Close the rate limiter's Redis connection with the app."""
    try:
        yield
    finally:
        limiter = getattr(app.state, "rate_limiter", None)
        if limiter is not None:
            await limiter.aclose()


async def enforce_rate_limit(limiter: RateLimiter | None, key: str) -> None:
    """Raise 429 ``rate_limited`` with ``Retry-After`` (whole seconds, at least 1) when over the limit."""
    if limiter is None or not limiter.enabled:
        return
    wait = await limiter.take(key)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise ApiError(429, "rate_limited", f"too many requests for this key; retry in {seconds} s",
                       {"retry_after_s": round(wait, 3), "limit_per_s": limiter.rate, "burst": limiter.burst},
                       headers={"Retry-After": str(seconds)})


# ---------------------------------------------------------------------- slow bodies


class BodyTimeout(ApiError):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, "body_timeout", f"the request body did not arrive within {seconds:g} s")


def body_deadline_middleware(seconds: float):
    """ASGI middleware factory: ``receive`` of an HTTP request raises :class:`BodyTimeout` once the
    body has taken longer than ``seconds`` since the request began."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or seconds <= 0:
                await app(scope, receive, send)
                return
            deadline = time.monotonic() + seconds
            done = False

            async def timed_receive() -> Message:
                nonlocal done
                if done:  # after the body only a disconnect can come: no deadline on waiting for it
                    return await receive()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BodyTimeout(seconds)
                try:  # asyncio's own timeout: anyio's cancel scope here was 7% of the loop's samples under load
                    async with asyncio.timeout(remaining):
                        message = await receive()
                except TimeoutError:
                    raise BodyTimeout(seconds) from None
                if message["type"] != "http.request" or not message.get("more_body", False):
                    done = True
                return message

            await app(scope, timed_receive, send)

        return wrapped

    return middleware


# ---------------------------------------------------------------------- free-form JSON


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of ``value`` (a scalar is 0), counting no further than ``limit + 1``."""
    if isinstance(value, dict):
        items = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return 0
    if limit < 0:
        return 1
    return 1 + max((json_depth(v, limit - 1) for v in items), default=0)


def check_json_depth(name: str, value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    if json_depth(value, limit) > limit:
        raise ApiError(422, "too_deeply_nested", f"`{name}` is nested more than {limit} levels deep")


# ---------------------------------------------------------------------- CORS


def cors_config(origins: list[str]) -> CORSConfig | None:
    """CORS for the chat widget's origins; keys travel in headers, never cookies (no credentials)."""
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", "X-API-Key", "Authorization", "X-Request-ID", "X-Conversation-Token",
                       "Last-Event-ID"],
        expose_headers=["Retry-After", "X-Request-ID"],
        allow_credentials=False,
        max_age=600,
    )
