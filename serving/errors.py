"""One error shape for every failure: ``{"error": {"code", "message", "details"}}`` with a stable code.

Clients branch on ``code`` (never on the message text). Unexpected exceptions become a 500 with
code ``internal_error`` and no stack trace or internals in the body; the trace goes to the log.
"""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from lingxi.nlu.redact import scrub_secrets

from .faults import RETRY_AFTER_S, backend_outage

log = logging.getLogger("lingxi.serving")

_CODES_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "not_ready",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: object | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_body(code: str, message: str, details: object | None = None) -> dict:
    return {"error": {"code": code, "message": scrub_secrets(message), "details": details}}


def api_error_handler(_: Request, exc: ApiError) -> Response:
    return Response(error_body(exc.code, exc.message, exc.details), status_code=exc.status,
                    headers=exc.headers)


def http_exception_handler(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    detail = exc.detail or ""
    code = _CODES_BY_STATUS.get(status, "http_error")
    details = None
    if isinstance(exc, ValidationException):
        extra = exc.extra
        details = extra if isinstance(extra, list | dict) else None
        lowered = str(detail).lower()
        if "json" in lowered or "decode" in lowered or "utf-8" in lowered:
            code = "invalid_json"
        elif "unknown field" in lowered or any("unknown field" in str(e).lower() for e in (extra or [])):
            code = "unknown_field"
        else:
            code = "invalid_request"
    elif status >= 500 and status != 503:
        log.error("http error %s: %s", status, detail)
        return Response(error_body("internal_error", "internal server error"), status_code=status)
    return Response(error_body(code, str(detail) or code.replace("_", " "), details), status_code=status,
                    headers=getattr(exc, "headers", None))


def undecodable_body_handler(_: Request, exc: UnicodeDecodeError) -> Response:
    return Response(error_body("invalid_json", "request body is not valid UTF-8 JSON"), status_code=400)


def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    backend = backend_outage(exc)
    if backend is not None:  # Redis/PostgreSQL away: a clear 503; the pools reconnect by themselves
        log.warning("%s unavailable on %s %s: %s", backend, request.method, request.url.path,
                    type(exc).__name__)
        body = error_body("store_unavailable", f"the {backend} behind this call is unavailable; retry shortly",
                          {"backend": backend})
        return Response(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, RecursionError):  # msgspec gives up on JSON nested ~1000 levels deep
        return Response(error_body("too_deeply_nested", "the request body is nested too deeply"),
                        status_code=400)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response(error_body("internal_error", "internal server error"),
                    status_code=HTTP_500_INTERNAL_SERVER_ERROR)


EXCEPTION_HANDLERS = {
    ApiError: api_error_handler,
    HTTPException: http_exception_handler,
    UnicodeDecodeError: undecodable_body_handler,
    Exception: unexpected_error_handler,
}
