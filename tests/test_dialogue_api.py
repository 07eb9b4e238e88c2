"""The conversation API through the real litestar app and the trained demo model.

Includes two app instances sharing one Redis (LINGXI_TEST_REDIS_URL; skipped when unset) that
receive interleaved messages for one conversation, and a real slow/failing HTTP backend.
"""

from __future__ import annotations

import http.server
import os
import threading
import uuid
from datetime import datetime

import msgspec
import pytest
from litestar.testing import TestClient

from lingxi.datasets.dialogue_files import load_dialogue
from lingxi.datasets.domain import demo_domain_path, load_domain
from lingxi.dialogue import demo_backend
from lingxi.dialogue.actions import ActionClient
from lingxi.dialogue.stores import MemoryTrackerStore, RedisTrackerStore, SQLTrackerStore
from lingxi.serving.conversations import app_with_dialogue, build_dialogue_service
from lingxi.serving.loading import ModelHolder
from lingxi.serving.settings import ApiKey, Settings

REDIS_URL = os.environ.get("LINGXI_TEST_REDIS_URL")
MORNING = "2026-11-24T10:00:00+08:00"


@pytest.fixture(scope="module")
def holder(trained_demo, demo_encoder, lingxi_home, demo_arbitration):
    h = ModelHolder(lingxi_home / "models", "demo-shop")
    h._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder
    assert h.load_latest() is not None
    return h


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One server home for every app here, so the knowledge-base index is built once."""
    return tmp_path_factory.mktemp("dialogue-api-home")


@pytest.fixture(scope="module")
def spec():
    domain = load_domain(demo_domain_path())
    return load_dialogue(demo_domain_path(), set(domain.intent_names), {r.id for r in domain.rules})


def make_app(holder, spec, store, home, keys=(), actions=None, clock=None):
    """The served conversation stack (the app's knowledge base, the arbitration fitted beside the
    bundle) with this test's store, shop backend and clock (the engine's time for messages that
    carry no timestamp; default: now)."""
    settings = Settings(home=str(home), api_keys=list(keys), max_text_chars=200)
    app = app_with_dialogue(settings, holder)
    actions = actions or ActionClient("http://shop.test", transport=demo_backend.transport())
    app.state.dialogue = build_dialogue_service(settings, holder, kbs=lambda: getattr(app.state, "kbs", None),
                                                spec=spec, store=store, actions=actions, clock=clock)
    return app


@pytest.fixture
def client(holder, spec, home, tmp_path):
    store = SQLTrackerStore(f"sqlite:///{tmp_path / 'dialogue.db'}")
    with TestClient(make_app(holder, spec, store, home)) as c:
        yield c
    store.close()


def send(c, cid, text=None, payload=None, **extra):
    body = {"text": text, "payload": payload, "timestamp": extra.pop("timestamp", MORNING), **extra}
    r = c.post(f"/v1/conversations/{cid}/messages", json={k: v for k, v in body.items() if v is not None})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_refund_flow_over_http_and_the_tracker(client):
    r = send(client, "api-1", "我要退款", channel="app", visitor={"id": "u-1", "phone": "13800138000"})
    assert r["created"] is True and r["decision"] == "flow" and r["active_flow"] == "refund"
    assert r["messages"][0]["text"].startswith("好的，我来帮您申请退款") and r["parse"]["intent"] == "refund_apply"
    stages = [t["stage"] for t in r["trace"]]
    assert stages.index("rules") < stages.index("flow")  # the explained order
    r = send(client, "api-1", "DD202311240001")
    assert r["created"] is False and [b["title"] for b in r["messages"][0]["buttons"]][:2] == ["质量问题", "发错货"]
    r = send(client, "api-1", payload="质量问题")
    r = send(client, "api-1", "确认")
    assert r["active_flow"] is None and r["slots"]["refund_id"].startswith("RF")
    tracker = client.get("/v1/conversations/api-1?events=all").json()
    assert tracker["state"]["channel"] == "app" and tracker["state"]["visitor_id"].startswith("v-")
    kinds = [e["event"] for e in tracker["events"]]
    assert kinds.count("user") == 4 and "flow_ended" in kinds and "action" in kinds
    assert "events" not in client.get("/v1/conversations/api-1").json()
    visitor = client.get(f"/v1/visitors/{tracker['state']['visitor_id']}").json()
    assert {"kind": "phone", "value": "13800138000"} in visitor["identities"]


def test_unknown_ids_and_bad_input(client):
    assert client.get("/v1/conversations/nobody").json()["error"]["code"] == "conversation_not_found"
    r = client.post("/v1/conversations/nobody/events", json={"kind": "dwell", "page": "/checkout", "seconds": 90})
    assert r.status_code == 404
    assert client.get("/v1/conversations/nobody").status_code == 404  # neither GET nor events created it
    for body, status, code in [({"text": "  "}, 422, "empty_text"), ({"text": "长" * 201}, 422, "text_too_long"),
                               ({"text": "hi", "colour": 1}, 400, "unknown_field"),
                               ({"text": "hi", "language": "fr"}, 422, "invalid_language")]:
        r = client.post("/v1/conversations/x/messages", json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    r = client.post("/v1/conversations/bad%20id/messages", json={"text": "hi"})
    assert r.json()["error"]["code"] == "invalid_conversation_id"
    assert client.get("/v1/conversations/api-x?events=some").json()["error"]["code"] == "invalid_field"


def test_open_then_behaviour_trigger_then_button(client):
    r = client.post("/v1/conversations", json={"conversation_id": "api-open", "channel": "web", "timestamp": MORNING})
    assert r.status_code == 201 and r.json()["decision"] == "welcome"
    assert client.post("/v1/conversations", json={"conversation_id": "api-open"}).status_code == 409
    client.post("/v1/conversations/api-open/events",
                json={"kind": "page_view", "page": "/checkout", "timestamp": "2026-11-24T10:00:10+08:00"})
    r = client.post("/v1/conversations/api-open/events", json={
        "kind": "dwell", "page": "/checkout", "seconds": 75, "timestamp": "2026-11-24T10:01:25+08:00"}).json()
    assert r["decision"] == "proactive" and r["messages"][0]["text"].startswith("需要帮忙吗")
    payload = r["messages"][0]["buttons"][1]["payload"]
    r = send(client, "api-open", payload=payload, timestamp="2026-11-24T10:01:40+08:00")
    assert r["decision"] == "answer" and r["intent"] == "payment_methods"


def test_a_payload_that_was_never_offered_is_treated_as_text(client):
    r = send(client, "api-payload", payload="/refund_apply")
    assert any("never offered" in t["detail"] for t in r["trace"])
    events = client.get("/v1/conversations/api-payload?events=all").json()["events"]
    user = next(e for e in events if e["event"] == "user")
    assert user["text"] == "refund_apply" and "payload" not in user


def test_handoff_keeps_the_bot_silent_until_an_editor_releases_it(holder, spec, home):
    keys = [ApiKey(name="shop", role="server", key="read-key"), ApiKey(name="agents", role="editor", key="ed-key")]
    app = make_app(holder, spec, MemoryTrackerStore(), home, keys=keys)
    read, editor = {"X-API-Key": "read-key"}, {"X-API-Key": "ed-key"}
    with TestClient(app) as c:
        def post(text, ts):
            r = c.post("/v1/conversations/api-h/messages", headers=read, json={"text": text, "timestamp": ts})
            assert r.status_code == 200, r.text
            return r.json()

        assert c.post("/v1/conversations/api-h/messages", json={"text": "hi"}).status_code == 401
        post("运费怎么算", MORNING)
        r = post("转人工", "2026-11-24T10:00:30+08:00")
        h = r["handoff"]
        assert r["decision"] == "handoff" and h["mode"] == "live" and h["skill_group"]
        assert [line["text"] for line in h["transcript"] if line["role"] == "user"] == ["运费怎么算", "转人工"]
        assert h["intents"][0]["intent"] == "shipping_fee" and "summary" in h and "priority" in h
        r = post("你好？有人吗", "2026-11-24T10:01:00+08:00")
        assert r["silent"] is True and r["messages"] == [] and r["decision"] == "silent"
        assert c.post("/v1/conversations/api-h/release", headers=read, json={}).status_code == 403
        r = c.post("/v1/conversations/api-h/release", headers=editor,
                   json={"by": "agent-7", "message": "客服已处理完毕，小灵继续为您服务。"})
        assert r.status_code == 200 and r.json()["decision"] == "released"
        r = post("运费怎么算", "2026-11-24T10:02:00+08:00")
        assert r["decision"] == "answer" and r["messages"]


def test_rasa_rest_webhook_shape_and_token(holder, spec, home):
    keys = [ApiKey(name="rasa bridge", role="server", key="tok-1")]  # the sender id is the caller's word
    in_service_hours = datetime.fromisoformat(MORNING).timestamp  # the Rasa channel carries no time: a live handoff
    with TestClient(make_app(holder, spec, MemoryTrackerStore(), home, keys=keys, clock=in_service_hours)) as c:
        assert c.post("/webhooks/rest/webhook", json={"sender": "s1", "message": "你好"}).status_code == 401
        r = c.post("/webhooks/rest/webhook?token=tok-1", json={"sender": "s1", "message": "我账号出问题了"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body[0]["recipient_id"] == "s1" and body[0]["text"] == "您是想问以下哪个问题？"
        assert body[0]["buttons"][0] == {"title": "无法登录", "payload": "/login_failed"}
        r = c.post("/webhooks/rest/webhook?token=tok-1", json={"sender": "s1", "message": "/login_failed"}).json()
        assert "检查网络" in r[0]["text"]
        r = c.post("/webhooks/rest/webhook?token=tok-1", json={"sender": "s1", "message": "agent"}).json()
        assert r[-1]["custom"]["handoff"]["reason"] == "explicit_request"
        assert c.post("/webhooks/rest/webhook?token=tok-1", json={"sender": "s1", "message": "在吗"}).json() == []


class _SlowShop(http.server.BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self):  # noqa: N802 - http.server API
        if "/orders/" in self.path:
            _SlowShop.release.wait(10)  # slower than any action timeout in the test
            self.send_response(200)
        else:
            self.send_response(500)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self):  # noqa: N802
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_slow_or_failing_backend_gets_the_fallback_reply(holder, spec, home):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowShop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fast = msgspec.structs.replace(spec.actions["order_lookup"], timeout=0.3)
    quick_spec = load_dialogue(demo_domain_path())
    quick_spec.actions["order_lookup"] = fast
    actions = ActionClient(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        with TestClient(make_app(holder, quick_spec, MemoryTrackerStore(), home, actions=actions)) as c:
            send(c, "api-slow", "我的快递到哪了")
            r = send(c, "api-slow", "DD202311240001", timestamp="2026-11-24T10:00:30+08:00")
            assert r["messages"][0]["text"].startswith("抱歉，订单系统暂时繁忙") and r["active_flow"] is None
            events = c.get("/v1/conversations/api-slow?events=all").json()["events"]
            action = next(e for e in events if e["event"] == "action")
            assert action["ok"] is False and action["error"] == "timeout"
            send(c, "api-fail", "我要退款")
            send(c, "api-fail", "DD202311240001")
            send(c, "api-fail", "不想要了")
            r = send(c, "api-fail", "确认")
            assert r["messages"][0]["text"].startswith("抱歉，退款系统暂时繁忙")
    finally:
        _SlowShop.release.set()
        server.shutdown()
        actions.close()


@pytest.mark.skipif(not REDIS_URL, reason="LINGXI_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/15)")
def test_two_app_instances_sharing_redis_keep_every_slot_update(holder, spec, home):
    prefix = f"lxtest{uuid.uuid4().hex[:8]}"
    stores = [RedisTrackerStore(REDIS_URL, prefix=prefix, wait_s=30) for _ in range(2)]
    apps = [make_app(holder, spec, s, home) for s in stores]
    cid = f"shared-{uuid.uuid4().hex[:6]}"
    n = 12
    errors: list[str] = []
    start = threading.Barrier(2)

    def replica(i: int) -> None:
        with TestClient(apps[i]) as c:
            start.wait()
            for k in range(n):
                r = c.post(f"/v1/conversations/{cid}/messages",
                           json={"text": "运费怎么算", "slots": {f"r{i}_{k}": k}, "timestamp": MORNING})
                if r.status_code != 200:
                    errors.append(r.text)

    try:
        threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with TestClient(apps[0]) as c:
            tracker = c.get(f"/v1/conversations/{cid}?events=all").json()
        expected = {f"r{i}_{k}": k for i in range(2) for k in range(n)}
        assert {k: v for k, v in tracker["state"]["slots"].items() if k[0] == "r"} == expected
        assert tracker["state"]["user_turns"] == 2 * n
        # turns never interleave: each user message's events end with its decision before the next one
        kinds = [e["event"] for e in tracker["events"]]
        open_turn = False
        for kind in kinds:
            if kind == "user":
                assert not open_turn, "a turn started before the previous one was decided"
                open_turn = True
            elif kind == "decision":
                open_turn = False
        writers = [e["name"][:2] for e in tracker["events"] if e["event"] == "slot" and e["name"][0] == "r"]
        assert set(writers) == {"r0", "r1"}
    finally:
        stores[0].drop()
        for s in stores:
            s.close()


def test_the_service_is_built_from_settings_with_the_default_sqlite_store(holder, home):
    app = app_with_dialogue(Settings(home=str(home)), holder)  # no injected service: built on first use
    with TestClient(app) as c:
        r = send(c, "api-default", "你好")
        assert r["decision"] == "welcome"
        assert c.get("/v1/conversations/api-default").json()["state"]["user_turns"] == 1
    assert (home / "dialogue.db").is_file()
    app.state.dialogue.close()
