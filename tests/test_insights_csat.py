"""CSAT: sentiment of Chinese comments (clear cases, negation, contrast) and the per-group summary."""

from __future__ import annotations

import itertools

import pytest

from lingxi.training.csat import csat_summary, emoji_polarity
from lingxi.training.events import Csat, Event, Parse
from lingxi.training.sentiment import sentiment

_ids = itertools.count()


def ev(payload, conversation=None, channel="web") -> Event:
    return Event(event_id=f"c{next(_ids)}", payload=payload, ts=1_800_000_000.0, conversation_id=conversation,
                 channel=channel)


@pytest.mark.parametrize("text, label", [
    ("客服态度很好，问题解决了，谢谢", "positive"),
    ("非常满意👍", "positive"),
    ("垃圾机器人，答非所问", "negative"),
    ("等了半天也没人理，太慢了", "negative"),
    ("没有解决我的问题", "negative"),       # negation inside a phrase
    ("不太好用", "negative"),               # negated positive word
    ("不错", "positive"),                   # a positive phrase that starts with 不
    ("回复很快，但是问题没解决", "negative"),  # the clause after 但是 decides
    ("虽然等了一会，但是最后解决得很好，谢谢", "positive"),
    ("还行吧", "neutral"),
    ("订单号是20231108", "neutral"),
])
def test_sentiment_of_clear_examples(text, label):
    result = sentiment(text)
    assert result.label == label, result


def test_sentiment_explains_itself():
    result = sentiment("不太好用")
    assert result.terms == ("-好用",) and result.score < 0


def test_emoji_polarity():
    assert emoji_polarity("😊") == 1 and emoji_polarity("😡") == -1 and emoji_polarity("🤔") == 0
    assert emoji_polarity("angry") == -1 and emoji_polarity("happy") == 1


def test_csat_summary_per_intent_and_channel():
    events = [
        ev(Parse(text="怎么退款", intent="refund", decision="answer"), conversation="c1"),
        ev(Csat(stars=5, text="退款很快，很满意"), conversation="c1"),
        ev(Parse(text="发票开错了", intent="invoice", decision="answer"), conversation="c2", channel="app"),
        ev(Csat(stars=1, emoji="😡", text="等了半天没人理，问题也没解决"), conversation="c2", channel="app"),
        ev(Csat(stars=2, text="答非所问，发票的问题还是没解决", intent="invoice"), channel="app"),
        ev(Csat(emoji="😊"), conversation="c1"),
    ]
    (overall,) = csat_summary(events)
    assert overall.responses == 4 and overall.rated == 3
    assert overall.mean_stars == pytest.approx(8 / 3, abs=1e-3) and overall.csat == pytest.approx(1 / 3, abs=1e-4)
    assert overall.stars == {"1": 1, "2": 1, "3": 0, "4": 0, "5": 1}
    assert (overall.emoji_positive, overall.emoji_negative) == (1, 1)
    assert overall.sentiment == {"positive": 1, "neutral": 0, "negative": 2}
    assert "发票" in overall.negative_keywords or "解决" in overall.negative_keywords
    assert len(overall.negative_examples) == 2
    per_intent = {s.group: s for s in csat_summary(events, by="intent")}
    assert set(per_intent) == {"refund", "invoice"}  # c1's rating inherits the conversation's intent
    assert per_intent["invoice"].csat == 0.0 and per_intent["refund"].csat == 1.0
    per_channel = {s.group: s.responses for s in csat_summary(events, by="channel")}
    assert per_channel == {"app": 2, "web": 2}
    assert csat_summary([]) == []
