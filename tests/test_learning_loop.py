"""The learning loop through the real app: conversation turns and KB feedback land in the one event
store, misunderstood utterances queue up (deduplicated), clarification picks become weak labels, and
operators resolve entries through the API (per tenant, with roles)."""

from __future__ import annotations

import time

import pytest
from litestar.testing import TestClient

from lingxi.datasets.dialogue_files import load_dialogue
from lingxi.datasets.domain import demo_domain_path, load_domain
from lingxi.dialogue import demo_backend
from lingxi.dialogue.actions import ActionClient
from lingxi.dialogue.engine import DialogueEngine
from lingxi.dialogue.stores import SQLTrackerStore
from lingxi.serving.app import create_app
from lingxi.serving.conversations import DialogueService, build_dialogue_service
from lingxi.serving.loading import ModelHolder
from lingxi.serving.settings import ApiKey, Settings
from lingxi.training.events import Clarification, Parse, Reply

KEYS = {"widget": "k-widget", "shop": "k-shop", "ops": "k-ops", "acme": "k-acme"}
MORNING = "2026-11-24T10:00:00+08:00"


def H(who: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[who]}


@pytest.fixture(scope="module")
def holder(trained_demo, demo_encoder, lingxi_home, demo_arbitration):
    h = ModelHolder(lingxi_home / "models", "demo-shop")
    h._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder
    assert h.load_latest() is not None
    return h


@pytest.fixture(scope="module")
def client(holder, tmp_path_factory):
    home = tmp_path_factory.mktemp("learning-home")
    keys = [ApiKey(name="widget", role="read", key=KEYS["widget"]), ApiKey(name="shop", role="server", key=KEYS["shop"]),
            ApiKey(name="ops", role="editor", key=KEYS["ops"]),
            ApiKey(name="acme-ops", role="editor", tenant="acme", key=KEYS["acme"])]
    settings = Settings(home=str(home), api_keys=keys)
    app = create_app(settings, holder)
    domain = load_domain(demo_domain_path())
    spec = load_dialogue(demo_domain_path(), set(domain.intent_names), {r.id for r in domain.rules})
    store = SQLTrackerStore(f"sqlite:///{home / 'dialogue.db'}")
    app.state.dialogue = build_dialogue_service(
        settings, holder, kbs=lambda: getattr(app.state, "kbs", None), spec=spec, store=store,
        actions=ActionClient("http://shop.test", transport=demo_backend.transport()))
    with TestClient(app) as c:
        yield c


def send(c, cid, text=None, payload=None):
    body = {"text": text, "payload": payload, "timestamp": MORNING, "channel": "web"}
    r = c.post(f"/v1/conversations/{cid}/messages", json={k: v for k, v in body.items() if v is not None},
               headers=H("shop"))  # a server-side channel: a site key would have to open the conversation first
    assert r.status_code == 200, r.text
    return r.json()


def flush(c) -> None:
    c.app.state.event_writer.flush()


def entries(c, who="ops", **params) -> list[dict]:
    r = c.get("/v1/misunderstood", params=params, headers=H(who))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_turns_become_events_and_failures_queue_up_deduplicated(client):
    assert send(client, "lq-1", "我账号出问题了")["decision"] == "clarify"
    assert send(client, "lq-1", payload="/password_wrong")["intent"] == "password_wrong"
    assert send(client, "lq-2", "今天天气怎么样")["decision"] == "fallback"
    assert send(client, "lq-3", "今天天气怎么样？")["decision"] == "fallback"  # same question, other punctuation
    assert send(client, "lq-3", "推荐一部电影")["decision"] == "handoff"
    flush(client)

    store = client.app.state.events
    one = store.query("default", conversation_id="lq-1")
    kinds = [e.type for e in one]
    assert kinds.count("parse") == 2 and "reply" in kinds and "clarification" in kinds
    first = next(e for e in one if e.type == "parse")
    assert isinstance(first.payload, Parse) and first.payload.action == "clarify" and first.model_version
    assert first.bot == "demo-shop" and first.channel == "web"
    clar = next(e.payload for e in one if e.type == "clarification")
    assert isinstance(clar, Clarification) and (clar.text, clar.chosen) == ("我账号出问题了", "password_wrong")
    assert any(isinstance(e.payload, Reply) and e.payload.buttons for e in one)
    handoff = store.query("default", conversation_id="lq-3", types=["handoff", "outcome"])
    assert [e.type for e in handoff] == ["handoff", "outcome"] and handoff[1].payload.outcome == "handed_off"

    items = {i["text"]: i for i in entries(client)}
    weather = items["今天天气怎么样"]
    assert weather["count"] == 2 and weather["reasons"] == {"fallback": 2}
    assert items["我账号出问题了"]["reasons"] == {"clarify": 1}
    assert items["推荐一部电影"]["reasons"] == {"handoff": 1}  # repeated fallback → handoff, with its text
    assert [i["text"] for i in entries(client, reason="fallback")] == ["今天天气怎么样"]
    assert [i["text"] for i in entries(client, q="天气")] == ["今天天气怎么样"]

    # a re-read of the same events changes nothing: the queue has its own cursor
    client.app.state.misunderstood.sync()
    assert {i["text"]: i["count"] for i in entries(client)}["今天天气怎么样"] == 2

    labels = client.get("/v1/misunderstood/labels", headers=H("ops")).json()
    weak = [label for label in labels if label["source"] == "weak"]
    assert weak == [{"text": "我账号出问题了", "intent": "password_wrong", "source": "weak", "weight": 0.3,
                     "count": 1, "hard_negative": False, "predicted": None, "new_intent": False}]


def test_a_not_resolved_vote_after_an_answer_queues_a_wrong_answer_and_is_stored(client):
    r = send(client, "lq-4", "运费怎么算")
    assert r["decision"] == "answer" and r["intent"] == "shipping_fee"
    flush(client)
    batch = {"events": [{"event_id": "vote-lq-4", "type": "vote", "conversation_id": "lq-4", "ts": time.time(),
                         "payload": {"article_id": "kb-no-such-article", "resolved": False}},
                        {"event_id": "vote-ghost", "type": "vote", "conversation_id": "lq-nobody",
                         "payload": {"article_id": "kb-no-such-article", "resolved": False}}]}
    report = client.post("/v1/events", json=batch, headers=H("widget")).json()
    assert [r["flags"] for r in report["results"]] == [["unknown_article"],
                                                       ["unknown_article", "unknown_conversation"]]
    wrong = entries(client, reason="wrong_answer")
    assert [(i["text"], i["predicted"]) for i in wrong] == [("运费怎么算", "shipping_fee")]


def test_operators_resolve_entries_and_targets_are_checked(client):
    send(client, "lq-5", "你们的猫粮有货吗")
    flush(client)
    item = next(i for i in entries(client) if i["text"] == "你们的猫粮有货吗")
    url = f"/v1/misunderstood/{item['id']}/resolve"
    bad = [({"action": "intent", "target": "no_such_intent"}, 422, "unknown_intent"),
           ({"action": "new_intent", "target": "shipping_fee"}, 422, "intent_exists"),
           ({"action": "intent"}, 422, "missing_target"),
           ({"action": "new_intent", "target": "bad name!"}, 422, "invalid_target"),
           ({"action": "article", "target": "kb-none"}, 422, "unknown_article"),
           ({"action": "promote"}, 400, "invalid_request")]
    for body, status, code in bad:
        r = client.post(url, json=body, headers=H("ops"))
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (body, r.text)
    assert client.post(url, json={"action": "ignore"}, headers=H("widget")).status_code == 403
    assert client.post("/v1/misunderstood/999999/resolve", json={"action": "ignore"},
                       headers=H("ops")).status_code == 404

    r = client.post(url, json={"action": "new_intent", "target": "pet_food_stock", "note": "新品类"},
                    headers=H("ops"))
    assert r.status_code == 200 and r.json()["status"] == "resolved" and r.json()["resolved_by"] == "ops"
    assert item["id"] not in {i["id"] for i in entries(client)}  # no longer open
    labels = client.get("/v1/misunderstood/labels", headers=H("ops")).json()
    label = next(x for x in labels if x["text"] == "你们的猫粮有货吗")
    assert (label["intent"], label["source"], label["count"], label["new_intent"]) == ("pet_food_stock", "operator",
                                                                                      1, True)
    # answered with another intent, the label is a hard negative and weighs double; else it weighs 1
    assert (label["weight"], label["hard_negative"]) == ((2.0, True) if label["predicted"] else (1.0, False))


def test_assigning_to_an_article_adds_a_question_variant_as_a_draft(client):
    send(client, "lq-6", "量子力学的基本原理是什么")
    flush(client)
    item = next(i for i in entries(client) if i["text"] == "量子力学的基本原理是什么")
    kb = client.app.state.kb
    article_id = next(iter(kb.store.live()))
    before = kb.get(article_id)
    r = client.post(f"/v1/misunderstood/{item['id']}/resolve", json={"action": "article", "target": article_id},
                    headers=H("ops"))
    assert r.status_code == 200 and r.json()["target"] == article_id
    after = kb.get(article_id)
    assert after.version == before.version + 1 and after.variants[-1] == "量子力学的基本原理是什么"


def test_each_tenant_sees_only_its_own_queue(client):
    send(client, "lq-7", "今天天气怎么样")
    assert entries(client, who="acme") == []
    assert entries(client, who="ops")


def test_kb_feedback_and_client_events_feed_the_same_store_and_the_ranking(client):
    kb = client.app.state.kb
    store = client.app.state.events
    shown = client.post("/v1/kb/search", json={"query": "怎么申请退款"}, headers=H("widget")).json()
    article_id, search_id = shown["results"][0]["article_id"], shown["search_id"]  # a served impression
    before = store.count("default", types=["vote"])
    vote = {"type": "vote", "article_id": article_id, "resolved": True, "event_id": "fb-once", "search_id": search_id}
    r = client.post("/v1/feedback", json={"events": [vote]}, headers=H("widget"))
    assert r.status_code == 202
    again = client.post("/v1/feedback", json={"events": [vote]}, headers=H("widget"))
    assert again.status_code == 202
    assert store.count("default", types=["vote"]) == before + 1  # the retry did not count twice
    assert kb.feedback.stats(article_id).resolved == 1
    events = [{"event_id": f"clk-{i}", "type": "click",
               "payload": {"article_id": article_id, "rank": 1, "search_id": search_id}} for i in range(3)]
    assert client.post("/v1/events", json={"events": events}, headers=H("widget")).json()["accepted"] == 3
    assert store.count("default", types=["click"]) >= 3  # all stored …
    assert kb.feedback.stats(article_id).clicks == 1  # … folded at once, but one served impression is one click


def test_batch_limits(client):
    r = client.post("/v1/events", json={"events": []}, headers=H("widget"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "empty_batch"
    r = client.post("/v1/events", json={"events": [{"event_id": f"x{i}", "type": "click"} for i in range(1001)]},
                    headers=H("widget"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_events"
    assert client.post("/v1/events", json={"events": []}).status_code == 401
    r = client.post("/v1/events", content=b"{not json", headers={**H("widget"), "content-type": "application/json"})
    assert r.status_code == 400


def test_turn_events_keep_stable_ids_across_tracker_snapshots(holder, tmp_path):
    """Snapshots rebase the tracker's tail; event ids still count from the conversation's first event,
    and a clarification asked before a snapshot is still tied to the vague message."""
    from litestar.datastructures import State

    from lingxi.dialogue.engine import MessageIn
    from lingxi.serving.events import tap_dialogue
    from lingxi.training.events import EventStore, EventWriter, default_url

    domain = load_domain(demo_domain_path())
    spec = load_dialogue(demo_domain_path(), set(domain.intent_names), {r.id for r in domain.rules})
    store = SQLTrackerStore(f"sqlite:///{tmp_path / 'dialogue.db'}", snapshot_every=5, keep_turns=1)
    engine = DialogueEngine(spec, lambda: holder.current.pipeline, store,
                            actions=ActionClient("http://shop.test", transport=demo_backend.transport()))
    events = EventStore.open(default_url(tmp_path))
    state = State({"event_writer": EventWriter(events), "settings": Settings(), "models": holder})
    tap_dialogue(state, DialogueService(engine))
    for _ in range(6):
        assert engine.handle_message("snap-1", MessageIn(text="我账号出问题了")).decision == "clarify"
        assert engine.handle_message("snap-1", MessageIn(payload="/login_failed")).intent == "login_failed"
    state.event_writer.close()
    stored = events.query("default", conversation_id="snap-1")
    assert len({e.event_id for e in stored}) == len(stored)
    assert sum(e.type == "parse" for e in stored) == 12
    picks = [e.payload for e in stored if e.type == "clarification"]
    assert len(picks) == 6 and {(p.text, p.chosen) for p in picks} == {("我账号出问题了", "login_failed")}
    assert store.load("snap-1").base_seq > 0  # snapshots were taken along the way
    engine.close()
    events.dispose()
