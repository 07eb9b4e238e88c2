"""Handoff out: the outbox's rows delivered as signed webhooks to the tenant's agent platform.

The tracker store stages a row for every handoff, every customer message while a human holds the
conversation, and every release, in the same transaction as the events
(:mod:`lingxi.dialogue.outbox`). A background deliverer started in the app's lifespan claims due
rows and POSTs them; the customer's turn never waits for it.

Every POST carries::

    X-Lingxi-Event-Id:  evt_…   (stable per announced event: receivers deduplicate on it)
    X-Lingxi-Timestamp: <unix seconds>  (also ``sent_at`` in the body, so it is signed)
    X-Lingxi-Signature: sha256=<hex HMAC-SHA256 of the raw body with the tenant's secret>

A receiver verifies the signature over the raw bytes, rejects a timestamp outside its replay
window (5 minutes is usual), and ignores event ids it has seen. A non-2xx answer or a network
error is retried with exponential back-off (with jitter) up to ``handoff_max_attempts``; then the
row is ``failed``, listed by ``GET /v1/handoff/deliveries?status=failed`` and sent again by
``POST /v1/handoff/deliveries/{id}/replay``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Router, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from lingxi.dialogue.events import AgentUttered, HandedOff, HandoffReleased, UserUttered
from lingxi.dialogue.handoff import build_payload
from lingxi.dialogue.outbox import STATUSES, MemoryOutbox, Outbox, OutboxItem, SQLOutbox
from lingxi.dialogue.state import replay
from lingxi.dialogue.tenancy import tenant_scope

from .auth import principal, require
from .errors import ApiError
from .settings import HandoffWebhook

log = logging.getLogger("lingxi.serving.handoff")

SIGNATURE_HEADER = "X-Lingxi-Signature"
TIMESTAMP_HEADER = "X-Lingxi-Timestamp"
EVENT_ID_HEADER = "X-Lingxi-Event-Id"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str, timestamp: str, window_s: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does (documented, and used by the tests): signature, then replay window."""
    if not hmac.compare_digest(sign(secret, body), signature or ""):
        return False
    try:
        sent = float(timestamp)
        inside = msgspec.json.decode(body).get("sent_at") == int(sent)
    except (ValueError, msgspec.DecodeError, AttributeError):
        return False
    return inside and abs((time.time() if now is None else now) - sent) <= window_s


def backoff(attempts: int, base_s: float, max_s: float) -> float:
    """Seconds before retry ``attempts`` (1 = the first retry): base·2^(n-1), capped, 50–100 % jitter."""
    return min(max_s, base_s * 2 ** max(attempts - 1, 0)) * (0.5 + random.random() / 2)  # noqa: S311


def base_store(store: Any) -> Any:
    """The real tracker store under the serving wrappers (event tap, tenant scope)."""
    for _ in range(8):
        inner = vars(store).get("_inner") or vars(store).get("inner")
        if inner is None:
            return store
        store = inner
    return store


# ------------------------------------------------------------------ what is sent


def announcement(engine: Any, item: OutboxItem) -> dict[str, Any]:
    """The body's ``data`` for a row, rebuilt from the stored log (deterministic for a given row)."""
    with tenant_scope(item.tenant):
        events = engine.store.events(item.conversation_id, 0)
    if len(events) <= item.seq:
        raise LookupError(f"event {item.seq} of {item.conversation_id!r} is not stored")
    upto = events[: item.seq + 1]
    ev = upto[-1]
    if isinstance(ev, HandedOff):
        state = replay(item.conversation_id, upto)
        payload = build_payload(reason=ev.reason, mode=ev.mode, skill_group=ev.skill_group, priority=ev.priority,
                                summary=ev.summary, routing=ev.routing, state=state, events=upto,
                                turns=engine.spec.handoff.transcript_turns, is_open=ev.mode == "live")
        return {"handoff": msgspec.to_builtins(payload), "ts": ev.ts}
    if isinstance(ev, UserUttered):
        return {"message": {"role": "user", "text": ev.text, "ts": ev.ts}}
    if isinstance(ev, HandoffReleased):
        return {"release": {"by": ev.by, "note": ev.note, "ts": ev.ts}}
    if isinstance(ev, AgentUttered):
        return {"message": {"role": "agent", "text": ev.text, "agent": ev.agent, "ts": ev.ts}}
    raise LookupError(f"event {item.seq} of {item.conversation_id!r} is not announced")


def encode_body(item: OutboxItem, data: dict[str, Any], sent_at: int) -> bytes:
    return msgspec.json.encode({"event_id": item.event_id, "event": item.kind, "tenant": item.tenant,
                                "conversation_id": item.conversation_id, "seq": item.seq, "sent_at": sent_at,
                                "attempt": item.attempts + 1, "data": data})


# ------------------------------------------------------------------ the deliverer


class WebhookDeliverer:
    """Claims due rows and POSTs them, ``concurrency`` at a time; database calls run in threads."""

    def __init__(self, outbox: Outbox, hooks: dict[str, HandoffWebhook], data_of: Callable[[OutboxItem], dict],
                 *, base_s: float = 2.0, max_s: float = 600.0, max_attempts: int = 20, poll_s: float = 0.5,
                 concurrency: int = 8) -> None:
        self.outbox = outbox
        self.hooks = hooks
        self.data_of = data_of
        self.base_s, self.max_s, self.max_attempts = base_s, max_s, max_attempts
        self.poll_s = poll_s
        self.concurrency = concurrency
        self.lease_s = max((h.timeout_s for h in hooks.values()), default=5.0) * 2 + 5

    async def run(self) -> None:
        import anyio
        import httpx

        limiter = anyio.CapacityLimiter(self.concurrency)
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    items = await anyio.to_thread.run_sync(self.outbox.claim, self.concurrency * 4, self.lease_s)
                except Exception:  # noqa: BLE001 - the store is down: try again later
                    log.exception("could not read the handoff outbox")
                    items = []
                if not items:
                    await anyio.sleep(self.poll_s)
                    continue
                async with anyio.create_task_group() as tg:
                    for item in items:
                        tg.start_soon(self._limited, client, item, limiter)

    async def _limited(self, client: Any, item: OutboxItem, limiter: Any) -> None:
        async with limiter:
            await self.deliver(client, item)

    async def deliver(self, client: Any, item: OutboxItem) -> bool:
        import anyio
        import httpx

        hook = self.hooks.get(item.tenant)
        ok, error, status = False, None, None
        if hook is None:
            error = f"no handoff webhook is configured for tenant {item.tenant!r}"
        else:
            try:
                data = await anyio.to_thread.run_sync(self.data_of, item)
                sent_at = int(time.time())
                body = encode_body(item, data, sent_at)
                resp = await client.post(hook.url, content=body, timeout=hook.timeout_s, headers={
                    "Content-Type": "application/json", EVENT_ID_HEADER: item.event_id,
                    TIMESTAMP_HEADER: str(sent_at), SIGNATURE_HEADER: sign(hook.secret, body),
                    "User-Agent": "lingxi-handoff/1"})
                status = resp.status_code
                ok = 200 <= status < 300
                if not ok:
                    error = f"HTTP {status}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            except Exception as exc:  # noqa: BLE001 - a broken row must not stop the others
                error = f"{type(exc).__name__}: {exc}"[:500]
                log.exception("could not build the handoff announcement %s", item.event_id)
        attempts = item.attempts + 1
        retry_at = None if ok or attempts >= self.max_attempts else time.time() + backoff(attempts, self.base_s,
                                                                                           self.max_s)
        try:
            await anyio.to_thread.run_sync(lambda: self.outbox.settle(item.event_id, ok=ok, error=error,
                                                                      status=status, retry_at=retry_at))
        except Exception:  # noqa: BLE001 - the lease expires and the row is tried again
            log.exception("could not settle the handoff delivery %s", item.event_id)
        if not ok:
            log.warning("handoff delivery %s (%s) failed, attempt %d: %s", item.event_id, item.kind, attempts, error)
        return ok


# ------------------------------------------------------------------ wiring


def attach_outbox(store: Any, hooks: dict[str, HandoffWebhook]) -> Outbox | None:
    """Give the tracker store an outbox in its own database (None: the store cannot hold one)."""
    from lingxi.dialogue.stores import MemoryTrackerStore, SQLTrackerStore

    base = base_store(store)
    if isinstance(base.outbox, Outbox):
        return base.outbox
    accepts = hooks.__contains__
    if isinstance(base, SQLTrackerStore):
        prefix = base.conversations.name.removesuffix("_conversations")
        base.outbox = SQLOutbox(base.engine, prefix, accepts)
    elif isinstance(base, MemoryTrackerStore):
        base.outbox = MemoryOutbox(accepts)
    else:
        if hooks:
            log.warning("handoff webhooks need a SQL or memory conversation store (dialogue_store); %s cannot "
                        "stage announcements in the same write, so none are sent", type(base).__name__)
        return None
    return base.outbox


@asynccontextmanager
async def handoff_lifespan(app: Litestar) -> AsyncIterator[None]:
    """After ``dialogue_lifespan``: the outbox on the conversation store and, when any tenant has a
    webhook, the deliverer in the background."""
    import anyio

    svc = getattr(app.state, "dialogue", None)
    settings = app.state.settings
    hooks = {h.tenant: h for h in getattr(settings, "handoff_webhooks", [])}
    outbox = attach_outbox(svc.engine.store, hooks) if svc is not None else None
    app.state.handoff_outbox = outbox
    if outbox is None or not hooks:
        yield
        return
    deliverer = WebhookDeliverer(outbox, hooks, lambda item: announcement(svc.engine, item),
                                 base_s=settings.handoff_retry_base_s, max_s=settings.handoff_retry_max_s,
                                 max_attempts=settings.handoff_max_attempts, poll_s=settings.handoff_poll_s)
    async with anyio.create_task_group() as tg:
        tg.start_soon(deliverer.run)
        yield
        tg.cancel_scope.cancel()


# ------------------------------------------------------------------ the deliveries API


class DeliveryList(msgspec.Struct):
    items: list[OutboxItem]


def _outbox(state: State) -> Outbox:
    outbox = getattr(state, "handoff_outbox", None)
    if outbox is None:
        raise ApiError(503, "outbox_unavailable", "handoff deliveries need a SQL or memory conversation store")
    return outbox


def _scope(request: Request, tenant: str | None) -> str | None:
    """Operator-tenant keys see every tenant (or the one asked for); others only their own."""
    caller = principal(request)
    operator = getattr(request.app.state.settings, "operator_tenant", "default")
    if caller.tenant == operator:
        return tenant
    if tenant is not None and tenant != caller.tenant:
        raise ApiError(403, "forbidden", "this key may only see its own tenant's deliveries")
    return caller.tenant


@get("/v1/handoff/deliveries", sync_to_thread=True, guards=[require("editor")], tags=["handoff"])
def list_deliveries(state: State, request: Request,
                    status: str | None = Parameter(default=None, description="pending | delivered | failed"),
                    tenant: str | None = Parameter(default=None),
                    limit: int = Parameter(default=100, ge=1, le=1000)) -> DeliveryList:
    """Handoff webhook deliveries, oldest first; ``status=failed`` lists those that gave up."""
    if status is not None and status not in STATUSES:
        raise ApiError(422, "invalid_field", f"`status` must be one of {list(STATUSES)}")
    return DeliveryList(_outbox(state).list(_scope(request, tenant), status, limit))


@post("/v1/handoff/deliveries/{event_id:str}/replay", sync_to_thread=True, guards=[require("editor")],
      tags=["handoff"], status_code=200)
def replay_delivery(event_id: str, state: State, request: Request) -> OutboxItem:
    """Send a delivery again (receivers deduplicate by event id, so a replay is always safe)."""
    outbox = _outbox(state)
    item = outbox.get(event_id)
    caller = principal(request)
    operator = getattr(request.app.state.settings, "operator_tenant", "default")
    if item is None or (caller.tenant != operator and item.tenant != caller.tenant):
        raise ApiError(404, "delivery_not_found", f"no delivery {event_id!r}")
    replayed = outbox.replay(event_id)
    if replayed is None:
        raise ApiError(404, "delivery_not_found", f"no delivery {event_id!r}")
    return replayed


handoff_router = Router(path="/", route_handlers=[list_deliveries, replay_delivery])
