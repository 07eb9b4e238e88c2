"""The learning loop over HTTP: event ingestion, and the serving side of recording what the bot did.

Routes (``events_router``):

* ``POST /v1/events`` — a batch of client events (impressions, clicks, votes, CSAT, outcomes …).
  Each event is accepted, a duplicate (its ``event_id`` is already stored: a retry), or rejected
  with a stable code; the accepted ones are on disk before the answer is sent.
* ``/v1/misunderstood`` — the queue of utterances the bot did not handle well (see
  :mod:`lingxi.training.misunderstood`): list, filter, resolve.

Recording: :func:`tap_dialogue` wraps the conversation store so every saved turn becomes parse /
reply / clarification / handoff / outcome events (the serving layer translates, so ``dialogue/``
knows nothing of the learning loop), and :func:`record_parse` logs bare ``/v1/parse`` calls.
Both go through an :class:`~lingxi.training.events.EventWriter` so replies never wait for a disk flush.

Wiring in ``create_app``: ``events_router`` in ``route_handlers`` and ``events_lifespan`` in
``lifespan`` *before* the KB's (the KB's feedback counters read this store).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Router, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from lingxi.dialogue.events import (
    BotUttered,
    ClarificationAsked,
    ClarificationResolved,
    HandedOff,
    TurnDecided,
    UserUttered,
)
from lingxi.dialogue.events import Event as DialogueEvent
from lingxi.retrieval.articles import KbError
from lingxi.training.events import (
    FEEDBACK_TYPES,
    Clarification,
    Click,
    Event,
    EventStore,
    EventWriter,
    Handoff,
    Impression,
    IngestReport,
    KnownArticles,
    KnownConversations,
    Outcome,
    Parse,
    Reply,
    default_url,
)
from lingxi.training.misunderstood import Action, Entry, Label, MisunderstoodQueue, QueueError

from .auth import principal, require
from .errors import ApiError
from .kb import kb_error_handler, started_kb

log = logging.getLogger("lingxi.serving")

_BATCH_BODY_LIMIT = 4 * 1024 * 1024  # 1000 events of a few hundred bytes, with room


class EventBatch(msgspec.Struct, forbid_unknown_fields=True):
    """``events``: objects with ``event_id``, ``type``, optional ``ts`` (epoch seconds or RFC 3339),
    ``bot``, ``conversation_id``, ``visitor_id``, ``channel``, ``model_version`` and a ``payload``."""

    events: list[Any]


# ------------------------------------------------------------------ state


def events_of(state: State) -> EventStore:
    store = getattr(state, "events", None)
    if store is None:
        raise ApiError(503, "events_not_ready", "the event store is not open")
    return store


def build_event_store(settings: Any) -> EventStore:
    url = getattr(settings, "events_url", None) or default_url(Path(getattr(settings, "home", ".lingxi")))
    if getattr(settings, "redact_pii", False):
        from lingxi.nlu.redact import redact

        return EventStore(url, redact=redact).create_schema()
    return EventStore.open(url)


def known_articles(request: Request) -> KnownArticles | None:
    """Article ids that exist in the caller's KB (any status); ``None`` when it is not running (no flags)."""
    kb = started_kb(request)
    if kb is None:
        return None
    return lambda ids: set(kb.store.get_many(ids))


def known_conversations(state: State) -> KnownConversations | None:
    """Conversations the dialogue store holds (the event store's own are checked first)."""
    svc = getattr(state, "dialogue", None)
    if svc is None:
        return None
    return lambda _tenant, ids: {c for c in ids if svc.engine.store.exists(c)}


@asynccontextmanager
async def events_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Open the event store (unless a test put one on ``app.state.events``) and the server-event writer."""
    import anyio

    owned = getattr(app.state, "events", None) is None
    if owned:
        app.state.events = await anyio.to_thread.run_sync(build_event_store, app.state.settings)
    store: EventStore = app.state.events
    writer = EventWriter(store)  # server events name our own articles: nothing to flag
    app.state.event_writer = writer
    if getattr(app.state, "misunderstood", None) is None:
        app.state.misunderstood = await anyio.to_thread.run_sync(MisunderstoodQueue(store).create_schema)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_close_idle_conversations, store)
            yield
            tg.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(writer.close)
        if owned:
            store.dispose()


async def _close_idle_conversations(store: EventStore, every_s: float = 60.0) -> None:
    """Every minute: outcomes (contained / abandoned) of conversations that went quiet."""
    import anyio

    from lingxi.training.outcomes import close_idle_conversations

    while True:
        await anyio.sleep(every_s)
        try:
            await anyio.to_thread.run_sync(close_idle_conversations, store)
        except Exception:  # noqa: BLE001 - retried next minute
            log.exception("could not record conversation outcomes")


# ------------------------------------------------------------------ ingestion


@post("/events", guards=[require("read")], sync_to_thread=True, tags=["learning"], status_code=200,
      request_max_body_size=_BATCH_BODY_LIMIT)
def ingest_events(request: Request, state: State, data: EventBatch) -> IngestReport:
    """Store a batch of events; every event gets ``accepted``, ``duplicate`` or ``rejected`` (with a code:
    ``unknown_type``, ``missing_id``, ``invalid_id``, ``future_timestamp``, ``invalid_timestamp``,
    ``payload_too_large``, ``invalid_event``). Events about unknown articles or conversations are
    stored with ``flags``. Retry a batch whose answer you did not get: stored events come back as duplicates."""
    store = events_of(state)
    if not data.events:
        raise ApiError(422, "empty_batch", "`events` must not be empty")
    if len(data.events) > store.config.max_batch:
        raise ApiError(422, "too_many_events", f"at most {store.config.max_batch} events per request",
                       {"limit": store.config.max_batch})
    report = store.ingest(data.events, principal(request).tenant, known_articles(request),
                          known_conversations(state))
    kb = started_kb(request)
    if kb is not None and any(r.status == "accepted" and isinstance(e, dict) and e.get("type") in FEEDBACK_TYPES
                              for r, e in zip(report.results, data.events, strict=True)):
        try:
            kb.feedback.advance()  # ranking reacts at once (else within the KB's refresh interval)
        except Exception:  # noqa: BLE001 - the events are stored; folding them is retried on refresh
            log.exception("could not fold new feedback events into the ranking counters")
    return report


# ------------------------------------------------------------------ recording what the bot did

_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("lingxi_event_tenant", default="default")


def set_event_tenant(request: Request) -> None:
    """Remember the caller's tenant for the turn this worker thread is about to run."""
    _tenant.set(principal(request).tenant)


def _model_version(state: State) -> str | None:
    loaded = getattr(getattr(state, "models", None), "current", None)
    return loaded.bundle.version if loaded is not None else None


def _bot(state: State) -> str | None:
    return getattr(state.settings, "bot", None)


def _clip(text: str | None, limit: int) -> str | None:
    return text[:limit] if text else None


def _event_id(cid: str, index: int, suffix: str = "") -> str:
    """Deterministic, so a re-saved turn cannot double-count; long ids are hashed to fit 128 characters."""
    key = cid if len(cid) <= 96 else hashlib.sha256(cid.encode()).hexdigest()[:32]
    return f"dlg:{key}:{index}{suffix}"


def _clarified_text(history: list[DialogueEvent], pos: int) -> tuple[str | None, ClarificationAsked | None]:
    """The customer message that made the bot ask the clarification resolved at ``history[pos]``."""
    asked = None
    for e in reversed(history[:pos]):
        if asked is None and isinstance(e, ClarificationAsked):
            asked = e
        elif asked is not None and isinstance(e, UserUttered):
            return e.text, asked
    return None, asked


def dialogue_to_events(cid: str, history: list[DialogueEvent], first_new: int, *, tenant: str, bot: str | None,
                       model_version: str | None, visitor_id: str | None, channel: str | None,
                       id_offset: int = 0) -> list[Event]:
    """Learning events for the dialogue events ``history[first_new:]`` (one saved turn).

    ``history`` must reach back far enough for clarifications (the question is asked a turn earlier);
    ``history[0]`` is the conversation's event number ``id_offset`` (ids count from its first event).
    """
    new = history[first_new:]
    action = next((e.decision for e in reversed(new) if isinstance(e, TurnDecided)), None)
    common = dict(tenant=tenant, bot=bot, conversation_id=cid, visitor_id=visitor_id, channel=channel,
                  model_version=model_version)
    out: list[Event] = []
    last_text: str | None = None
    turn_intent: str | None = None
    for k, e in enumerate(new):
        pos = first_new + k
        index = id_offset + pos
        if isinstance(e, UserUttered):
            last_text = e.text
            if e.parse is None or not e.text.strip():
                continue
            p = e.parse
            turn_intent = p.intent
            out.append(Event(event_id=_event_id(cid, index), ts=e.ts, **common, payload=Parse(
                text=e.text[:2000], decision=p.decision, intent=p.intent, confidence=min(1.0, max(0.0, p.confidence)),
                ranking=[(n, min(1.0, max(0.0, c))) for n, c in p.ranking[:10]], language=p.language,
                message_id=e.message_id, action=action, button=e.payload is not None)))
        elif isinstance(e, BotUttered):
            out.append(Event(event_id=_event_id(cid, index), ts=e.ts, **common, payload=Reply(
                text=_clip(e.text, 4000), kind=e.kind[:64] or "text", article_id=e.article.id if e.article else None,
                buttons=[b.payload[:200] for b in e.buttons[:20]])))
            # the articles the bot showed are impressions the server made: the customer's clicks and
            # votes on them count against these (a card without a search is not an impression)
            cards = [c for c in ((e.article,) if e.article else ()) + tuple(e.articles) if c.search_id]
            for k, card in enumerate(cards):
                out.append(Event(event_id=_event_id(cid, index, f":imp{k}"), ts=e.ts, **common, payload=Impression(
                    article_id=card.id[:64], rank=max(1, min(card.rank or 1, 1000)), search_id=card.search_id[:64],
                    query=_clip(last_text, 500), intent=turn_intent)))
        elif isinstance(e, ClarificationResolved) and e.value.startswith("article:"):
            _, asked = _clarified_text(history, pos)
            card = next((c for c in (asked.articles if asked else ()) if f"article:{c.id}" == e.value), None)
            if card is not None:  # picking an offered article is a click on it
                out.append(Event(event_id=_event_id(cid, index), ts=e.ts, **common, payload=Click(
                    article_id=card.id[:64], rank=card.rank, search_id=card.search_id)))
        elif isinstance(e, ClarificationResolved):
            vague, asked = _clarified_text(history, pos)
            if vague and asked is not None:
                out.append(Event(event_id=_event_id(cid, index), ts=e.ts, **common, payload=Clarification(
                    text=vague[:2000], chosen=e.value, options=[o.value for o in asked.options][:20],
                    kind=asked.kind, via=e.via)))
        elif isinstance(e, HandedOff):
            out.append(Event(event_id=_event_id(cid, index), ts=e.ts, **common, payload=Handoff(
                reason=e.reason[:200] or "handoff", text=_clip(last_text, 2000), intent=turn_intent,
                skill_group=e.skill_group[:64], priority=e.priority[:64], mode=e.mode)))
            out.append(Event(event_id=_event_id(cid, index, ":outcome"), ts=e.ts, **common,
                             payload=Outcome(outcome="handed_off")))
    return out


class _RecordingStore:
    """The conversation store, plus: after each save, the turn's learning events go to the writer."""

    def __init__(self, inner: Any, state: State) -> None:
        self._inner = inner
        self._state = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def save(self, tracker: Any) -> None:
        # read the turn before saving: a save may snapshot and rebase the tracker's tail
        history, offset = list(tracker.tail), tracker.base_seq
        first_new = tracker.stored - offset
        state = tracker.state
        self._inner.save(tracker)
        try:
            self._record(tracker.conversation_id, history, offset, first_new, state)
        except Exception:  # noqa: BLE001 - the turn is saved; losing its telemetry must not fail it
            log.exception("could not record the learning events of a turn of %s", tracker.conversation_id)

    def _record(self, cid: str, history: list, offset: int, first_new: int, state: Any) -> None:
        writer: EventWriter | None = getattr(self._state, "event_writer", None)
        if writer is None or first_new >= len(history):
            return
        new = history[first_new:]
        if any(isinstance(e, ClarificationResolved) for e in new) and not any(
                isinstance(e, ClarificationAsked) for e in history[:first_new]):
            history = list(self._inner.events(cid))  # the question is behind a snapshot: read it all
            first_new, offset = len(history) - len(new), 0
        events = dialogue_to_events(
            cid, history, first_new, tenant=_tenant.get(), bot=_bot(self._state),
            model_version=_model_version(self._state), visitor_id=state.visitor_id, channel=state.channel,
            id_offset=offset)
        self._serve_cards(cid, events)
        writer.submit(events)

    def _serve_cards(self, cid: str, events: list[Event]) -> None:
        """The cards this turn showed are served impressions: the customer's clicks and votes on them
        may count (once each, see retrieval/feedback.py); anything else a client sends does not."""
        shown: dict[str, list[str]] = {}
        for e in events:
            if isinstance(e.payload, Impression) and e.payload.search_id:
                shown.setdefault(e.payload.search_id, []).append(e.payload.article_id)
        kbs = getattr(self._state, "kbs", None)
        kb = kbs.started(_tenant.get()) if kbs is not None and shown else None
        for search_id, article_ids in shown.items():
            if kb is not None:
                kb.feedback.serve(search_id, article_ids, f"conv:{cid}"[:128])


_tap_lock = threading.Lock()


def tap_dialogue(state: State, service: Any) -> None:
    """Make the dialogue service's saves produce learning events (idempotent)."""
    engine = getattr(service, "engine", None)
    if engine is None:
        return
    with _tap_lock:
        if not isinstance(engine.store, _RecordingStore):
            engine.store = _RecordingStore(engine.store, state)


def record_parse(request: Request, state: State, text: str, result: Any, channel: str | None,
                 conversation_id: str | None) -> None:
    """A bare ``/v1/parse`` call as a ``parse`` event (no dialogue action)."""
    writer: EventWriter | None = getattr(state, "event_writer", None)
    if writer is None or not text.strip():
        return
    try:
        payload = Parse(text=text[:2000], decision=result.decision, intent=result.intent.name,
                        confidence=min(1.0, max(0.0, result.intent.confidence)),
                        ranking=[(i.name, min(1.0, max(0.0, i.confidence))) for i in result.intent_ranking[:10]],
                        language=result.language)
        writer.submit([Event(event_id=f"parse:{uuid.uuid4().hex}", ts=time.time(), tenant=principal(request).tenant,
                             bot=_bot(state), conversation_id=conversation_id, channel=channel,
                             model_version=result.model.version if result.model else _model_version(state),
                             payload=payload)])
    except Exception:  # noqa: BLE001
        log.exception("could not record a parse event")


# ------------------------------------------------------------------ the misunderstood queue

_OPERATOR = [require("editor")]
_SQL_INT = 2**63 - 1  # integers go to SQL as 64-bit: larger ones are refused with 400, not a driver overflow
_STATUSES = {"open", "resolved", "ignored", "all"}


class EntryList(msgspec.Struct, kw_only=True):
    items: list[Entry]
    total: int
    limit: int
    offset: int


class ResolveRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``action``: ``intent`` (an existing intent), ``new_intent`` (a new intent's name), ``article``
    (a KB article id; the text is added to its question variants as a draft unless ``add_variant`` is
    false) or ``ignore``."""

    action: Action
    target: str | None = None
    note: str | None = None
    add_variant: bool = True


class BulkResolveRequest(ResolveRequest, forbid_unknown_fields=True, kw_only=True):
    ids: list[int]


def _queue(state: State) -> MisunderstoodQueue:
    queue = getattr(state, "misunderstood", None)
    if queue is None:
        raise ApiError(503, "events_not_ready", "the misunderstood queue is not open")
    return queue


def _synced(state: State) -> MisunderstoodQueue:
    """The queue, caught up with the events stored so far (server events are flushed first)."""
    writer: EventWriter | None = getattr(state, "event_writer", None)
    if writer is not None:
        writer.flush(timeout=2.0)
    queue = _queue(state)
    queue.sync()
    return queue


def _queue_error(exc: QueueError) -> ApiError:
    return ApiError(404 if exc.code == "not_found" else 422, exc.code, exc.message)


def _known_intents(state: State) -> set[str] | None:
    loaded = getattr(getattr(state, "models", None), "current", None)
    return {i.name for i in loaded.bundle.intents} if loaded is not None else None


def _check_target(request: Request, state: State, data: ResolveRequest) -> None:
    """An ``intent`` must exist in the served model, a ``new_intent`` must not; an ``article`` must exist."""
    intents = _known_intents(state)
    target = (data.target or "").strip()
    if data.action == "intent" and intents is not None and target and target not in intents:
        raise ApiError(422, "unknown_intent", f"the bot has no intent {target!r}; resolve with `new_intent` to "
                       "create it", {"known": sorted(intents)[:200]})
    if data.action == "new_intent" and intents is not None and target in intents:
        raise ApiError(422, "intent_exists", f"intent {target!r} exists; resolve with `intent`")
    if data.action == "article" and target:
        kb = started_kb(request)
        if kb is None or not kb.store.get_many([target]):
            raise ApiError(422, "unknown_article", f"no knowledge-base article {target!r}")


def _add_variants(request: Request, entries: list[Entry], article_id: str) -> None:
    """Add the utterances as question variants of the article (a new draft version, for review)."""
    from lingxi.retrieval.articles import CONTENT_FIELDS, ArticleContent

    kb = started_kb(request)
    if kb is None:
        return
    article = kb.get(article_id)
    content = ArticleContent(**{f: getattr(article, f) for f in CONTENT_FIELDS})
    new = [e.text for e in entries if e.text not in content.variants and e.text != content.title]
    if new:
        content = msgspec.structs.replace(content, variants=[*content.variants, *new])
        kb.update(article_id, content, article.version, principal(request).name)


def _resolve(request: Request, state: State, ids: list[int], data: ResolveRequest) -> list[Entry]:
    _check_target(request, state, data)
    queue, caller = _queue(state), principal(request)
    try:
        entries = [queue.get(caller.tenant, i) for i in dict.fromkeys(ids)]
        if data.action == "article" and data.add_variant and data.target:
            _add_variants(request, entries, data.target.strip())  # before resolving: it may be refused
        return queue.resolve(caller.tenant, ids, data.action, (data.target or "").strip() or None, caller.name,
                             data.note)
    except QueueError as exc:
        raise _queue_error(exc) from None


@get("/misunderstood", guards=_OPERATOR, sync_to_thread=True, tags=["learning"])
def list_misunderstood(request: Request, state: State, status: str = "open", reason: str | None = None,
                       bot: str | None = None, q: str | None = None,
                       min_count: int = Parameter(default=1, ge=1, le=_SQL_INT), sort: str = "count",
                       limit: int = Parameter(default=50, ge=1, le=500),
                       offset: int = Parameter(default=0, ge=0, le=_SQL_INT)
                       ) -> EntryList:
    """Utterances the bot fell back on, clarified, answered unsurely, handed off or answered wrongly;
    deduplicated, most frequent first (``sort=recent``: latest first)."""
    from lingxi.training.misunderstood import REASONS

    if status not in _STATUSES:
        raise ApiError(422, "invalid_field", f"`status` must be one of {sorted(_STATUSES)}")
    if reason is not None and reason not in REASONS:
        raise ApiError(422, "invalid_field", f"`reason` must be one of {list(REASONS)}")
    if sort not in ("count", "recent"):
        raise ApiError(422, "invalid_field", "`sort` must be `count` or `recent`")
    if q is not None and len(q) > 200:
        raise ApiError(422, "invalid_field", "`q` is at most 200 characters")
    items, total = _synced(state).list(principal(request).tenant, status=None if status == "all" else status,
                                       reason=reason, bot=bot, q=q, min_count=min_count, sort=sort, limit=limit,
                                       offset=offset)
    return EntryList(items=items, total=total, limit=limit, offset=offset)


@get("/misunderstood/labels", guards=_OPERATOR, sync_to_thread=True, tags=["learning"])
def list_labels(request: Request, state: State, bot: str | None = None) -> list[Label]:
    """The training labels the queue yields: operator labels and agreed weak labels (from clarifications)."""
    return _synced(state).labels(principal(request).tenant, bot, known_intents=sorted(_known_intents(state) or ()))


# SQLite and PostgreSQL integers are 64-bit: larger ids are refused with a 400, not a database error
_ENTRY_ID = Parameter(ge=1, le=_SQL_INT, description="the entry's id")


@get("/misunderstood/{entry_id:int}", guards=_OPERATOR, sync_to_thread=True, tags=["learning"])
def get_misunderstood(request: Request, state: State, entry_id: int = _ENTRY_ID) -> Entry:
    try:
        return _queue(state).get(principal(request).tenant, entry_id)
    except QueueError as exc:
        raise _queue_error(exc) from None


@post("/misunderstood/{entry_id:int}/resolve", guards=_OPERATOR, sync_to_thread=True, tags=["learning"],
      status_code=200)
def resolve_misunderstood(request: Request, state: State, data: ResolveRequest, entry_id: int = _ENTRY_ID) -> Entry:
    """Assign the utterance to an intent, a new intent or a KB article, or ignore it."""
    return _resolve(request, state, [entry_id], data)[0]


@post("/misunderstood/resolve", guards=_OPERATOR, sync_to_thread=True, tags=["learning"], status_code=200)
def resolve_many(request: Request, state: State, data: BulkResolveRequest) -> list[Entry]:
    """Resolve several entries the same way (all or none: an unknown id refuses the call)."""
    if not 1 <= len(data.ids) <= 500 or not all(1 <= i < 2**63 for i in data.ids):
        raise ApiError(422, "invalid_field", "`ids`: 1..500 entry ids (positive 64-bit integers)")
    return _resolve(request, state, data.ids, data)


@post("/misunderstood/{entry_id:int}/reopen", guards=_OPERATOR, sync_to_thread=True, tags=["learning"],
      status_code=200)
def reopen_misunderstood(request: Request, state: State, entry_id: int = _ENTRY_ID) -> Entry:
    try:
        return _queue(state).reopen(principal(request).tenant, entry_id)
    except QueueError as exc:
        raise _queue_error(exc) from None


events_router = Router(path="/v1", route_handlers=[
    ingest_events, list_misunderstood, list_labels, get_misunderstood, resolve_misunderstood, resolve_many,
    reopen_misunderstood,
], exception_handlers={KbError: kb_error_handler})
