"""Conversation API: the dialogue manager over HTTP, plus a Rasa-compatible REST channel.

Routes (one litestar ``Router``, ``conversations_router``):

* ``POST /v1/conversations`` — open a conversation (chat window opened): welcome + menu.
* ``POST /v1/conversations/{id}/messages`` — one customer message (text or a button payload) →
  bot messages, decision, trace, handoff payload. An unknown id starts a new conversation.
* ``GET /v1/conversations/{id}?events=none|applied|after_restart|all`` — the tracker (404 if unknown).
* ``POST /v1/conversations/{id}/events`` — a behaviour event (page view, dwell, cart, order status)
  → maybe a proactive message.
* ``POST /v1/conversations/{id}/release`` — an agent (role ``agent``, or ``editor`` and above) hands
  the conversation back to the bot. Agent messages, live updates and the inbox: :mod:`.agents`.
* ``GET /v1/visitors/{id}``, ``POST /v1/visitors/link`` — cross-channel visitors (server keys only).

Site keys (role ``read``, public) act only on conversations they opened, with the
``conversation_token`` the open returned (:mod:`.capabilities`), and their visitor claims never
link to earlier history unless the shop vouches with an identity token (:mod:`.identity`).
* ``POST /webhooks/rest/webhook`` — Rasa's REST channel (``{sender, message}`` →
  ``[{recipient_id, text, buttons}]``), so Rasa web widgets work unchanged; the API key may be
  given as ``?token=`` as Rasa does. The sender id is the caller's word, so this needs a server key.
* ``/v1/demo-shop/...`` — the demo shop's fake order backend the demo flows call.

Wiring in ``create_app``: add ``conversations_router`` to ``route_handlers`` and
``dialogue_lifespan`` to ``lifespan``. Without the lifespan the service is built on first use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from lingxi.datasets.domain import CalibrationSet, load_calibration_set
from lingxi.dialogue import demo_backend
from lingxi.dialogue.actions import ActionClient
from lingxi.dialogue.engine import (
    BehaviourIn,
    ConversationNotFound,
    DialogueEngine,
    MessageIn,
    ModelNotLoaded,
)
from lingxi.dialogue.stores import ConcurrentUpdate, ConversationBusy, build_store
from lingxi.dialogue.tenancy import scope_engine_by_tenant
from lingxi.dialogue.tracker import EventVerbosity
from lingxi.dialogue.turn import TurnResult
from lingxi.dialogue.visitors import Identity, Visitor

from . import metrics
from .auth import principal, require, require_agent
from .capabilities import is_public, mint_conversation_token, require_conversation_token
from .errors import ApiError, error_body
from .events import set_event_tenant, tap_dialogue
from .faults import backend_outage
from .identity import VERIFIED_KIND, InvalidIdentityToken, verify_identity_token
from .knowledge import ArbitrationStore, TenantKnowledge
from .limits import check_json_depth

log = logging.getLogger("lingxi.serving")

_CID = re.compile(r"^[\w.:@\-]{1,128}$")
DEMO_BACKEND_PATH = "/v1/demo-shop"


# ------------------------------------------------------------------ wire types


class IdentityIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    value: str


class VisitorIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``id`` is the channel's own user id (an app user id, a WeChat openid …); phone, email and
    device id are identities too. Identities seen together link their visitors."""

    id: str | None = None
    phone: str | None = None
    email: str | None = None
    device_id: str | None = None
    identities: list[IdentityIn] = msgspec.field(default_factory=list)
    # minted by the shop's backend (serving/identity.py): the only way a site key links to history
    identity_token: str | None = None


class OpenedConversation(TurnResult, kw_only=True):
    """The opening turn; for a site key also the ``conversation_token`` its later calls must send."""

    conversation_token: str | None = None


class MessageRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    text: str | None = None
    payload: str | None = None
    channel: str | None = None
    language: str | None = None
    visitor: VisitorIn | None = None
    tags: list[str] | None = None
    timestamp: datetime | None = None
    slots: dict[str, Any] | None = None
    message_id: str | None = None


class OpenRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    conversation_id: str | None = None
    channel: str | None = None
    language: str | None = None
    visitor: VisitorIn | None = None
    tags: list[str] | None = None
    timestamp: datetime | None = None


class EventRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    kind: str
    page: str | None = None
    seconds: float | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    channel: str | None = None
    visitor: VisitorIn | None = None
    tags: list[str] | None = None
    timestamp: datetime | None = None


class ReleaseRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    by: str = "agent"
    note: str = ""
    message: str | None = None  # what the bot says when it takes over again
    timestamp: datetime | None = None


class LinkRequest(msgspec.Struct, forbid_unknown_fields=True):
    identities: list[IdentityIn]


class RasaMessage(msgspec.Struct):
    """Rasa REST channel input; unknown fields are ignored as Rasa does."""

    sender: str
    message: str
    metadata: dict[str, Any] | None = None


# ------------------------------------------------------------------ the service


class DialogueService:
    def __init__(self, engine: DialogueEngine, max_text_chars: int = 2000,
                 arbitrations: ArbitrationStore | None = None) -> None:
        self.engine = engine
        self.max_text_chars = max_text_chars
        self.arbitrations = arbitrations

    def close(self) -> None:
        self.engine.close()


def _setting(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    return default if value is None else value


def dialogue_domain(settings: Any) -> Path:
    from lingxi.datasets.domain import demo_domain_path

    return Path(_setting(settings, "dialogue_domain", demo_domain_path()))


def eval_questions(domain: Path) -> CalibrationSet:
    """The domain's held-out questions (``eval/``) the answer arbitration is calibrated on."""
    try:
        return load_calibration_set(domain)
    except Exception as exc:  # noqa: BLE001 - a broken eval file: calibrate on the knowledge base alone
        log.warning("ignoring the held-out files of %s for calibration: %s", domain, exc)
        return CalibrationSet()


def build_dialogue_service(settings: Any, models: Any, knowledge: Any = None,
                           kbs: Callable[[], Any] | None = None, *, spec: Any = None, store: Any = None,
                           actions: ActionClient | None = None, clock: Callable[[], float] | None = None
                           ) -> DialogueService:
    """The engine from Settings: ``dialogue_store`` (``sqlite:///<home>/dialogue.db`` | ``memory`` |
    ``redis://…`` | any SQLAlchemy URL; default ``$LINGXI_DIALOGUE_STORE``), ``dialogue_domain``
    (folder with ``flows/``; default the demo), ``dialogue_backend_url`` (the shop backend the flows
    call; default this server's demo shop), ``dialogue_lock_wait_s``.

    ``kbs()``: the server's knowledge bases (``app.state.kbs``); with it every turn consults the
    tenant's knowledge base, and the answer arbitration is fitted for it (:mod:`.knowledge`).
    ``knowledge``, ``spec``, ``store``, ``actions`` and ``clock`` replace what the settings say
    (tests, and programs embedding the engine).
    """
    from lingxi.datasets.dialogue_files import load_dialogue
    from lingxi.datasets.domain import load_domain

    home = Path(_setting(settings, "home", ".lingxi"))
    store_url = _setting(settings, "dialogue_store", os.environ.get("LINGXI_DIALOGUE_STORE")
                         or f"sqlite:///{(home / 'dialogue.db').resolve()}")
    domain = dialogue_domain(settings)
    try:
        dom = load_domain(domain)
        known = set(dom.intent_names), {r.id for r in dom.rules}
    except Exception:  # noqa: BLE001 - the flows still load; intents are checked against the model later
        known = None, None
    spec = spec or load_dialogue(domain, *known)
    host = _setting(settings, "host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    backend = _setting(settings, "dialogue_backend_url", f"http://{host}:{_setting(settings, 'port', 8000)}"
                                                         f"{DEMO_BACKEND_PATH}")
    store = store or build_store(store_url, wait_s=float(_setting(settings, "dialogue_lock_wait_s", 10.0)),
                                 timeout_s=float(_setting(settings, "backend_timeout_s", 3.0)))

    def nlu():
        loaded = models.current if models is not None else None
        return loaded.pipeline if loaded is not None else None

    if knowledge is None and kbs is not None:
        knowledge = TenantKnowledge(kbs)
    arbitrations = None
    engine_box: list[DialogueEngine] = []
    if knowledge is not None and models is not None:
        questions = eval_questions(domain)

        def loaded_version() -> str | None:
            return models.current.bundle.version if models.current is not None else None

        def fit():
            return engine_box[0].fit_arbitration(questions, fitted_on={"model_version": loaded_version()})

        arbitrations = ArbitrationStore(knowledge if isinstance(knowledge, TenantKnowledge) else TenantKnowledge(kbs),
                                        fit, lambda: models.current.path if models.current is not None else None,
                                        loaded_version)
    engine = DialogueEngine(spec, nlu, store, knowledge=knowledge, actions=actions or ActionClient(backend),
                            arbitration=arbitrations.current if arbitrations is not None else None,
                            **({"clock": clock} if clock is not None else {}))
    engine_box.append(engine)
    scope_engine_by_tenant(engine)  # every request sees only its tenant's conversations and visitors
    return DialogueService(engine, int(_setting(settings, "max_text_chars", 2000)), arbitrations)


_build_lock = threading.Lock()


def service_of(state: State) -> DialogueService:
    svc = getattr(state, "dialogue", None)
    if svc is None:
        with _build_lock:
            svc = getattr(state, "dialogue", None)
            if svc is None:
                svc = build_dialogue_service(state.settings, getattr(state, "models", None),
                                             kbs=lambda: getattr(state, "kbs", None))
                tap_dialogue(state, svc)
                state.dialogue = svc
    return svc


@asynccontextmanager
async def dialogue_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Builds ``app.state.dialogue`` at startup (unless a test put one there), fits or loads the
    default tenant's answer arbitration before traffic, and closes the service at shutdown."""
    import anyio

    if getattr(app.state, "dialogue", None) is None:
        try:
            app.state.dialogue = await anyio.to_thread.run_sync(
                lambda: build_dialogue_service(app.state.settings, getattr(app.state, "models", None),
                                               kbs=lambda: getattr(app.state, "kbs", None)))
        except Exception as exc:
            if backend_outage(exc) is None:
                raise
            log.warning("conversation store unavailable at start-up (%s); conversation calls answer 503 "
                        "store_unavailable until it is reachable", type(exc).__name__)
    svc: DialogueService | None = getattr(app.state, "dialogue", None)
    if svc is not None:
        scope_engine_by_tenant(svc.engine)  # before the event tap wraps the store
        tap_dialogue(app.state, svc)  # turns become learning events (serving/events.py)
        models = getattr(app.state, "models", None)
        if svc.arbitrations is not None and models is not None and models.current is not None:
            await anyio.to_thread.run_sync(svc.arbitrations.ensure)
    try:
        yield
    finally:
        if svc is not None:
            svc.close()


# ------------------------------------------------------------------ validation and mapping


def _check_cid(cid: str) -> str:
    if not _CID.match(cid):
        raise ApiError(422, "invalid_conversation_id",
                       "conversation ids are 1..128 letters, digits or _ . : @ -")
    return cid


def _identities(visitor: VisitorIn | None, channel: str | None) -> list[Identity]:
    if visitor is None:
        return []
    out = [Identity(i.kind, i.value) for i in visitor.identities]
    if visitor.id:
        out.append(Identity(f"{channel or 'web'}_user", visitor.id))
    for kind, value in (("phone", visitor.phone), ("email", visitor.email), ("device", visitor.device_id)):
        if value:
            out.append(Identity(kind, value))
    for i in out:
        if not i.kind.strip() or not i.value.strip() or len(i.kind) > 64 or len(i.value) > 256:
            raise ApiError(422, "invalid_field", "visitor identities need a kind (≤64) and a value (≤256)")
    if len(out) > 20:
        raise ApiError(422, "invalid_field", "at most 20 visitor identities")
    return out


def _visitor_identities(request: Request, visitor: VisitorIn | None, channel: str | None,
                        cid: str) -> list[Identity]:
    """The identities a call may link its conversation with.

    A server-side key vouches for what it sends. A site key's claims (phone, user id, device) are
    kept, but scoped to this one conversation, so they start a fresh visitor and never reach another
    customer's history; only a valid identity token links to the shop's account ``shop_user:<id>``."""
    out = _identities(visitor, channel)
    caller = principal(request)
    if visitor is not None and visitor.identity_token:
        secrets = getattr(request.app.state.settings, "identity_secrets", None) or {}
        try:
            user_id = verify_identity_token(visitor.identity_token.strip(), secrets.get(caller.tenant))
        except InvalidIdentityToken as exc:
            raise ApiError(422, "invalid_identity_token", str(exc)) from None
        verified = [Identity(VERIFIED_KIND, user_id)]
    else:
        verified = []
    if not is_public(caller):
        return [*out, *verified]
    return [*verified, *(Identity(f"claimed_{i.kind}"[:64], f"{cid}:{i.value}") for i in out)]


def _check_common(channel: str | None, tags: list[str] | None, language: str | None = None) -> None:
    if channel is not None and (not channel.strip() or len(channel) > 64):
        raise ApiError(422, "invalid_field", "`channel` must be 1..64 characters")
    if tags is not None and (len(tags) > 50 or any(not t.strip() or len(t) > 64 for t in tags)):
        raise ApiError(422, "invalid_field", "`tags`: at most 50 tags of 1..64 characters")
    if language is not None and language not in ("zh", "en"):
        raise ApiError(422, "invalid_language", "`language` must be one of ['en', 'zh']")


def _run(fn, *args):
    try:
        result = fn(*args)
    except ConversationNotFound:
        raise ApiError(404, "conversation_not_found", f"no conversation {args[0]!r}") from None
    except (ConversationBusy, ConcurrentUpdate) as exc:
        raise ApiError(409, "conversation_busy", f"{exc}; retry the request") from None
    except ModelNotLoaded:
        raise ApiError(503, "model_not_loaded", "no model is loaded yet; train one with `lingxi train`") from None
    if isinstance(result, TurnResult):
        metrics.observe_turn(result.decision, result.handoff.reason if result.handoff else None,
                             result.handoff.mode if result.handoff else None)
    return result


def _message_in(data: MessageRequest, svc: DialogueService, request: Request, cid: str) -> MessageIn:
    text = (data.text or "").strip()
    payload = (data.payload or "").strip()
    if not text and not payload:
        raise ApiError(422, "empty_text", "give `text` or `payload` with at least one non-space character")
    for name, value in (("text", text), ("payload", payload)):
        if len(value) > svc.max_text_chars:
            raise ApiError(422, "text_too_long", f"`{name}` has {len(value)} characters; the limit is "
                           f"{svc.max_text_chars}", {"limit": svc.max_text_chars})
    _check_common(data.channel, data.tags, data.language)
    if data.slots is not None and (len(data.slots) > 50 or any(len(k) > 64 for k in data.slots)):
        raise ApiError(422, "invalid_field", "`slots`: at most 50 slots with names of ≤64 characters")
    check_json_depth("slots", data.slots)
    return MessageIn(text=text or None, payload=payload or None, channel=data.channel, language=data.language,
                     tags=data.tags, identities=_visitor_identities(request, data.visitor, data.channel, cid),
                     timestamp=data.timestamp, slots=data.slots, message_id=data.message_id)


# ------------------------------------------------------------------ handlers


@post("/v1/conversations", sync_to_thread=True, guards=[require("read")], tags=["dialogue"], status_code=201)
def open_conversation(data: OpenRequest, state: State, request: Request) -> OpenedConversation:
    """Open a conversation (the chat window opened): the per-channel welcome and the topic menu.
    With a site key the answer carries the ``conversation_token`` for the calls that follow."""
    svc = service_of(state)
    set_event_tenant(request)
    cid = _check_cid(data.conversation_id) if data.conversation_id else f"c-{uuid.uuid4().hex}"
    _check_common(data.channel, data.tags, data.language)
    if svc.engine.store.exists(cid):
        raise ApiError(409, "conversation_exists", f"conversation {cid!r} already exists")
    msg = MessageIn(channel=data.channel, language=data.language, tags=data.tags,
                    identities=_visitor_identities(request, data.visitor, data.channel, cid), timestamp=data.timestamp)
    result = _run(svc.engine.open, cid, msg)
    token = None
    if is_public(principal(request)):
        if not result.created:  # someone else opened this id first: its token is not ours to hand out
            raise ApiError(409, "conversation_exists", f"conversation {cid!r} already exists")
        token = mint_conversation_token(svc.engine.store, cid)
    return OpenedConversation(**{f: getattr(result, f) for f in result.__struct_fields__}, conversation_token=token)


@post("/v1/conversations/{conversation_id:str}/messages", sync_to_thread=True, guards=[require("read")],
      tags=["dialogue"], status_code=200)
def post_message(conversation_id: str, data: MessageRequest, state: State, request: Request) -> TurnResult:
    """One customer message → the bot's reply, the decision and why (``trace``), and a handoff payload
    when the conversation goes to a human. A new id starts a conversation."""
    svc = service_of(state)
    set_event_tenant(request)
    cid = _check_cid(conversation_id)
    require_conversation_token(request, svc.engine.store, cid)
    msg = _message_in(data, svc, request, cid)
    return _run(svc.engine.handle_message, cid, msg)


@get("/v1/conversations/{conversation_id:str}", sync_to_thread=True, guards=[require("read")], tags=["dialogue"])
def get_conversation(conversation_id: str, state: State, request: Request,
                     events: str = Parameter(default="none", description="none | applied | after_restart | all")
                     ) -> dict[str, Any]:
    """The tracker: derived state (slots, flow stack, handoff, visitor…) and, on request, the events."""
    svc = service_of(state)
    try:
        verbosity = EventVerbosity.parse(events)
    except ValueError as exc:
        raise ApiError(422, "invalid_field", str(exc)) from None
    require_conversation_token(request, svc.engine.store, _check_cid(conversation_id))
    tracker = svc.engine.tracker(conversation_id)
    if tracker is None:
        raise ApiError(404, "conversation_not_found", f"no conversation {conversation_id!r}")
    full = svc.engine.store.events(conversation_id) if verbosity is not EventVerbosity.NONE else None
    return tracker.dump(verbosity, full)


@post("/v1/conversations/{conversation_id:str}/events", sync_to_thread=True, guards=[require("read")],
      tags=["dialogue"], status_code=200)
def post_event(conversation_id: str, data: EventRequest, state: State, request: Request) -> TurnResult:
    """A behaviour event from the frontend; the reply holds a proactive message when a trigger fires."""
    svc = service_of(state)
    set_event_tenant(request)
    require_conversation_token(request, svc.engine.store, _check_cid(conversation_id))
    if not data.kind.strip() or len(data.kind) > 64:
        raise ApiError(422, "invalid_field", "`kind` must be 1..64 characters")
    if data.seconds is not None and data.seconds < 0:
        raise ApiError(422, "invalid_field", "`seconds` must not be negative")
    if data.page is not None and len(data.page) > 512:
        raise ApiError(422, "invalid_field", "`page` must be at most 512 characters")
    check_json_depth("data", data.data)
    _check_common(data.channel, data.tags)
    ev = BehaviourIn(kind=data.kind, page=data.page, seconds=data.seconds, data=data.data, channel=data.channel,
                     tags=data.tags, identities=_visitor_identities(request, data.visitor, data.channel,
                                                                    conversation_id),
                     timestamp=data.timestamp)
    return _run(svc.engine.handle_behaviour, _check_cid(conversation_id), ev)


@post("/v1/conversations/{conversation_id:str}/release", sync_to_thread=True, guards=[require_agent()],
      tags=["dialogue"], status_code=200)
def release_conversation(conversation_id: str, state: State, request: Request,
                         data: ReleaseRequest | None = None) -> TurnResult:
    """An agent gives the conversation back to the bot (which was silent since the handoff), with an
    optional ``note`` (kept in the log and announced to the platform) and ``message`` the bot says."""
    svc = service_of(state)
    set_event_tenant(request)
    data = data or ReleaseRequest()
    return _run(svc.engine.release, _check_cid(conversation_id), data.by, data.note, data.timestamp, data.message)


@get("/v1/visitors/{visitor_id:str}", sync_to_thread=True, guards=[require("server")], tags=["dialogue"])
def get_visitor(visitor_id: str, state: State) -> Visitor:
    """A visitor's identities and conversations (following merges); server and operator keys only."""
    visitor = service_of(state).engine.visitors.get(visitor_id)
    if visitor is None:
        raise ApiError(404, "visitor_not_found", f"no visitor {visitor_id!r}")
    return visitor


@post("/v1/visitors/link", sync_to_thread=True, guards=[require("editor")], tags=["dialogue"], status_code=200)
def link_visitor(data: LinkRequest, state: State) -> Visitor:
    """Declare identities as one person (e.g. the app account and the WeChat openid after binding)."""
    if not 1 <= len(data.identities) <= 20:
        raise ApiError(422, "invalid_field", "give 1..20 identities")
    idents = _identities(VisitorIn(identities=data.identities), None)
    visitor, _ = service_of(state).engine.visitors.resolve(idents)
    return visitor


# Rasa widgets cannot send headers: accept the key as ``?token=`` as well. The sender id names the
# conversation on the caller's word, so only a server key (a bridge the shop runs) may use it.
_token_or_key = require("server", query_token="token")


def _rasa_cid(sender: str) -> str:
    return sender if _CID.match(sender) else "rasa-" + hashlib.sha256(sender.encode()).hexdigest()[:32]


@post("/webhooks/rest/webhook", sync_to_thread=True, guards=[_token_or_key], tags=["rasa"], status_code=200)
def rasa_webhook(data: RasaMessage, state: State, request: Request) -> list[dict[str, Any]]:
    """Rasa REST channel: ``{sender, message}`` → ``[{recipient_id, text, buttons}]``."""
    svc = service_of(state)
    set_event_tenant(request)
    meta = data.metadata or {}
    text = data.message.strip()
    if not text:
        return []
    channel = meta.get("channel") if isinstance(meta.get("channel"), str) else "rasa"
    tags = [t for t in meta.get("tags", []) if isinstance(t, str)] if isinstance(meta.get("tags"), list) else None
    result = _run(svc.engine.handle_message, _rasa_cid(data.sender),
                  MessageIn(text=text[: svc.max_text_chars], channel=channel, tags=tags))
    out: list[dict[str, Any]] = []
    for m in result.messages:
        item: dict[str, Any] = {"recipient_id": data.sender}
        text_out = m.text or ""
        if m.article is not None:
            title = m.article.title or m.article.id
            text_out = f"{text_out}\n《{title}》{' ' + m.article.url if m.article.url else ''}".strip()
            item["custom"] = {"article": msgspec.to_builtins(m.article)}
        if text_out:
            item["text"] = text_out
        if m.buttons:
            item["buttons"] = [{"title": b.title, "payload": b.payload} for b in m.buttons]
        out.append(item)
    if result.handoff is not None:
        out.append({"recipient_id": data.sender, "custom": {"handoff": msgspec.to_builtins(result.handoff)}})
    return out


@get("/webhooks/rest", sync_to_thread=False, tags=["rasa"], include_in_schema=False)
def rasa_health() -> dict[str, str]:
    return {"status": "ok"}


# ------------------------------------------------------------------ the demo shop's fake backend


@get(f"{DEMO_BACKEND_PATH}/orders/{{order_id:str}}", sync_to_thread=False, include_in_schema=False)
def demo_order(order_id: str) -> Response:
    status, body = demo_backend.order(order_id)
    return Response(body if body is not None else error_body("not_found", "no such order"), status_code=status)


@post(f"{DEMO_BACKEND_PATH}/refunds", sync_to_thread=False, include_in_schema=False)
def demo_refund(request: Request, data: dict[str, Any]) -> Response:
    status, body = demo_backend.refund(data)
    return Response(body, status_code=status)


conversations_router = Router(path="/", route_handlers=[
    open_conversation, post_message, get_conversation, post_event, release_conversation, get_visitor, link_visitor,
    rasa_webhook, rasa_health, demo_order, demo_refund,
])


def app_with_dialogue(settings: Any, holder: Any = None) -> Litestar:
    """``create_app`` plus the conversation routes, for as long as ``create_app`` does not add them."""
    from .app import create_app

    app = create_app(settings, holder)
    if not any(getattr(r, "path", "") == "/v1/conversations" for r in app.routes):
        app.register(conversations_router)
    return app
