"""The litestar application: ``create_app(settings)`` builds it; nothing is built at import time.

The lifespan loads the newest trained bundle for ``settings.bot`` (and warms it up) before the
server accepts traffic; ``/readyz`` says 503 until a model is loaded. CPU-bound parsing runs in a
worker thread (``sync_to_thread=True``) so the event loop keeps serving health checks.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import msgspec
from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from lingxi.nlu.parse import ParseContext, ParseResult
from lingxi.nlu.redact import install_log_redaction, scrub_secrets

from . import metrics
from .agents import agents_router
from .auth import ROLE_RANK, KeyRing, principal, require
from .chatwoot import chatwoot_router
from .conversations import conversations_router, dialogue_lifespan
from .errors import EXCEPTION_HANDLERS, ApiError
from .events import events_lifespan, events_router, record_parse
from .handoff_out import handoff_lifespan, handoff_router
from .insights import insights_router
from .kb import kb_lifespan, kb_router
from .keys import KeyCache, KeyStore
from .keys_api import keys_router
from .limits import RateLimiter, body_deadline_middleware, cors_config, limits_lifespan
from .loading import LocalSource, ModelHolder, RegistrySource, serving_encoder
from .metrics import metrics_endpoint
from .observability import RequestMetricsMiddleware, add_request_id_header
from .openapi_errors import complete_openapi
from .rasa_compat import rasa_parse
from .registry_api import registry_router
from .server import request_threads
from .settings import Settings
from .web import web_router

log = logging.getLogger("lingxi.serving")


class ParseRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``text`` is required; everything else is optional context for rules and entities."""

    text: str
    language: str | None = msgspec.field(default=None)
    channel: str | None = None
    visitor_tags: list[str] = msgspec.field(default_factory=list)
    timestamp: datetime | None = None
    conversation_id: str | None = None


class ModelInfo(msgspec.Struct):
    bot: str
    version: str
    created_at: str
    encoders: list[str]
    intents: int
    rules: int
    thresholds: dict[str, float]
    metrics: dict[str, float | None]
    path: str


_LANGUAGES = {"zh", "en"}


def _validate(data: ParseRequest, settings: Settings) -> ParseContext:
    if not data.text.strip():
        raise ApiError(422, "empty_text", "`text` must contain at least one non-space character")
    if len(data.text) > settings.max_text_chars:
        raise ApiError(422, "text_too_long", f"`text` has {len(data.text)} characters; the limit is "
                       f"{settings.max_text_chars}", {"limit": settings.max_text_chars})
    if data.language is not None and data.language not in _LANGUAGES:
        raise ApiError(422, "invalid_language", f"`language` must be one of {sorted(_LANGUAGES)}")
    for name, value, limit in (("channel", data.channel, 64), ("conversation_id", data.conversation_id, 128)):
        if value is not None and (not value.strip() or len(value) > limit):
            raise ApiError(422, "invalid_field", f"`{name}` must be 1..{limit} characters")
    if len(data.visitor_tags) > 50 or any(not t.strip() or len(t) > 64 for t in data.visitor_tags):
        raise ApiError(422, "invalid_field", "`visitor_tags`: at most 50 tags of 1..64 characters")
    return ParseContext(
        language=data.language,
        channel=data.channel,
        visitor_tags=frozenset(data.visitor_tags),
        timestamp=data.timestamp,
        conversation_id=data.conversation_id,
    )


def _holder(state: State) -> ModelHolder:
    return state.models


@get("/healthz", sync_to_thread=False, include_in_schema=True, tags=["health"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/readyz", sync_to_thread=False, tags=["health"])
def readyz(state: State) -> dict[str, object]:
    """Readiness: a model is loaded and warm."""
    holder = _holder(state)
    if holder.current is None:
        raise ApiError(503, "not_ready", scrub_secrets(holder.last_error or "") or "model is loading")
    cur = holder.current
    return {"status": "ready" if cur.source != "cache" else "degraded",
            "model": {"bot": cur.bundle.bot, "version": cur.bundle.version, "source": cur.source,
                      "registry_version": cur.registry_version},
            "detail": scrub_secrets(holder.last_error or "") or None}


@post("/v1/parse", guards=[require("read")], tags=["nlu"], status_code=200)
async def parse(data: ParseRequest, state: State, request: Request) -> ParseResult:
    """Understand one customer message: intent with confidence, decision, clarification, rules, entities."""
    # async: rules, intent head and entities take 1-2 ms on the loop, and the encoder
    # call is awaited from the batcher, so a request costs no worker-thread hand-offs.
    settings: Settings = state.settings
    ctx = _validate(data, settings)
    loaded = _holder(state).current
    if loaded is None:
        raise ApiError(503, "model_not_loaded", "no model is loaded yet; train one with `lingxi train`")
    result = await loaded.pipeline.aparse(data.text, ctx)
    metrics.observe_parse(result.decision)
    record_parse(request, state, data.text, result, data.channel, data.conversation_id)
    return result


def _info(holder: ModelHolder) -> ModelInfo:
    loaded = holder.current
    if loaded is None:
        raise ApiError(503, "model_not_loaded", holder.last_error or "no model is loaded")
    b = loaded.bundle
    return ModelInfo(b.bot, b.version, b.created_at, [e.backend for e in b.encoders], len(b.intents),
                     len(b.rules), b.intent_model.thresholds_.to_dict(), b.metrics, str(loaded.path))


@get("/v1/model", sync_to_thread=False, guards=[require("read")], tags=["models"])
def model_info(state: State, request: Request) -> ModelInfo:
    """The model being served (its path on disk for operator roles only)."""
    info = _info(_holder(state))
    if ROLE_RANK[principal(request).role] < ROLE_RANK["editor"]:
        info = msgspec.structs.replace(info, path="")
    return info


@get("/v1/models", sync_to_thread=True, guards=[require("editor", operator=True)], tags=["models"])
def models_overview(state: State) -> dict[str, object]:
    """What is loaded, where it came from, and (registry mode) the registered versions and aliases."""
    holder = _holder(state)
    cur = holder.current
    loaded = None if cur is None else {
        "bot": cur.bundle.bot, "version": cur.bundle.version, "source": cur.source,
        "registry_version": cur.registry_version, "path": str(cur.path)}
    out: dict[str, object] = {"loaded": loaded, "source": holder.source.describe(),
                              "last_error": scrub_secrets(holder.last_error or "") or None}
    registry = getattr(holder.source, "_registry", None)
    if registry is not None:
        try:
            out["registered_versions"] = registry.versions(holder.bot)
            out["promotion_log"] = [e.__dict__ for e in registry.history(holder.bot)]
        except Exception as exc:  # noqa: BLE001 - the registry may be down; report, don't fail
            out["registry_error"] = scrub_secrets(str(exc))
    return out


@post("/v1/admin/reload", sync_to_thread=True, guards=[require("admin", operator=True)], tags=["models"],
      status_code=200)
def reload_model(state: State) -> ModelInfo:
    """Load the newest trained bundle; the current one keeps serving if that fails."""
    holder = _holder(state)
    before = holder.current.path if holder.current else None
    holder.load_latest()
    if holder.last_error and (holder.current is None or holder.current.path == before):
        raise ApiError(409, "reload_failed", holder.last_error)
    return _info(holder)


async def _follow_alias(holder: ModelHolder, every: float) -> None:
    """Poll the registry alias; a moved alias is loaded and warmed in a thread, then swapped in."""
    import anyio

    while True:
        await anyio.sleep(every)
        await anyio.to_thread.run_sync(holder.load_latest)


def _model_source(settings: Settings):
    if settings.model_source == "registry":
        from lingxi.training.registry import Registry

        return RegistrySource(lambda: Registry(settings.tracking_uri), settings.bot, settings.model_alias,
                              Path(settings.home) / "registry-cache")
    return LocalSource(settings.models_path, settings.bot)


def encoder_wrapper(settings: Settings):
    """Micro-batching (one engine replica per encoder thread) and the embedding cache around every
    encoder the holder builds. Without ``build_another`` (tests sharing one encoder) there is one replica."""

    def wrap(encoder, build_another=None):
        return serving_encoder(encoder, batch_max=settings.encode_batch_max,
                               batch_wait_ms=settings.encode_batch_wait_ms, cache_size=settings.embedding_cache_size,
                               replicas=settings.encoder_replicas, build_replica=build_another,
                               on_batch=metrics.observe_batch, on_lookup=metrics.observe_cache)

    return wrap


def create_app(settings: Settings, holder: ModelHolder | None = None) -> Litestar:
    """Build the app. ``holder`` may be injected (tests share one loaded model across apps)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        import anyio

        complete_openapi(app)  # every router is registered by now: document errors for all of them
        request_threads(settings.request_threads)
        holder: ModelHolder = app.state.models
        if holder.on_swap is None:  # an injected holder: still report what it serves
            holder.on_swap = metrics.observe_loaded
            if holder.current is not None:
                metrics.observe_loaded(holder.current)
        if holder.current is None:
            await anyio.to_thread.run_sync(holder.load_latest)
        if holder.current is None:
            log.warning("no model loaded: %s", holder.last_error)
        if not app.state.keyring.enabled:
            log.warning("no API keys configured: requests are accepted without a key "
                        "(the server binds to loopback only)")
        async with anyio.create_task_group() as tg:
            if settings.model_source == "registry" and settings.registry_poll_seconds > 0:
                tg.start_soon(_follow_alias, holder, settings.registry_poll_seconds)
            yield
            tg.cancel_scope.cancel()
        metrics.worker_exiting()

    import swagger_ui_bundle

    assets = create_static_files_router(path="/schema-assets", directories=[swagger_ui_bundle.swagger_ui_path],
                                        include_in_schema=False)
    openapi = OpenAPIConfig(
        title="Lingxi (灵犀) NLU API",
        version="0.1.0",
        path="/schema",
        render_plugins=[SwaggerRenderPlugin(
            js_url="/schema-assets/swagger-ui-bundle.js",
            css_url="/schema-assets/swagger-ui.css",
            standalone_preset_js_url="/schema-assets/swagger-ui-standalone-preset.js",
            path=["/", "/swagger"],
        )],
    )
    state = State({
        "settings": settings,
        "models": holder or ModelHolder(settings.models_path, settings.bot, settings.ranking_size,
                                        _model_source(settings), wrap_encoder=encoder_wrapper(settings),
                                        on_swap=metrics.observe_loaded),
        "keyring": KeyRing(settings.api_keys,
                           KeyCache(KeyStore.from_settings(settings), settings.key_outage_grace_s)),
        "rate_limiter": RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst,
                                    settings.rate_limit_url, settings.backend_timeout_s / 4),
    })
    install_log_redaction(settings.redact_pii)
    return Litestar(
        route_handlers=[healthz, readyz, parse, model_info, models_overview, reload_model, kb_router,
                        conversations_router, events_router, metrics_endpoint, assets, registry_router,
                        web_router, keys_router, insights_router, handoff_router,
                        agents_router, chatwoot_router, rasa_parse],
        state=state,
        lifespan=[lifespan, events_lifespan, kb_lifespan, dialogue_lifespan, handoff_lifespan, limits_lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[RequestMetricsMiddleware(), body_deadline_middleware(settings.body_timeout_s)],
        cors_config=cors_config(settings.cors_origins),
        before_send=[add_request_id_header],
        logging_config=None,  # logging is configured by the server (serving/observability.py), not per app
        openapi_config=openapi,
        request_max_body_size=settings.max_body_bytes,
        debug=False,
    )
