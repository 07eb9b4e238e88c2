"""Policy details through the real demo pipeline: the knowledge seam, sessions, language, sentiment."""

from __future__ import annotations

from datetime import datetime

import pytest

from lingxi.datasets.dialogue_files import SentimentConfig, load_dialogue
from lingxi.datasets.domain import demo_domain_path, load_domain
from lingxi.dialogue import demo_backend
from lingxi.dialogue.actions import ActionClient, mask, render
from lingxi.dialogue.engine import DialogueEngine, MessageIn
from lingxi.dialogue.flows import match_boolean, match_choice
from lingxi.dialogue.knowledge import ArticleHit, StaticKnowledge
from lingxi.dialogue.sentiment import negative_score
from lingxi.dialogue.stores import MemoryTrackerStore

T0 = datetime.fromisoformat("2026-11-24T10:00:00+08:00").timestamp()


@pytest.fixture(scope="module")
def spec():
    domain = load_domain(demo_domain_path())
    return load_dialogue(demo_domain_path(), set(domain.intent_names), {r.id for r in domain.rules})


def engine(spec, pipeline, knowledge=None):
    return DialogueEngine(spec, pipeline, MemoryTrackerStore(), knowledge=knowledge,
                          actions=ActionClient("http://shop.test", transport=demo_backend.transport()))


def test_knowledge_answers_before_clarify_and_fallback_and_is_optional(spec, demo_pipeline):
    kb = StaticKnowledge([(ArticleHit("kb-weather", "天气与配送", 0.0, snippet="恶劣天气会延迟配送"),
                           ["天气", "配送"])])
    e = engine(spec, demo_pipeline, kb)
    r = e.handle_message("k1", MessageIn(text="天气不好会影响配送吗", timestamp=T0))
    assert r.decision == "knowledge" and r.messages[0].article.id == "kb-weather"
    assert [t.stage for t in r.trace if t.outcome == "hit"] == ["knowledge"]
    r = engine(spec, demo_pipeline).handle_message("k2", MessageIn(text="天气不好会影响配送吗", timestamp=T0))
    assert r.decision in ("fallback", "clarify")
    assert any(t.stage == "knowledge" and t.outcome == "skip" for t in r.trace)


def test_a_new_session_after_the_timeout_resets_the_flow_but_keeps_the_log(spec, demo_pipeline):
    e = engine(spec, demo_pipeline)
    r = e.handle_message("s1", MessageIn(text="我要退款", timestamp=T0))
    assert r.active_flow == "refund"
    r = e.handle_message("s1", MessageIn(text="你好", timestamp=T0 + 31 * 60))
    assert r.active_flow is None and r.decision == "welcome"
    assert any(t.stage == "session" and t.detail == "new session" for t in r.trace)
    assert e.tracker("s1").state.user_turns == 2


def test_an_order_number_does_not_switch_the_conversation_to_english(spec, demo_pipeline):
    e = engine(spec, demo_pipeline)
    e.handle_message("l1", MessageIn(text="我要退款", timestamp=T0))
    e.handle_message("l1", MessageIn(text="我的快递到哪了", timestamp=T0 + 30))
    r = e.handle_message("l1", MessageIn(text="DD202311240001", timestamp=T0 + 60))
    assert "我们继续刚才的申请退款" in r.messages[-1].text and e.tracker("l1").state.language == "zh"


def test_client_slots_and_auto_filled_entities(spec, demo_pipeline):
    e = engine(spec, demo_pipeline)
    r = e.handle_message("a1", MessageIn(text="运费怎么算，订单DD202311240009", slots={"cart_total": 88},
                                         timestamp=T0))
    assert r.slots["cart_total"] == 88 and r.slots["order_id"] == "DD202311240009"
    r = e.handle_message("a1", MessageIn(text="查一下物流", timestamp=T0 + 30))
    assert r.active_flow is None and "DD202311240009" in r.messages[0].text  # no repeated question


def test_helpers():
    assert match_choice("东西坏了", spec_choices()) == "质量问题"
    assert match_choice("今天天气不错", spec_choices()) is None
    assert match_boolean("好的") is True and match_boolean("不是") is False and match_boolean("再说") is None
    assert mask("13812345678") == "138****5678" and mask("ab@c.com") == "a***@c.com"
    assert render("订单{order_id}，{missing}{ok}", {"order_id": "D1", "ok": True}) == "订单D1，是"
    cfg = SentimentConfig(strong=["垃圾"], weak=["失望"], intensifiers=["太"])
    assert negative_score("垃圾服务", cfg).score == 2
    assert negative_score("太失望了", cfg).score == 2 and negative_score("有点失望", cfg).score == 1
    assert negative_score("还不错", cfg).score == 0


def spec_choices():
    return load_dialogue(demo_domain_path()).slots["refund_reason"].choices
