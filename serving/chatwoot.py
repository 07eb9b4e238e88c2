"""Chatwoot as the agents' platform, by configuration: Lingxi acts as a Chatwoot *agent bot*.

Configure an agent bot in Chatwoot whose outgoing URL is
``https://<lingxi>/webhooks/chatwoot/<tenant>?token=<webhook_token>`` and list the account under
``chatwoot`` in the settings (``base_url``, ``account_id``, ``api_access_token`` of the bot,
``webhook_token``). Then, following Chatwoot's documented API:

* ``message_created`` with ``message_type: incoming`` (the customer wrote) → one Lingxi turn; each
  bot message goes back through ``POST /api/v1/accounts/{account}/conversations/{id}/messages``
  (``{"content", "message_type": "outgoing"}``, header ``api_access_token``);
* a live handoff → a private note with the handoff summary, then
  ``POST …/conversations/{id}/toggle_status`` with ``{"status": "open"}`` so the human agents'
  inbox gets the conversation (agent-bot conversations wait in ``pending``);
* ``message_created`` with ``message_type: outgoing`` from a human (``sender.type: user``) → an
  ``agent`` event in Lingxi's log, so the transcript stays whole;
* ``conversation_status_changed`` to ``resolved`` or ``pending`` → the conversation goes back to the bot.

Chatwoot's agent-bot webhooks are not signed in its stable releases, so the URL carries a secret
token, compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

import httpx
from litestar import Request, Router, post
from litestar.datastructures import State
from litestar.params import Parameter

from lingxi.dialogue.engine import MessageIn
from lingxi.dialogue.events import AgentUttered, HandedOff
from lingxi.dialogue.tenancy import tenant_scope

from .conversations import service_of
from .errors import ApiError
from .events import _tenant as event_tenant
from .settings import ChatwootAccount

log = logging.getLogger("lingxi.serving.chatwoot")


class ChatwootClient:
    """The two calls an agent bot makes, with the documented paths and header."""

    def __init__(self, account: ChatwootAccount, transport: httpx.BaseTransport | None = None) -> None:
        self.account = account
        self.http = httpx.Client(base_url=account.base_url.rstrip("/"), timeout=account.timeout_s,
                                 headers={"api_access_token": account.api_access_token}, transport=transport)

    def _conv(self, conversation_id: int) -> str:
        return f"/api/v1/accounts/{self.account.account_id}/conversations/{conversation_id}"

    def send(self, conversation_id: int, content: str, private: bool = False) -> None:
        r = self.http.post(f"{self._conv(conversation_id)}/messages",
                           json={"content": content, "message_type": "outgoing", "private": private})
        r.raise_for_status()

    def open(self, conversation_id: int) -> None:
        r = self.http.post(f"{self._conv(conversation_id)}/toggle_status", json={"status": "open"})
        r.raise_for_status()


def _account(state: State, tenant: str, token: str) -> ChatwootAccount:
    for account in getattr(state.settings, "chatwoot", []):
        if account.tenant == tenant and hmac.compare_digest(account.webhook_token.encode(), token.encode()):
            return account
    raise ApiError(401, "unauthorized", "unknown Chatwoot tenant or wrong webhook token")


def _client(state: State, account: ChatwootAccount) -> ChatwootClient:
    clients = getattr(state, "chatwoot_clients", None)
    if clients is None:
        clients = state.chatwoot_clients = {}
    if account.tenant not in clients:
        clients[account.tenant] = ChatwootClient(account, getattr(state, "chatwoot_transport", None))
    return clients[account.tenant]


def _ids(body: dict[str, Any]) -> tuple[int, int]:
    conv = body.get("conversation") or {}
    account = body.get("account") or {}
    cid, aid = conv.get("id"), account.get("id")
    if not isinstance(cid, int) or not isinstance(aid, int):
        raise ApiError(422, "invalid_field", "a Chatwoot event needs `conversation.id` and `account.id` (integers)")
    return aid, cid


@post("/webhooks/chatwoot/{tenant:str}", sync_to_thread=True, tags=["chatwoot"], status_code=200,
      include_in_schema=False)
def chatwoot_webhook(tenant: str, data: dict[str, Any], state: State, request: Request,
                     token: str = Parameter(default="")) -> dict[str, Any]:
    """A Chatwoot agent-bot event (see the module docs)."""
    account = _account(state, tenant, token)
    event = data.get("event")
    aid, conv = _ids(data)
    if aid != account.account_id:
        raise ApiError(403, "forbidden", "this webhook token belongs to another Chatwoot account")
    cid = f"chatwoot-{aid}-{conv}"
    engine = service_of(state).engine
    client = _client(state, account)
    event_tenant.set(account.tenant)  # the turn's learning events belong to this tenant
    with tenant_scope(account.tenant):
        if event == "message_created":
            content = (data.get("content") or "").strip()
            if data.get("private") or not content:
                return {"handled": False}
            sender = data.get("sender") or {}
            if data.get("message_type") == "incoming":
                result = engine.handle_message(cid, MessageIn(text=content[:2000], channel="chatwoot",
                                                              message_id=str(data.get("id") or "") or None))
                for m in result.messages:
                    if m.text:
                        client.send(conv, m.text)
                if result.handoff is not None and result.handoff.mode == "live":
                    if result.handoff.summary:
                        client.send(conv, f"[Lingxi] {result.handoff.skill_group}/{result.handoff.priority}: "
                                          f"{result.handoff.summary}", private=True)
                    client.open(conv)
                return {"handled": True, "decision": result.decision}
            if data.get("message_type") == "outgoing" and sender.get("type") == "user":
                _record_agent(engine, cid, content, str(sender.get("name") or "agent"), str(data.get("id") or ""))
                return {"handled": True, "decision": "agent"}
            return {"handled": False}
        if event == "conversation_status_changed" and data.get("status") in ("resolved", "pending") \
                and engine.store.exists(cid):
            result = engine.release(cid, "chatwoot", f"status {data.get('status')}")
            return {"handled": True, "decision": result.decision}
    return {"handled": False}


def _record_agent(engine: Any, cid: str, text: str, agent: str, message_id: str) -> None:
    store = engine.store
    with store.lock(cid):
        tracker = store.load(cid)
        if tracker is None:
            return
        if any(isinstance(e, AgentUttered) and e.message_id == message_id for e in tracker.tail):
            return
        now = time.time()
        if tracker.state.handoff is None:  # an agent answered in Chatwoot: the human holds it now
            tracker.append(HandedOff(ts=now, reason="agent_take_over", summary=f"taken over by {agent} in Chatwoot"))
        tracker.append(AgentUttered(ts=now, text=text[:4000], agent=agent[:64], message_id=message_id or None))
        store.save(tracker)


chatwoot_router = Router(path="/", route_handlers=[chatwoot_webhook])

