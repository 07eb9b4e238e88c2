"""The trained demo bot, end to end through the NLU pipeline (real encoders, real head)."""

from datetime import datetime
from zoneinfo import ZoneInfo

from lingxi.nlu.parse import ParseContext


def test_seed_example_vague_account_problem_asks_with_buttons(demo_pipeline):
    result = demo_pipeline.parse("我账号出问题了", ParseContext())
    assert result.decision == "clarify"
    assert result.match.match_type == "CLARIFY"
    labels = [o.label for o in result.clarification.options]
    assert "无法登录" in labels
    assert any("密码" in label for label in labels)
    assert 2 <= len(labels) <= 4
    # the button payload resolves the choice deterministically
    option = next(o for o in result.clarification.options if o.label == "无法登录")
    answer = demo_pipeline.parse(option.payload, ParseContext())
    assert answer.decision == "answer"
    assert answer.intent.name == "login_failed"
    assert answer.match.match_type == "DIRECT_INTENT"
    assert answer.response and answer.response.text


def test_clearly_unrelated_request_is_out_of_scope(demo_pipeline):
    result = demo_pipeline.parse("帮我订一张去上海的高铁票", ParseContext())
    assert result.decision == "out_of_scope"
    assert result.match.match_type == "NO_MATCH"
    assert result.intent.name == "out_of_scope"
    assert result.intent_ranking  # the original candidates are still reported


def test_clear_requests_are_answered_in_chinese_english_and_traditional(demo_pipeline):
    cases = {
        "我的快递到哪了": "logistics_query",
        "where is my package": "logistics_query",
        "我要開發票": "invoice_request",
        "优惠券怎么用不了": "coupon_use",
    }
    for text, intent in cases.items():
        result = demo_pipeline.parse(text, ParseContext())
        assert result.intent.name == intent, (text, result.intent, result.intent_ranking[:3])
        assert result.decision in ("answer", "rule")


def test_keyword_rule_fires_with_context_and_entities_have_spans(demo_pipeline):
    text = "我要转人工，订单DD202311240001234，电话13812345678，明天下午三点前回电"
    now = datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    result = demo_pipeline.parse(text, ParseContext(channel="web", timestamp=now))
    assert result.decision == "rule"
    assert result.matched_rules[0].intent == "human_agent"
    assert result.intent.name == "human_agent"
    by_type = {e.entity: e for e in result.entities}
    assert {"phone", "datetime"} <= set(by_type)
    for e in result.entities:
        assert text[e.start:e.end] == e.text
    assert by_type["phone"].value == "13812345678"
    assert by_type["datetime"].value["value"].startswith("2026-11-25T15:00")


def test_ranking_and_timing_are_reported(demo_pipeline):
    result = demo_pipeline.parse("怎么申请退货", ParseContext())
    assert len(result.intent_ranking) == 5
    confidences = [r.confidence for r in result.intent_ranking]
    assert confidences == sorted(confidences, reverse=True)
    assert {"encode", "classify", "total"} <= set(result.timing_ms)
    assert result.model.name == "demo-shop"


def test_other_vague_messages_get_their_categorys_guided_menu(demo_pipeline):
    # none of these texts is in the training files (checked by test_domain's overlap test for eval files)
    for text, expected in (("订单有问题", "查询订单"), ("付款有问题", "支付失败")):
        result = demo_pipeline.parse(text, ParseContext())
        assert result.decision == "clarify", (text, result.intent_ranking[:3])
        assert expected in [o.label for o in result.clarification.options]
