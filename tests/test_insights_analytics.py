"""Insights as folds over events: frequent intents/questions, bot rates, article performance, knowledge gaps."""

from __future__ import annotations

import itertools

import pytest

from lingxi.training.events import Click, Event, Handoff, Impression, Outcome, Parse, Reply, Vote
from lingxi.training.gaps import GapConfig, cluster_texts, knowledge_gaps, title_from
from lingxi.training.insights import article_performance, frequent, rates

DAY = 86_400.0
T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC
_ids = itertools.count()


def ev(payload, ts=T0, conversation=None, channel="web", tenant="default") -> Event:
    return Event(event_id=f"e{next(_ids)}", payload=payload, ts=ts, conversation_id=conversation, channel=channel,
                 tenant=tenant)


def msg(text, intent=None, decision="answer", action=None, **kw) -> Event:
    return ev(Parse(text=text, intent=intent, decision=decision, action=action, confidence=0.9), **kw)


def test_frequent_intents_and_questions_by_day_channel_and_tag():
    events = [msg("怎么退款", "refund", channel="web"), msg("怎么退款", "refund", channel="app"),
              msg("退款多久到账", "refund", channel="app", ts=T0 + DAY), msg("发票怎么开", "invoice", ts=T0 + DAY),
              msg("？？", None, decision="out_of_scope"),
              ev(Parse(text="/refund", intent="refund", decision="answer", button=True))]  # a button, not typed
    (overall,) = frequent(events, "intent")
    assert [(c.key, c.count) for c in overall.items] == [("refund", 3), ("invoice", 1)]
    by_day = {g.group: {c.key: c.count for c in g.items} for g in frequent(events, "intent", by="day")}
    assert by_day == {"2027-01-15": {"refund": 2}, "2027-01-16": {"refund": 1, "invoice": 1}}
    by_channel = {g.group: g.total for g in frequent(events, "intent", by="channel")}
    assert by_channel == {"app": 2, "web": 2}
    tags = {"refund": ["售后"], "invoice": ["财务", "售后"]}
    by_tag = {g.group: g.total for g in frequent(events, "intent", by="tag", tags_of=lambda i: tags.get(i, []))}
    assert by_tag == {"售后": 4, "财务": 1}
    (questions,) = frequent(events, "question")
    assert questions.items[0].key == "怎么退款" and questions.items[0].count == 2
    assert questions.total == 5  # the out-of-scope message is a question too; the button is not
    # the operator's time zone moves a late-evening message to the next day
    late = [msg("怎么退款", "refund", ts=T0 + 15 * 3600)]  # 23:00 UTC
    assert frequent(late, "intent", by="day")[0].group == "2027-01-15"
    assert frequent(late, "intent", by="day", utc_offset_minutes=480)[0].group == "2027-01-16"


def test_containment_handoff_and_fallback_rates():
    events = []
    # c1 contained; c2 handed off (handoff event, outcome not yet swept); c3 abandoned after a fallback; c4 open
    events += [msg("怎么退款", "refund", action="answer", conversation="c1", channel="web"),
               ev(Outcome(outcome="contained"), conversation="c1", channel="web")]
    events += [msg("转人工", "human", action="handoff", conversation="c2", channel="app"),
               ev(Handoff(reason="customer asked"), conversation="c2", channel="app")]
    events += [msg("asdfgh", None, decision="out_of_scope", action="fallback", conversation="c3", channel="web"),
               ev(Outcome(outcome="abandoned"), conversation="c3", channel="web")]
    events += [msg("发票怎么开", "invoice", action="answer", conversation="c4", channel="web"),
               msg("我账号出问题了", "login", decision="clarify", action="clarify", conversation="c4", channel="web")]
    (overall,) = rates(events)
    assert (overall.conversations, overall.with_outcome) == (4, 3)
    assert (overall.contained, overall.handed_off, overall.abandoned) == (1, 1, 1)
    assert overall.containment_rate == pytest.approx(1 / 3, abs=1e-4)
    assert (overall.messages, overall.fallbacks, overall.clarifications) == (5, 1, 1)
    assert overall.fallback_rate == pytest.approx(0.2)
    per_channel = {r.group: r for r in rates(events, by="channel")}
    assert per_channel["app"].handoff_rate == 1.0 and per_channel["web"].containment_rate == 0.5
    per_intent = {r.group: r.conversations for r in rates(events, by="intent")}
    assert per_intent == {"refund": 1, "human": 1, "unknown": 1, "invoice": 1}
    # a bare /v1/parse rejection (no dialogue action) is a fallback too
    (bare,) = rates([msg("天气怎么样", None, decision="out_of_scope"), msg("怎么退款", "refund")])
    assert bare.fallback_rate == 0.5 and bare.conversations == 0 and bare.containment_rate is None


def test_article_performance_ctr_resolution_and_flags():
    events = [ev(Impression(article_id="a1", rank=1)) for _ in range(10)]
    events += [ev(Impression(article_id="a2", rank=3)) for _ in range(4)]
    events += [ev(Click(article_id="a1")) for _ in range(5)] + [ev(Click(article_id="a2"))]
    events += [ev(Vote(article_id="a1", resolved=True)), ev(Vote(article_id="a1", resolved=True)),
               ev(Vote(article_id="a1", resolved=False)), ev(Vote(article_id="a2", resolved=False))]
    events += [ev(Reply(text="…", kind="article", article_id="a3"))]
    rows = {r.article_id: r for r in article_performance(events, flags={"a2": "3 of 3 votes say it did not help"},
                                                         titles={"a1": "退款多久到账"}.get)}
    assert rows["a1"].ctr == 0.5 and rows["a1"].resolution_rate == pytest.approx(0.6667, abs=1e-4)
    assert rows["a1"].title == "退款多久到账" and rows["a1"].mean_rank == 1.0 and not rows["a1"].flagged
    assert rows["a2"].flagged and rows["a2"].ctr == 0.25 and rows["a2"].resolution_rate == 0.0
    assert rows["a3"].answered == 1 and rows["a3"].ctr is None and rows["a3"].resolution_rate is None


PLANTED = {
    "invoice_fix": ["发票抬头开错了怎么办", "你好，发票上的公司名称写错了能改吗？", "开错发票了怎么重开",
                    "发票抬头写错了可以换开吗"],
    "points": ["积分可以兑换什么", "我的积分能换礼品吗", "积分怎么用", "积分兑换商品在哪里"],
    "overseas": ["能寄到国外吗", "支持海外配送吗", "可以发货到美国吗"],
}
SINGLES = ["今天天气怎么样", "你们几点下班", "快递一直没到", "能不能开专票", "会员怎么升级", "退款多久到账"]


def test_gap_clustering_groups_planted_paraphrases(demo_encoder):
    texts = [t for group in PLANTED.values() for t in group] + SINGLES
    owner = {t: g for g, group in PLANTED.items() for t in group}
    clusters = [[texts[i] for i in c] for c in cluster_texts(texts, demo_encoder)]
    for group, members in PLANTED.items():
        home = [c for c in clusters if members[0] in c][0]
        assert set(members) <= set(home), f"{group} split: {clusters}"
        assert all(owner.get(t) == group for t in home), f"{group} absorbed others: {home}"


def test_knowledge_gaps_from_fallbacks_with_counts_examples_and_title(demo_encoder):
    events = []
    for group, members in PLANTED.items():
        for i, text in enumerate(members):
            events += [msg(text, None, decision="out_of_scope", action="fallback", ts=T0 + i,
                           channel="app" if group == "points" else "web")] * (2 if i == 0 else 1)
    events += [msg(t, None, decision="out_of_scope", action="fallback") for t in SINGLES]
    events += [msg("怎么退款", "refund", action="answer")] * 5  # answered: never a gap
    events += [ev(Vote(article_id="a1", resolved=False, query="积分到底能干嘛"))]  # unhelpful search result
    gaps = knowledge_gaps(events, demo_encoder, GapConfig(min_count=2))
    by_size = {g.suggested_title: g for g in gaps}
    points = next(g for g in gaps if "积分可以兑换什么" in g.examples or "我的积分能换礼品吗" in g.examples)
    assert points.count == 6 and points.distinct == 5 and points.channels["app"] == 5
    assert "积分" in points.keywords
    invoice = next(g for g in gaps if any("发票" in e for e in g.examples))
    assert invoice.count == 5 and "发票" in invoice.suggested_title
    assert not invoice.suggested_title.startswith("你好") and not invoice.suggested_title.endswith("？")
    assert all(g.count >= 2 for g in gaps) and "怎么退款" not in str(by_size)
    assert len(invoice.examples) == 3


def test_title_from_strips_greetings_and_trailing_punctuation():
    assert title_from("你好，请问发票抬头开错了怎么办？？") == "发票抬头开错了怎么办"
    assert title_from("积分怎么用呢") == "积分怎么用"
    assert title_from("？") == "？"
