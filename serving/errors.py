"""One error shape for every failure: ``{"error": {"code", "message", "details"}}`` with a stable code.

Clients branch on ``code`` (never on the message text). Unexpected exceptions become a 500 with
code ``internal_error`` and no stack trace or internals in the body; the trace goes to the log.
"""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

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
    def __init__(self, status: int, code: str, message: str, details: object | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_body(code: str, message: str, details: object | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def api_error_handler(_: Request, exc: ApiError) -> Response:
    return Response(error_body(exc.code, exc.message, exc.details), status_code=exc.status)


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
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response(error_body("internal_error", "internal server error"),
                    status_code=HTTP_500_INTERNAL_SERVER_ERROR)


EXCEPTION_HANDLERS = {
    ApiError: api_error_handler,
    HTTPException: http_exception_handler,
    UnicodeDecodeError: undecodable_body_handler,
    Exception: unexpected_error_handler,
}
