"""CSAT summary: stars, emoji and comment text after a conversation, overall or per intent / channel.

A ``csat`` event carries ``stars`` (1–5), an ``emoji`` and/or a ``text`` comment, optionally the
``intent`` it was about. When it has no intent, the conversation's first understood intent (from
its ``parse`` events in the same stream) stands in. Per group the summary gives the star
distribution, mean and the CSAT score (share of 4–5 stars), the emoji counts with their polarity,
the comments' sentiment (:mod:`~lingxi.training.sentiment`), keywords of all comments and of the
negative ones (jieba TF-IDF or TextRank: what unhappy customers talk about) and a few negative
examples to read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Literal

import msgspec

from .gaps import keywords_of
from .insights import ALL, UNKNOWN, is_message
from .sentiment import SentimentResult, sentiment

POSITIVE_EMOJI = frozenset("😀😃😄😁😊🙂😍🥰👍👏💯❤🌹🙏")
NEGATIVE_EMOJI = frozenset("😡😠😤😞😢😭👎💩🙄😒😣😫")
EMOJI_NAMES = {"happy": 1, "smile": 1, "like": 1, "thumbs_up": 1, "good": 1, "love": 1, "neutral": 0, "meh": 0,
               "ok": 0, "sad": -1, "angry": -1, "bad": -1, "thumbs_down": -1, "dislike": -1}


def emoji_polarity(emoji: str) -> int:
    """+1 / 0 / -1 for an emoji character or a widget's name for one ("happy", "angry" …)."""
    if emoji.lower() in EMOJI_NAMES:
        return EMOJI_NAMES[emoji.lower()]
    chars = {c for c in emoji if not c.isspace()}
    if chars & POSITIVE_EMOJI and not chars & NEGATIVE_EMOJI:
        return 1
    if chars & NEGATIVE_EMOJI and not chars & POSITIVE_EMOJI:
        return -1
    return 0


class CsatSummary(msgspec.Struct, kw_only=True):
    group: str
    responses: int
    rated: int  # responses with stars
    mean_stars: float | None
    csat: float | None  # share of 4–5 stars among rated
    stars: dict[str, int]  # "1".."5" → count
    emoji: dict[str, int]
    emoji_positive: int
    emoji_negative: int
    comments: int
    sentiment: dict[str, int]  # positive / neutral / negative → count
    keywords: list[str]
    negative_keywords: list[str]
    negative_examples: list[str]


def csat_summary(events: Iterable[Any], by: Literal["intent", "channel"] | None = None,
                 analyzer: Callable[[str], SentimentResult] = sentiment, keywords: int = 8,
                 keyword_method: str = "tfidf", examples: int = 3) -> list[CsatSummary]:
    """One summary per group (``by`` None: one overall), groups sorted by name."""
    first_intent: dict[str, str] = {}
    responses: list[tuple[Any, str | None]] = []
    for e in events:
        if is_message(e) and e.conversation_id and e.conversation_id not in first_intent:
            p = e.payload
            if p.intent and p.decision != "out_of_scope":
                first_intent[e.conversation_id] = p.intent
        elif e.type == "csat":
            responses.append((e, e.payload.intent))
    groups: dict[str, list[Any]] = {}
    for e, intent in responses:
        if by == "intent":
            g = intent or first_intent.get(e.conversation_id or "", UNKNOWN)
        elif by == "channel":
            g = e.channel or UNKNOWN
        else:
            g = ALL
        groups.setdefault(g, []).append(e)
    out = []
    for g in sorted(groups):
        items = [e.payload for e in groups[g]]
        stars = [p.stars for p in items if p.stars is not None]
        emoji = Counter(p.emoji for p in items if p.emoji)
        comments = [p.text.strip() for p in items if p.text and p.text.strip()]
        judged = [(c, analyzer(c)) for c in comments]
        negative = [c for c, s in judged if s.label == "negative"]
        out.append(CsatSummary(
            group=g, responses=len(items), rated=len(stars),
            mean_stars=round(sum(stars) / len(stars), 3) if stars else None,
            csat=round(sum(s >= 4 for s in stars) / len(stars), 4) if stars else None,
            stars={str(k): sum(s == k for s in stars) for k in range(1, 6)},
            emoji=dict(emoji.most_common()),
            emoji_positive=sum(n for e, n in emoji.items() if emoji_polarity(e) > 0),
            emoji_negative=sum(n for e, n in emoji.items() if emoji_polarity(e) < 0),
            comments=len(comments),
            sentiment={label: sum(s.label == label for _, s in judged) for label in ("positive", "neutral", "negative")},
            keywords=keywords_of(comments, keywords, keyword_method) if comments else [],
            negative_keywords=keywords_of(negative, keywords, keyword_method) if negative else [],
            negative_examples=negative[:examples]))
    return out
