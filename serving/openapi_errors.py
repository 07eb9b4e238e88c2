"""Make the OpenAPI document tell the truth about errors and alternative response types.

Every route answers errors with ``{"error": {"code", "message", "details"}}`` (``serving/errors.py``),
but litestar documents only its own validation-error body under ``400`` and nothing else, so clients
generated from ``/schema/openapi.json`` — and schemathesis — see undocumented status codes and bodies
that "violate" the schema. :func:`document_errors` adds one ``Error`` component and, on every
operation, ``400``, ``4XX`` and ``503`` responses that use it (503: the model is not loaded or a
backing service is down). A handler that answers in several media types lists them in its ``opt``
(``opt={"response_media_types": ["application/x-ndjson", "text/csv"]}``) and they are documented
for its success response. :func:`complete_openapi` is called once at startup, after every router
has been registered.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    Schema,
)

ERROR_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["error"],
    properties={"error": Schema(
        type=OpenAPIType.OBJECT,
        required=["code", "message"],
        properties={
            "code": Schema(type=OpenAPIType.STRING, description="stable machine-readable code, e.g. `empty_text`"),
            "message": Schema(type=OpenAPIType.STRING, description="what went wrong, for humans"),
            "details": Schema(description="optional structured details (field errors, limits)"),
        },
    )},
)

_OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_RESPONSES = {
    "400": "malformed request: invalid JSON, wrong types, unknown fields",
    "4XX": "the request was refused (validation, authentication, permissions, not found, conflict, "
           "size or rate limits); `error.code` says which",
    "503": "the model is not loaded yet or a backing service (Redis, PostgreSQL, registry) is unavailable",
}


def complete_openapi(app: Litestar) -> OpenAPI:
    """Document the error responses of every operation and the media types handlers declare."""
    openapi = document_errors(app.openapi_schema)
    for route in app.routes:
        item = (openapi.paths or {}).get(route.path_format)
        for handler in getattr(route, "route_handlers", ()):
            types = handler.opt.get("response_media_types") if item is not None else None
            for method in (handler.http_methods if types else ()):
                op = getattr(item, method.lower(), None)
                for status, response in ((op.responses or {}).items() if op else ()):
                    if status.startswith("2") and response.content:
                        schema = next(iter(response.content.values())).schema
                        response.content = {t: OpenAPIMediaType(schema=schema) for t in types}
    return openapi


def document_errors(openapi: OpenAPI) -> OpenAPI:
    """Add the ``Error`` schema and the error responses to every operation (idempotent)."""
    if openapi.components is None:
        openapi.components = Components()
    if openapi.components.schemas is None:
        openapi.components.schemas = {}
    openapi.components.schemas["Error"] = ERROR_SCHEMA
    ref = Reference(ref="#/components/schemas/Error")
    for item in (openapi.paths or {}).values():
        for name in _OPERATIONS:
            op = getattr(item, name, None)
            if op is None:
                continue
            responses = op.responses if op.responses is not None else {}
            for status, description in _RESPONSES.items():
                responses[status] = OpenAPIResponse(
                    description=description, content={"application/json": OpenAPIMediaType(schema=ref)})
            op.responses = responses
    return openapi
