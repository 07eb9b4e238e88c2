"""Request ids, structured JSON logs and per-request metrics.

Every request gets an id: the caller's ``X-Request-ID`` when it is sane (1–128 characters of
letters, digits and ``._:-``), otherwise a fresh one. The id comes back in the ``X-Request-ID``
response header (on every response, 404s included) and is attached to every log line written
while the request is served, so a customer complaint can be traced through the logs.

:class:`RequestMetricsMiddleware` times each routed request, records it in Prometheus by route
template (never by raw path: ids in paths would explode the label set) and writes one access log
line. Logs are JSON objects, one per line (``log_format = "json"``, the default) or classic text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("lingxi_request_id", default=None)
access_log = logging.getLogger("lingxi.access")


def current_request_id() -> str | None:
    """The id of the request being served by this task or thread (``None`` outside a request)."""
    return _request_id.get()


def request_id_for(scope: Scope) -> str:
    """The request's id, decided once and kept in the scope's state."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"), "")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex
        state["request_id"] = rid
    return rid


async def add_request_id_header(message: Message, scope: Scope) -> None:
    """``before_send`` hook: every HTTP response carries its request id (routed or not)."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers") or [])
        if not any(k.lower() == b"x-request-id" for k, _ in headers):
            headers.append((b"x-request-id", request_id_for(scope).encode("latin-1")))
            message["headers"] = headers


class RequestMetricsMiddleware(ASGIMiddleware):
    """Per routed request: request id in context, latency histogram, in-flight gauge, access log."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        token = _request_id.set(request_id_for(scope))
        status = 500  # if the app never answers, that is what the client sees
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await next_app(scope, receive, send_wrapper)
        finally:
            metrics.IN_FLIGHT.dec()
            seconds = time.perf_counter() - t0
            route = scope.get("path_template") or "unmatched"
            metrics.observe_request(scope["method"], route, status, seconds)
            access_log.info("%s %s %d %.1fms", scope["method"], route, status, seconds * 1000,
                            extra={"fields": {"method": scope["method"], "route": route, "status": status,
                                              "duration_ms": round(seconds * 1000, 2)}})
            _request_id.reset(token)


# ------------------------------------------------------------------ log formatting


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (``-`` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get() or "-"
        return True


_LOG_ENCODER = msgspec.json.Encoder(enc_hook=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extra ``fields``.

    An exception is summarised as its type, message and the innermost frame (no full traceback:
    log lines stay one line and carry no source dumps); the message itself is what the code logged.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or _request_id.get()
        if rid and rid != "-":
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["error"] = f"{type(exc).__name__}: {exc}"
            frames = traceback.extract_tb(record.exc_info[2])
            if frames:
                last = frames[-1]
                out["where"] = f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
        try:  # msgspec: one access line per request, and it is several times faster than json
            return _LOG_ENCODER.encode(out).decode()
        except (TypeError, msgspec.EncodeError):  # e.g. a non-string key in ``fields``
            return json.dumps(out, ensure_ascii=False, default=str)


def log_config(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the server and its uvicorn workers (each worker applies it)."""
    formatter = ({"()": "lingxi.serving.observability.JsonFormatter"} if fmt == "json" else
                 {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "lingxi.serving.observability.RequestIdFilter"}},
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                 "formatter": "default", "filters": ["request_id"]}},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
