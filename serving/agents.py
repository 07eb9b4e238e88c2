"""Agent in and live updates: human agents write into a conversation, and the widget and the console
see every message as it is stored.

Routes:

* ``POST /v1/conversations/{id}/agent-messages`` (role ``agent``, or ``editor`` and above) — an
  agent's message, stored as an ``agent`` event. 409 ``bot_holds_conversation`` when no human holds
  the conversation (the bot has it, or it was released) unless ``take_over: true``; 404 unknown;
  403 ``other_tenant`` when the id belongs to another tenant. A repeated ``message_id`` is not
  stored twice (platform retries).
* ``GET /v1/conversations/{id}/stream`` — Server-Sent Events: every visible event (customer, bot,
  agent, handoff, release) with the event's position in the log as ``id``; resumable with
  ``Last-Event-ID`` (or ``?after=``). A ``state`` frame (no id) says who holds the conversation.
* ``GET /v1/conversations/{id}/events?after=<seq>&wait=25`` — the same as long polling (for
  proxies that buffer streams); ``POST`` on that path stays the behaviour-event route.
* ``GET /v1/inbox`` and ``GET /v1/inbox/{id}`` (role ``agent``) — the handed-off conversations of
  the caller's tenant (waiting time, priority, suggested group, summary) and one conversation's
  transcript, slots and intents: the console's agent inbox for shops with no chat platform.

Everything is read from the conversation store, so it works across workers and replicas; a stream
polls the store every ``STREAM_POLL_S`` while a client is connected.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import Stream

from lingxi.dialogue.events import AgentUttered, BotUttered, Event, HandedOff, HandoffReleased, UserUttered
from lingxi.dialogue.stores import ConcurrentUpdate, ConversationBusy
from lingxi.dialogue.tenancy import scoped_key, tenant_scope

from .auth import principal, require, require_agent
from .capabilities import require_conversation_token
from .conversations import _check_cid, conversations_router, service_of
from .errors import ApiError
from .events import set_event_tenant
from .handoff_out import base_store

STREAM_POLL_S = 0.25
STREAM_HEARTBEAT_S = 15.0
STREAM_MAX_S = 300.0  # then the stream ends and the client resumes with Last-Event-ID
MAX_AGENT_TEXT = 4000


class AgentMessageRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    text: str
    agent: str | None = None  # shown to the customer; default: the key's name
    take_over: bool = False  # take the conversation from the bot
    message_id: str | None = None  # the platform's id: a retry with the same id is stored once


class AgentMessageResult(msgspec.Struct):
    conversation_id: str
    seq: int
    duplicate: bool = False
    took_over: bool = False


# ------------------------------------------------------------------ what clients see


def visible(seq: int, e: Event) -> dict[str, Any] | None:
    """One stored event as the widget and the inbox show it; None for bookkeeping events."""
    if isinstance(e, UserUttered):
        return {"seq": seq, "type": "user", "text": e.text, "ts": e.ts}
    if isinstance(e, BotUttered):
        out = {"seq": seq, "type": "bot", "kind": e.kind, "text": e.text, "ts": e.ts}
        if e.buttons:
            out["buttons"] = msgspec.to_builtins(e.buttons)
        if e.article is not None:
            out["article"] = msgspec.to_builtins(e.article)
        if e.articles:
            out["articles"] = msgspec.to_builtins(e.articles)
        return out
    if isinstance(e, AgentUttered):
        return {"seq": seq, "type": "agent", "text": e.text, "agent": e.agent, "ts": e.ts}
    if isinstance(e, HandedOff):
        return {"seq": seq, "type": "handoff", "mode": e.mode, "skill_group": e.skill_group, "priority": e.priority,
                "ts": e.ts}
    if isinstance(e, HandoffReleased):
        return {"seq": seq, "type": "release", "note": e.note, "ts": e.ts}
    return None


class Holding(msgspec.Struct, kw_only=True):
    """Who holds the conversation, as the widget shows it while waiting."""

    held_by: str = "bot"  # bot | human
    since: float | None = None
    agent_joined: bool = False  # an agent wrote since the handoff
    agent_wait_s: float = 120.0  # after this long with no agent, offer to leave a message

    def after(self, events: Sequence[Event]) -> Holding:
        h = msgspec.structs.replace(self)
        for e in events:
            if isinstance(e, HandedOff) and e.mode == "live":
                h.held_by, h.since, h.agent_joined = "human", e.ts, False
            elif isinstance(e, HandoffReleased):
                h.held_by, h.since, h.agent_joined = "bot", None, False
            elif isinstance(e, AgentUttered):
                h.agent_joined = True
        return h


def _frame(data: dict[str, Any], seq: int | None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return head.encode() + b"data: " + msgspec.json.encode(data) + b"\n\n"


# ------------------------------------------------------------------ reading the log


def _read(state: State, tenant: str, cid: str, start: int) -> list[Event] | None:
    with tenant_scope(tenant):
        store = service_of(state).engine.store
        if start == 0 and not store.exists(cid):
            return None
        return store.events(cid, start)


def _check_capability(request: Request, state: State, tenant: str, cid: str) -> None:
    """A site key reads only the conversation it opened (its conversation token), as elsewhere."""
    with tenant_scope(tenant):
        require_conversation_token(request, service_of(state).engine.store, cid)


def _other_tenant_has(state: State, tenant: str, cid: str) -> bool:
    """Whether another tenant has a conversation with this id (403 rather than 404)."""
    base = base_store(service_of(state).engine.store)
    mine = scoped_key(tenant, cid)
    return any(k != mine and (k == cid or k.endswith("/" + cid)) for k in base.keys())  # noqa: SIM118


def _not_found(state: State, tenant: str, cid: str, writing: bool = False) -> ApiError:
    """404; for an agent's write to another tenant's conversation, 403 ``other_tenant`` (reads stay
    404 so a tenant cannot probe another's conversation ids through the widget's routes)."""
    if writing and _other_tenant_has(state, tenant, cid):
        return ApiError(403, "other_tenant", f"conversation {cid!r} belongs to another tenant")
    return ApiError(404, "conversation_not_found", f"no conversation {cid!r}")


def _agent_wait(state: State) -> float:
    return float(getattr(state.settings, "handoff_agent_wait_s", 120.0))


def _start_seq(request: Request, after: int | None) -> int:
    """The first seq to send: after ``Last-Event-ID`` (a reconnecting EventSource) or ``?after=``."""
    last = request.headers.get("last-event-id")
    if last is not None and last.strip():
        try:
            return int(last) + 1
        except ValueError:
            raise ApiError(422, "invalid_field", "`Last-Event-ID` must be an event seq (an integer)") from None
    return 0 if after is None else after + 1


# ------------------------------------------------------------------ agent in


@post("/v1/conversations/{conversation_id:str}/agent-messages", sync_to_thread=True, guards=[require_agent()],
      tags=["agents"], status_code=201)
def post_agent_message(conversation_id: str, data: AgentMessageRequest, state: State,
                       request: Request) -> AgentMessageResult:
    """An agent's message to the customer; the widget shows it live (``…/stream``)."""
    cid = _check_cid(conversation_id)
    caller = principal(request)
    set_event_tenant(request)
    text = data.text.strip()
    if not text or len(text) > MAX_AGENT_TEXT:
        raise ApiError(422, "invalid_field", f"`text` must be 1..{MAX_AGENT_TEXT} characters")
    agent = (data.agent or caller.name).strip()[:64] or "agent"
    if data.message_id is not None and not 1 <= len(data.message_id) <= 128:
        raise ApiError(422, "invalid_field", "`message_id` must be 1..128 characters")
    engine = service_of(state).engine
    store = engine.store
    now = time.time()
    try:
        with store.lock(cid):
            tracker = store.load(cid)
            if tracker is None:
                raise _not_found(state, caller.tenant, cid, writing=True)
            if data.message_id is not None:
                for i, e in enumerate(tracker.tail):
                    if isinstance(e, AgentUttered) and e.message_id == data.message_id:
                        return AgentMessageResult(cid, tracker.base_seq + i, duplicate=True)
            took_over = False
            if tracker.state.handoff is None:
                if not data.take_over:
                    raise ApiError(409, "bot_holds_conversation", f"the bot holds conversation {cid!r}; send "
                                   "`take_over: true` to take it over, or wait for a handoff")
                tracker.append(HandedOff(ts=now, reason="agent_take_over", summary=f"taken over by {agent}"))
                took_over = True
            tracker.append(AgentUttered(ts=now, text=text, agent=agent, message_id=data.message_id))
            seq = tracker.event_count - 1
            store.save(tracker)
    except (ConversationBusy, ConcurrentUpdate) as exc:
        raise ApiError(409, "conversation_busy", f"{exc}; retry the request") from None
    return AgentMessageResult(cid, seq, took_over=took_over)


# ------------------------------------------------------------------ live updates


@get("/v1/conversations/{conversation_id:str}/stream", guards=[require("read")], tags=["agents"])
async def stream_conversation(conversation_id: str, state: State, request: Request,
                              after: int | None = Parameter(default=None, ge=-1)) -> Stream:
    """Server-Sent Events of the conversation's visible events (``id`` = the event's seq)."""
    cid = _check_cid(conversation_id)
    tenant = principal(request).tenant
    await anyio.to_thread.run_sync(_check_capability, request, state, tenant, cid)
    start = _start_seq(request, after)
    everything = await anyio.to_thread.run_sync(_read, state, tenant, cid, 0)
    if everything is None:
        raise await anyio.to_thread.run_sync(_not_found, state, tenant, cid)
    holding = Holding(agent_wait_s=_agent_wait(state)).after(everything)

    async def frames() -> AsyncIterator[bytes]:
        nonlocal holding
        yield b"retry: 1000\n\n" + _frame({"type": "state", **msgspec.to_builtins(holding)}, None)
        pending = everything[start:] if start < len(everything) else []
        cursor = max(start, len(everything))
        opened = last_sent = time.monotonic()
        while True:
            for i, e in enumerate(pending):
                seq = cursor - len(pending) + i
                item = visible(seq, e)
                if item is not None:
                    yield _frame(item, seq)
                    last_sent = time.monotonic()
            if pending:
                changed = holding.after(pending)
                if changed != holding:
                    holding = changed
                    yield _frame({"type": "state", **msgspec.to_builtins(holding)}, None)
            now = time.monotonic()
            if now - opened > STREAM_MAX_S:
                return
            if now - last_sent > STREAM_HEARTBEAT_S:
                yield b": keep-alive\n\n"
                last_sent = now
            await anyio.sleep(STREAM_POLL_S)
            pending = await anyio.to_thread.run_sync(_read, state, tenant, cid, cursor) or []
            cursor += len(pending)

    return Stream(frames(), media_type="text/event-stream",
                  headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@get("/v1/conversations/{conversation_id:str}/events", guards=[require("read")], tags=["agents"])
async def poll_conversation(conversation_id: str, state: State, request: Request,
                            after: int = Parameter(default=-1, ge=-1),
                            wait: float = Parameter(default=25.0, ge=0, le=30)) -> dict[str, Any]:
    """Long polling: the visible events after ``after``, waiting up to ``wait`` seconds for one."""
    cid = _check_cid(conversation_id)
    tenant = principal(request).tenant
    await anyio.to_thread.run_sync(_check_capability, request, state, tenant, cid)
    everything = await anyio.to_thread.run_sync(_read, state, tenant, cid, 0)
    if everything is None:
        raise await anyio.to_thread.run_sync(_not_found, state, tenant, cid)
    count = len(everything)
    deadline = time.monotonic() + wait
    while count <= after + 1 and time.monotonic() < deadline:
        await anyio.sleep(STREAM_POLL_S)
        more = await anyio.to_thread.run_sync(_read, state, tenant, cid, count) or []
        everything.extend(more)
        count = len(everything)
    start = after + 1
    items = [v for i, e in enumerate(everything[start:]) if (v := visible(start + i, e)) is not None]
    holding = Holding(agent_wait_s=_agent_wait(state)).after(everything)
    return {"events": items, "last_seq": count - 1, "state": msgspec.to_builtins(holding)}


# ------------------------------------------------------------------ the agent inbox


def _summary(cid: str, events: Sequence[Event], now: float) -> dict[str, Any] | None:
    holding = Holding().after(events)
    if holding.held_by != "human":
        return None
    handed = next(e for e in reversed(events) if isinstance(e, HandedOff) and e.mode == "live")
    last_user = next((e for e in reversed(events) if isinstance(e, UserUttered)), None)
    return {"conversation_id": cid, "since": handed.ts, "waiting_s": round(now - handed.ts, 1),
            "priority": handed.priority, "skill_group": handed.skill_group, "reason": handed.reason,
            "summary": handed.summary, "agent_joined": holding.agent_joined,
            "last_user_text": last_user.text if last_user else None, "last_at": events[-1].ts}


_PRIORITY_ORDER = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


@get("/v1/inbox", sync_to_thread=True, guards=[require_agent()], tags=["agents"])
def inbox(state: State, request: Request) -> dict[str, Any]:
    """The caller's tenant's conversations a human holds: unanswered first, then by priority and wait."""
    tenant = principal(request).tenant
    now = time.time()
    items = []
    with tenant_scope(tenant):
        store = service_of(state).engine.store
        for cid in store.keys():  # noqa: SIM118 - a store, not a dict
            tracker = store.load(cid)
            if tracker is None or tracker.state.handoff is None or tracker.state.handoff.mode != "live":
                continue
            item = _summary(cid, store.events(cid), now)
            if item is not None:
                items.append(item)
    items.sort(key=lambda i: (i["agent_joined"], _PRIORITY_ORDER.get(i["priority"], 9), i["since"]))
    return {"items": items, "total": len(items)}


@get("/v1/inbox/{conversation_id:str}", sync_to_thread=True, guards=[require_agent()], tags=["agents"])
def inbox_conversation(conversation_id: str, state: State, request: Request) -> dict[str, Any]:
    """One conversation for the agent: its transcript, slots, detected intents and who holds it."""
    cid = _check_cid(conversation_id)
    tenant = principal(request).tenant
    with tenant_scope(tenant):
        store = service_of(state).engine.store
        tracker = store.load(cid)
        if tracker is None:
            raise _not_found(state, tenant, cid)
        events = store.events(cid)
    s = tracker.state
    intents: dict[str, float] = {}
    for name, conf in s.recent_intents:
        intents[name] = max(conf, intents.get(name, 0.0))
    return {"conversation_id": cid, "events": [v for i, e in enumerate(events) if (v := visible(i, e))],
            "last_seq": len(events) - 1, "slots": dict(s.slots), "intents": intents,
            "visitor": {"id": s.visitor_id, "channel": s.channel, "tags": list(s.tags)},
            "holding": msgspec.to_builtins(Holding(agent_wait_s=_agent_wait(state)).after(events)),
            "handoff": _summary(cid, events, time.time())}


agents_router = Router(path="/", route_handlers=[post_agent_message, stream_conversation, inbox, inbox_conversation])
# GET …/events shares its path with POST …/events (behaviour events): litestar wants both in one router
conversations_router.register(poll_conversation)
