from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec

from lingxi.datasets.domain import RuleSpec
from lingxi.nlu.normalize import Normalizer
from lingxi.nlu.rules import KeywordRules, RuleContext

SH = ZoneInfo("Asia/Shanghai")


def _rules(*specs: dict) -> KeywordRules:
    return KeywordRules([msgspec.convert(s, RuleSpec) for s in specs], normalize=Normalizer())


def test_match_types_priorities_and_normalised_patterns():
    rules = _rules(
        {"id": "refund", "match": "contains", "patterns": ["退款"], "priority": 10, "response": "a"},
        {"id": "human", "match": "contains", "patterns": ["转人工"], "priority": 100, "response": "b"},
        {"id": "hi", "match": "exact", "patterns": ["你好"], "response": "c"},
        {"id": "login", "match": "regex", "patterns": ["登[录陆](失败|不了)"], "priority": 20, "response": "d"},
        {"id": "app", "match": "contains", "patterns": ["APP登錄"], "response": "e"},
    )
    norm = Normalizer()
    hits = rules.match(norm("退款不了，转人工"))
    assert [h.rule_id for h in hits] == ["human", "refund"]
    assert hits[0].start == 5 and hits[0].end == 8
    assert [h.rule_id for h in rules.match(norm("你好"))] == ["hi"]
    assert rules.match(norm("你好呀")) == []
    assert [h.rule_id for h in rules.match(norm("登陆失败了"))] == ["login"]
    assert [h.rule_id for h in rules.match(norm("ａｐｐ登录不上"))] == ["app"]


def test_latin_keywords_need_word_boundaries():
    rules = _rules({"id": "vip", "match": "contains", "patterns": ["vip"], "response": "x"})
    assert rules.match("我是vip会员")
    assert rules.match("vip")
    assert not rules.match("vipshop")


def test_conditions_on_channel_tags_and_time():
    rules = _rules({
        "id": "vip_fast", "match": "contains", "patterns": ["人工"], "response": "x",
        "conditions": {"channels": ["web", "app"], "visitor_tags_any": ["vip"],
                       "time_windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"}]},
    })
    tuesday_10 = datetime(2026, 11, 24, 10, 0, tzinfo=SH)
    saturday_10 = datetime(2026, 11, 28, 10, 0, tzinfo=SH)
    ok = RuleContext("web", frozenset({"vip"}), tuesday_10)
    assert rules.match("人工", ok)
    assert not rules.match("人工", RuleContext("wechat", frozenset({"vip"}), tuesday_10))
    assert not rules.match("人工", RuleContext("web", frozenset(), tuesday_10))
    assert not rules.match("人工", RuleContext("web", frozenset({"vip"}), saturday_10))
    utc_2am = datetime(2026, 11, 24, 2, 0, tzinfo=ZoneInfo("UTC"))  # = 10:00 in Shanghai
    assert rules.match("人工", RuleContext("web", frozenset({"vip"}), utc_2am))


def test_overnight_window_wraps_midnight():
    rules = _rules({"id": "night", "match": "contains", "patterns": ["人工"], "response": "x",
                    "conditions": {"time_windows": [{"days": ["mon"], "start": "22:00", "end": "06:00"}]}})
    monday_23 = datetime(2026, 11, 23, 23, 0, tzinfo=SH)
    tuesday_05 = datetime(2026, 11, 24, 5, 0, tzinfo=SH)
    tuesday_23 = datetime(2026, 11, 24, 23, 0, tzinfo=SH)
    assert rules.match("人工", RuleContext(timestamp=monday_23))
    assert rules.match("人工", RuleContext(timestamp=tuesday_05))
    assert not rules.match("人工", RuleContext(timestamp=tuesday_23))


def test_thousands_of_keywords_compile_into_one_automaton():
    specs = [{"id": f"r{i}", "match": "contains", "patterns": [f"商品{i:05d}号"], "response": "x"} for i in range(5000)]
    rules = _rules(*specs)
    hits = rules.match("我想问商品04321号和商品00007号")
    assert {h.rule_id for h in hits} == {"r4321", "r7"}
