"""The misunderstood queue as a fold over the event store, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from lingxi.training.events import EventStore, default_url
from lingxi.training.misunderstood import MisunderstoodQueue, QueueConfig, QueueError


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = EventStore.open(default_url(tmp_path))
        yield s
        s.dispose()
        return
    s = EventStore.open(request.getfixturevalue("pg_schema_url"))
    try:
        yield s
    finally:
        s.dispose()


_n = iter(range(1_000_000))


def parse(text: str, action: str | None, decision: str = "answer", intent: str | None = None, confidence=0.9,
          cid: str | None = None, bot: str = "shop", button: bool = False, ts: float | None = None) -> dict:
    payload = {"text": text, "decision": decision, "intent": intent, "confidence": confidence, "button": button}
    if action:
        payload["action"] = action
    return {"event_id": f"p{next(_n)}", "type": "parse", "bot": bot, "conversation_id": cid, "ts": ts or time.time(),
            "payload": payload}


def clarified(text: str, chosen: str, bot: str = "shop") -> dict:
    return {"event_id": f"c{next(_n)}", "type": "clarification", "bot": bot,
            "payload": {"text": text, "chosen": chosen, "options": [chosen, "other"]}}


def test_what_is_queued_and_how_it_is_deduplicated(store):
    q = MisunderstoodQueue(store, QueueConfig(low_confidence=0.5)).create_schema()
    store.ingest([
        parse("今天天气怎么样", "fallback", "out_of_scope"),
        parse("今天天气怎么样？？", "fallback", "out_of_scope"),
        parse("今天 天气 怎么样!", None, "out_of_scope"),  # a bare /v1/parse call
        parse("我账号出问题了", "clarify", "clarify", "login_failed", 0.3),
        parse("发票怎么开", "answer", "answer", "invoice", 0.35),  # answered, unsure
        parse("退款多久到账", "answer", "answer", "refund_time", 0.95),  # answered, sure: not queued
        parse("/login_failed", "answer", "answer", "login_failed", 1.0, button=True),  # a button, not text
        parse("订单", "flow", "answer", "order_status", 0.9),  # the dialogue handled it
        {"event_id": "h1", "type": "handoff", "bot": "shop", "payload": {"reason": "repeated_fallback",
                                                                        "text": "推荐一部电影"}},
        {"event_id": "h2", "type": "handoff", "bot": "shop", "payload": {"reason": "explicit_request",
                                                                        "text": "转人工"}},
    ], "default")
    assert q.sync() == 10 and q.sync() == 0
    items, total = q.list("default")
    by_text = {e.text: e for e in items}
    assert total == 4 and set(by_text) == {"今天天气怎么样", "我账号出问题了", "发票怎么开", "推荐一部电影"}
    weather = by_text["今天天气怎么样"]
    assert weather.count == 3 and weather.reasons == {"fallback": 3} and weather.predicted is None
    assert by_text["发票怎么开"].reasons == {"low_confidence": 1} and by_text["发票怎么开"].predicted == "invoice"
    assert [e.text for e in q.list("default", reason="handoff")[0]] == ["推荐一部电影"]
    assert q.list("other-tenant")[1] == 0


def test_wrong_answers_from_not_resolved_votes(store):
    q = MisunderstoodQueue(store).create_schema()
    t = time.time() - 100
    store.ingest([parse("能开专票吗", "answer", intent="invoice", cid="c-1", ts=t),
                  {"event_id": "v1", "type": "vote", "conversation_id": "c-1", "ts": t + 5,
                   "payload": {"article_id": "kb-invoice", "resolved": False}},
                  {"event_id": "v2", "type": "vote", "conversation_id": "c-1", "ts": t + 6,
                   "payload": {"article_id": "kb-invoice", "resolved": True}}], "default")
    q.sync()
    items, _ = q.list("default", reason="wrong_answer")
    assert [(e.text, e.predicted) for e in items] == [("能开专票吗", "invoice")]


def test_labels_weights_weak_agreement_and_hard_negatives(store):
    q = MisunderstoodQueue(store, QueueConfig(weak_weight=0.3, weak_min_agreement=0.6,
                                              hard_negative_weight=2.0)).create_schema()
    store.ingest([parse("能开专票吗", "answer", intent="invoice_normal", confidence=0.4),
                  parse("宠物粮有吗", "fallback", "out_of_scope"),
                  parse("帮我写首诗", "answer", intent="greet", confidence=0.3),
                  parse("随便聊聊", "fallback", "out_of_scope"),
                  clarified("账号不对劲", "login_failed"), clarified("账号不对劲", "login_failed"),
                  clarified("账号不对劲！", "password_wrong"),  # 2 of 3 agree → a weak label
                  clarified("订单有问题", "order_status"), clarified("订单有问题", "order_cancel"),  # no agreement
                  clarified("能开专票吗", "invoice_special")],  # the operator decides this one
                 "default")
    q.sync()
    ids = {e.text: e.id for e in q.list("default")[0]}
    q.resolve("default", [ids["能开专票吗"]], "intent", "invoice_special", "ops")
    q.resolve("default", [ids["宠物粮有吗"]], "new_intent", "pet_food", "ops")
    q.resolve("default", [ids["帮我写首诗"], ids["随便聊聊"]], "ignore", None, "ops")
    labels = {(lb.text, lb.intent): lb for lb in q.labels("default", "shop", known_intents=["invoice_special"])}
    assert set(labels) == {("能开专票吗", "invoice_special"), ("宠物粮有吗", "pet_food"), ("帮我写首诗", "oos"),
                           ("账号不对劲", "login_failed")}
    hard = labels[("能开专票吗", "invoice_special")]
    assert hard.source == "operator" and hard.hard_negative and hard.weight == 2.0
    assert labels[("宠物粮有吗", "pet_food")].weight == 1.0 and labels[("宠物粮有吗", "pet_food")].new_intent
    assert labels[("帮我写首诗", "oos")].hard_negative  # ignored, but the bot had answered it
    weak = labels[("账号不对劲", "login_failed")]
    assert weak.source == "weak" and weak.weight == pytest.approx(0.3) and weak.count == 2


def test_resolving_checks_its_input_and_is_all_or_nothing(store):
    q = MisunderstoodQueue(store).create_schema()
    store.ingest([parse("x 是什么", "fallback", "out_of_scope")], "default")
    q.sync()
    (entry,), _ = q.list("default")
    for args, code in [(("intent", None), "missing_target"), (("new_intent", "has space"), "invalid_target"),
                       (("promote", "x"), "invalid_action")]:
        with pytest.raises(QueueError) as err:
            q.resolve("default", [entry.id], *args, "ops")  # type: ignore[arg-type]
        assert err.value.code == code
    with pytest.raises(QueueError) as err:
        q.resolve("default", [entry.id, 999_999], "ignore", None, "ops")
    assert err.value.code == "not_found" and q.get("default", entry.id).status == "open"
    with pytest.raises(QueueError):
        q.resolve("acme", [entry.id], "ignore", None, "ops")  # another tenant's entry
    assert q.resolve("default", [entry.id], "ignore", None, "ops")[0].status == "ignored"
    assert q.reopen("default", entry.id).status == "open"


def test_concurrent_syncs_count_each_event_once(store):
    store.ingest([parse("今天天气怎么样", "fallback", "out_of_scope") for _ in range(200)], "default")
    queues = [MisunderstoodQueue(store).create_schema() for _ in range(2)]
    threads = [threading.Thread(target=q.sync, kwargs={"batch": 17}) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (entry,), _ = queues[0].list("default")
    assert entry.count == 200
