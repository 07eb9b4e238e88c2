"""Handoff out: the outbox written with the handoff events, delivered as signed webhooks to a real
local HTTP receiver that fails a third of its requests and is restarted twice."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import anyio
import pytest
from handoff_support import Receiver
from litestar.testing import TestClient

from lingxi.dialogue import demo_backend
from lingxi.dialogue.actions import ActionClient
from lingxi.dialogue.events import BotUttered, HandedOff, SessionStarted, TurnDecided, UserUttered
from lingxi.dialogue.outbox import SQLOutbox, event_id
from lingxi.dialogue.stores import SQLTrackerStore
from lingxi.dialogue.tenancy import TenantScopedStore, tenant_scope
from lingxi.dialogue.tracker import Tracker
from lingxi.serving.conversations import app_with_dialogue, build_dialogue_service
from lingxi.serving.handoff_out import WebhookDeliverer, announcement, sign, verify
from lingxi.serving.settings import HandoffWebhook, Settings

SECRETS = {"default": "s3cret-default-0123456789", "shop2": "s3cret-shop2-abcdefghijkl"}
MORNING = "2026-11-24T10:00:00+08:00"


def _hand_off(store, cid: str, n: int) -> None:
    """One saved turn that hands off (as the policy writes it), then one customer message while waiting."""
    t = Tracker(cid)
    now = time.time()
    t.extend([SessionStarted(ts=now, channel="web"), UserUttered(ts=now, text=f"订单{n}的快递丢了，转人工"),
              BotUttered(ts=now, text="正在为您转接人工客服，请稍候。", kind="handoff"),
              HandedOff(ts=now, reason="explicit_request", summary=f"快递丢失 {n}", skill_group="logistics"),
              TurnDecided(ts=now, decision="handoff")])
    store.save(t)
    t.extend([UserUttered(ts=now + 1, text=f"人呢？{n}"), TurnDecided(ts=now + 1, decision="silent")])
    store.save(t)


def _run_deliverer(deliverer: WebhookDeliverer, stop: threading.Event) -> threading.Thread:
    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(deliverer.run)
            while not stop.is_set():
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()

    thread = threading.Thread(target=anyio.run, args=(main,), daemon=True)
    thread.start()
    return thread


def test_signature_and_replay_window():
    body = b'{"event_id":"evt_1","sent_at":1000}'
    assert verify("k" * 16, body, sign("k" * 16, body), "1000", now=1100)
    assert not verify("k" * 16, body, sign("x" * 16, body), "1000", now=1100)  # wrong secret
    assert not verify("k" * 16, body + b" ", sign("k" * 16, body), "1000", now=1100)  # body changed
    assert not verify("k" * 16, body, sign("k" * 16, body), "1000", now=2000)  # outside the window
    assert not verify("k" * 16, body, sign("k" * 16, body), "1001", now=1100)  # header not the signed time


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dialogue.db'}"
    return request.getfixturevalue("pg_schema_url")  # skips when LINGXI_TEST_POSTGRES_URL is unset


def test_1000_handoffs_reach_a_flaky_restarting_receiver_exactly_once(store_url, demo_spec):
    store = SQLTrackerStore(store_url)
    outbox = SQLOutbox(store.engine, accepts=SECRETS.__contains__)  # the outbox table beside the tracker's
    store.outbox = outbox
    scoped = TenantScopedStore(store)
    cids = {}
    for n in range(1000):
        tenant = "default" if n % 2 else "shop2"
        with tenant_scope(tenant):
            cid = f"conv-{n}"
            _hand_off(scoped, cid, n)
            cids[n] = (tenant, cid)
    with tenant_scope("other"):  # a tenant without a platform gets no rows
        _hand_off(scoped, "conv-x", -1)
    key = {n: (cid if t == "default" else f"{t}/{cid}") for n, (t, cid) in cids.items()}
    handoffs = {event_id(key[n], 3) for n in cids}
    messages = {event_id(key[n], 5) for n in cids}
    assert len(outbox.list(None, "pending", limit=5000)) == 2000

    receiver = Receiver(SECRETS, fail_every=3).start()
    hooks = {t: HandoffWebhook(url=receiver.url, secret=s, tenant=t, timeout_s=5) for t, s in SECRETS.items()}
    engine = SimpleNamespace(store=scoped, spec=demo_spec)
    deliverer = WebhookDeliverer(outbox, hooks, lambda item: announcement(engine, item), base_s=0.02, max_s=0.3,
                                 max_attempts=100, poll_s=0.02, concurrency=8)
    stop = threading.Event()
    thread = _run_deliverer(deliverer, stop)
    try:
        restarts = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            done = len(receiver.first)
            if restarts < 2 and done >= (600 if restarts == 0 else 1300):
                receiver.stop()  # the platform goes away for a moment, then comes back on the same port
                time.sleep(0.5)
                receiver.start()
                restarts += 1
            if done >= 2000 and not outbox.list(None, "pending", limit=1):
                break
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
        receiver.stop()
    print(f"\n{len(receiver.first)} announcements (1,000 handoffs + 1,000 messages) delivered; {receiver.requests} "
          f"requests, {receiver.failed} answered 503, receiver restarted {restarts}×")
    assert restarts == 2
    assert receiver.failed >= 600  # a third of the ~2,900 requests failed
    assert receiver.bad_signatures == 0
    assert set(receiver.first) == handoffs | messages  # none lost, none invented
    assert max(receiver.accepted.values()) == 1  # each accepted exactly once
    assert not outbox.list(None, "failed") and not outbox.list(None, "pending")
    assert len(outbox.list(None, "delivered", limit=5000)) == 2000
    position = {eid: i for i, eid in enumerate(receiver.order)}
    for n in cids:  # a conversation's announcements arrive in order: the handoff before the message
        assert position[event_id(key[n], 3)] < position[event_id(key[n], 5)]
    sample = receiver.first[event_id(key[7], 3)]
    assert sample["event"] == "handoff" and sample["tenant"] == "default" and sample["conversation_id"] == "conv-7"
    h = sample["data"]["handoff"]
    assert h["summary"] == "快递丢失 7" and h["skill_group"] == "logistics"
    assert h["transcript"][0]["text"] == "订单7的快递丢了，转人工"
    assert receiver.first[event_id(key[7], 5)]["data"]["message"]["text"] == "人呢？7"
    store.close()


# ------------------------------------------------------------------ through the HTTP API


@pytest.fixture(scope="module")
def holder(trained_demo, demo_encoder, lingxi_home, demo_arbitration):
    from lingxi.serving.loading import ModelHolder

    h = ModelHolder(lingxi_home / "models", "demo-shop")
    h._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder
    assert h.load_latest() is not None
    return h


def _app(holder, demo_spec, tmp_path, receiver_url, **extra):
    settings = Settings(home=str(tmp_path), handoff_webhooks=[HandoffWebhook(url=receiver_url,
                                                                             secret=SECRETS["default"])],
                        handoff_poll_s=0.05, handoff_retry_base_s=0.05, handoff_retry_max_s=0.2, **extra)
    app = app_with_dialogue(settings, holder)
    store = SQLTrackerStore(f"sqlite:///{tmp_path / 'dialogue.db'}")
    app.state.dialogue = build_dialogue_service(
        settings, holder, kbs=lambda: getattr(app.state, "kbs", None), spec=demo_spec, store=store,
        actions=ActionClient("http://shop.test", transport=demo_backend.transport()))
    return app


def hand_off(c, cid: str) -> dict:
    """Ask for a human until the bot hands off (it first offers self-service once)."""
    for _ in range(3):
        r = c.post(f"/v1/conversations/{cid}/messages", json={"text": "转人工", "timestamp": MORNING})
        assert r.status_code == 200, r.text
        if r.json()["handoff"] is not None:
            return r.json()
    raise AssertionError("no handoff after three requests for a human")


def _wait(predicate, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_handoff_through_the_message_api_is_announced_with_its_context(holder, demo_spec, tmp_path):
    receiver = Receiver(SECRETS, fail_every=2).start()  # every other request fails: retried
    try:
        with TestClient(_app(holder, demo_spec, tmp_path, receiver.url)) as c:
            started = time.monotonic()
            body = hand_off(c, "api-h1")
            assert body["handoff"]["mode"] == "live", body
            assert time.monotonic() - started < 10  # the turn did not wait for the receiver
            r = c.post("/v1/conversations/api-h1/messages", json={"text": "人呢？", "timestamp": MORNING})
            assert r.json()["silent"] is True and r.json()["messages"] == []
            assert _wait(lambda: len(receiver.first) >= 2)
            kinds = [receiver.first[e]["event"] for e in receiver.order]
            assert kinds == ["handoff", "message"]
            h = receiver.first[receiver.order[0]]["data"]["handoff"]
            assert [t["text"] for t in h["transcript"] if t["role"] == "user"] == ["转人工", "转人工"]
            assert receiver.first[receiver.order[1]]["data"]["message"]["text"] == "人呢？"
            r = c.get("/v1/handoff/deliveries", params={"status": "delivered"})
            assert r.status_code == 200 and len(r.json()["items"]) == 2
            assert all(i["attempts"] >= 1 for i in r.json()["items"])
    finally:
        receiver.stop()


def test_failed_deliveries_are_listed_and_replayed(holder, demo_spec, tmp_path):
    receiver = Receiver(SECRETS, fail_every=1).start()  # the platform answers 503 to everything
    try:
        with TestClient(_app(holder, demo_spec, tmp_path, receiver.url, handoff_max_attempts=3)) as c:
            hand_off(c, "api-h2")
            assert _wait(lambda: len(c.get("/v1/handoff/deliveries", params={"status": "failed"}).json()["items"]))
            failed = c.get("/v1/handoff/deliveries", params={"status": "failed"}).json()["items"]
            assert len(failed) == 1 and failed[0]["attempts"] == 3 and "503" in failed[0]["last_error"]
            assert c.get("/v1/handoff/deliveries", params={"status": "bogus"}).status_code == 422
            assert c.post("/v1/handoff/deliveries/evt_nope/replay").status_code == 404
            receiver.fail_every = 0  # the platform is back
            r = c.post(f"/v1/handoff/deliveries/{failed[0]['event_id']}/replay")
            assert r.status_code == 200 and r.json()["status"] == "pending"
            assert _wait(lambda: failed[0]["event_id"] in receiver.first)
            assert receiver.first[failed[0]["event_id"]]["event"] == "handoff"
            assert _wait(lambda: c.get("/v1/handoff/deliveries", params={"status": "delivered"}).json()["items"])
    finally:
        receiver.stop()


# ------------------------------------------------------------------ Chatwoot as the platform


class ChatwootFake:
    """A local HTTP server that checks the requests an agent bot makes against Chatwoot's documented
    API: the path, the ``api_access_token`` header and the JSON body shapes."""

    TOKEN = "cw-bot-token"

    def __init__(self) -> None:
        import http.server

        from handoff_support import free_port

        self.calls: list[tuple[str, dict]] = []
        self.problems: list[str] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def do_POST(self):  # noqa: N802
                import json

                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                if self.headers.get("api_access_token") != fake.TOKEN:
                    fake.problems.append(f"{self.path}: no api_access_token")
                if self.path.endswith("/messages"):
                    if not (isinstance(body.get("content"), str) and body.get("message_type") == "outgoing"
                            and isinstance(body.get("private"), bool)):
                        fake.problems.append(f"{self.path}: bad message body {body}")
                elif self.path.endswith("/toggle_status"):
                    if body.get("status") not in ("open", "resolved", "pending", "snoozed"):
                        fake.problems.append(f"{self.path}: bad status body {body}")
                else:
                    fake.problems.append(f"unknown path {self.path}")
                fake.calls.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _incoming(text: str, message_id: int) -> dict:
    """A ``message_created`` payload as Chatwoot documents it (the fields the adapter reads, and more)."""
    return {"event": "message_created", "id": message_id, "content": text, "created_at": "2026-11-24 02:00:00 UTC",
            "message_type": "incoming", "content_type": "text", "content_attributes": {}, "source_id": None,
            "private": False, "sender": {"id": 89, "name": "Jane", "type": "contact"},
            "inbox": {"id": 3, "name": "web"}, "account": {"id": 1, "name": "shop"},
            "conversation": {"id": 567, "status": "pending", "inbox_id": 3, "channel": "Channel::WebWidget"}}


def test_chatwoot_agent_bot_by_configuration(holder, demo_spec, tmp_path):
    from lingxi.serving.settings import ChatwootAccount

    fake = ChatwootFake()
    try:
        account = ChatwootAccount(base_url=f"http://127.0.0.1:{fake.port}", account_id=1,
                                  api_access_token=fake.TOKEN, webhook_token="cw-webhook-token-0123456789")
        app = _app(holder, demo_spec, tmp_path, "http://127.0.0.1:9/unused", chatwoot=[account])
        with TestClient(app) as c:
            url = "/webhooks/chatwoot/default"
            assert c.post(url, params={"token": "wrong-token-0123456789"}, json=_incoming("你好", 1)).status_code == 401
            with freeze_morning(app):
                r = c.post(url, params={"token": account.webhook_token}, json=_incoming("运费怎么算", 2))
                assert r.status_code == 200 and r.json()["handled"] is True
                assert fake.calls and fake.calls[-1][0] == "/api/v1/accounts/1/conversations/567/messages"
                decision = None
                for n in range(3):  # self-service first, then the handoff
                    decision = c.post(url, params={"token": account.webhook_token},
                                      json=_incoming("转人工", 3 + n)).json()["decision"]
                    if decision == "handoff":
                        break
            assert decision == "handoff"
            assert fake.calls[-1] == ("/api/v1/accounts/1/conversations/567/toggle_status", {"status": "open"})
            assert any(body.get("private") for _, body in fake.calls)  # the summary as a private note
            agent_reply = {**_incoming("您好，我是客服", 9), "message_type": "outgoing",
                           "sender": {"id": 5, "name": "小李", "type": "user"}}
            assert c.post(url, params={"token": account.webhook_token}, json=agent_reply).json()["decision"] == "agent"
            events = c.get("/v1/conversations/chatwoot-1-567/events", params={"wait": 0}).json()["events"]
            assert [e["text"] for e in events if e["type"] == "agent"] == ["您好，我是客服"]
            resolved = {"event": "conversation_status_changed", "status": "resolved", "id": 567,
                        "account": {"id": 1}, "conversation": {"id": 567}}
            assert c.post(url, params={"token": account.webhook_token}, json=resolved).json()["decision"] == "released"
            assert not fake.problems, fake.problems
    finally:
        fake.stop()


def freeze_morning(app):
    """Run the engine at a fixed moment inside service hours (Chatwoot's events carry no timestamp we use)."""
    from contextlib import contextmanager
    from datetime import datetime

    @contextmanager
    def frozen():
        engine = app.state.dialogue.engine
        before = engine.clock
        engine.clock = lambda: datetime.fromisoformat(MORNING).timestamp()
        try:
            yield
        finally:
            engine.clock = before

    return frozen()
