"""Operational insights as pure folds over events: frequent intents and questions, bot rates, article performance.

Every function takes an iterable of events shaped like :class:`lingxi.training.events.Event`
(``type``, ``ts``, ``channel``, ``conversation_id`` and a typed ``payload``) and returns plain
structs, so the same code serves the API (``serving/insights.py``, over the event store),
notebooks and tests (over synthetic lists). Nothing here reads a database.

Definitions (the API documents the same):

* a **message** is a ``parse`` event that was typed (``button`` false); a **fallback** is one the
  dialogue answered with its fallback (``action == "fallback"``) or, for bare ``/v1/parse``
  calls without a dialogue, one the NLU rejected as out of scope;
* **containment** = conversations whose outcome is ``contained`` / conversations with an outcome;
  the **handoff rate** and **abandon rate** likewise (conversations still open are not counted);
* an article's **CTR** = clicks / impressions; its **resolution rate** = resolved / votes (``None``
  without votes); ``flagged`` comes from the KB's quality model (``FeedbackStore.flags``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from lingxi.nlu.normalize import Normalizer

GroupBy = Literal["day", "channel", "tag"]
ALL = "all"
UNKNOWN = "unknown"


def day_of(ts: float, utc_offset_minutes: int = 0) -> str:
    """The calendar day of ``ts`` in the operator's time zone (``utc_offset_minutes``, e.g. 480 for China)."""
    return (datetime.fromtimestamp(ts, UTC) + timedelta(minutes=utc_offset_minutes)).date().isoformat()


def is_message(e: Any) -> bool:
    return e.type == "parse" and not e.payload.button


def is_fallback(e: Any) -> bool:
    p = e.payload
    return p.action == "fallback" or (p.action is None and p.decision == "out_of_scope")


# ------------------------------------------------------------------ frequent intents / questions


class Count(msgspec.Struct, kw_only=True):
    key: str
    count: int
    share: float


class Group(msgspec.Struct, kw_only=True):
    group: str
    total: int
    items: list[Count]


def frequent(events: Iterable[Any], kind: Literal["intent", "question"] = "intent", by: GroupBy | None = None,
             limit: int = 20, utc_offset_minutes: int = 0,
             tags_of: Callable[[str], Iterable[str]] | None = None) -> list[Group]:
    """Most frequent intents (of understood messages) or questions (normalised message text) per group.

    ``by="tag"`` groups an intent under each of its tags (``tags_of(intent)``, e.g. its category);
    a question counts under the tags of the intent it was understood as.
    """
    normalize = Normalizer()
    counts: dict[str, Counter[str]] = {}
    for e in events:
        if not is_message(e):
            continue
        p = e.payload
        if kind == "intent":
            if p.intent is None or p.decision == "out_of_scope":
                continue
            key = p.intent
        else:
            key = normalize(p.text)
            if not key:
                continue
        if by == "day":
            groups: Iterable[str] = (day_of(e.ts, utc_offset_minutes),)
        elif by == "channel":
            groups = (e.channel or UNKNOWN,)
        elif by == "tag":
            tags = list(tags_of(p.intent)) if tags_of is not None and p.intent else []
            groups = tags or (UNKNOWN,)
        else:
            groups = (ALL,)
        for g in groups:
            counts.setdefault(g, Counter())[key] += 1
    out = []
    for g in sorted(counts):
        c = counts[g]
        total = sum(c.values())
        out.append(Group(group=g, total=total, items=[Count(key=k, count=n, share=round(n / total, 4))
                                                      for k, n in c.most_common(limit)]))
    return out


# ------------------------------------------------------------------ containment, handoff, fallback


class Rates(msgspec.Struct, kw_only=True):
    group: str
    conversations: int
    with_outcome: int
    contained: int
    handed_off: int
    abandoned: int
    containment_rate: float | None
    handoff_rate: float | None
    abandon_rate: float | None
    messages: int
    fallbacks: int
    clarifications: int
    fallback_rate: float | None
    clarify_rate: float | None


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


class _Conv:
    __slots__ = ("channel", "day", "intent", "outcome")

    def __init__(self) -> None:
        self.channel: str | None = None
        self.day: str | None = None
        self.intent: str | None = None
        self.outcome: str | None = None


def rates(events: Iterable[Any], by: Literal["channel", "intent", "day"] | None = None,
          utc_offset_minutes: int = 0) -> list[Rates]:
    """Containment, handoff, abandon, fallback and clarification rates, overall or per group.

    A conversation belongs to the channel and day of its first event and to the first intent it
    was understood as; its messages count in the same group.
    """
    convs: dict[str, _Conv] = {}
    loose: list[tuple[str, bool, bool]] = []  # (group, fallback, clarify) of messages outside conversations
    per_conv_msgs: dict[str, list[tuple[bool, bool]]] = {}
    for e in events:
        cid = e.conversation_id
        conv = convs.setdefault(cid, _Conv()) if cid else None
        if conv is not None:
            conv.channel = conv.channel or e.channel
            conv.day = conv.day or day_of(e.ts, utc_offset_minutes)
        if e.type == "outcome" and conv is not None:
            conv.outcome = e.payload.outcome
        elif e.type == "handoff" and conv is not None and conv.outcome is None:
            conv.outcome = "handed_off"  # the outcome event may not be written yet
        elif is_message(e):
            p = e.payload
            clarify = p.action == "clarify" or (p.action is None and p.decision == "clarify")
            flags = (is_fallback(e), clarify)
            if conv is not None:
                if conv.intent is None and p.intent and p.decision != "out_of_scope":
                    conv.intent = p.intent
                per_conv_msgs.setdefault(cid, []).append(flags)
            else:
                group = {"channel": e.channel or UNKNOWN, "day": day_of(e.ts, utc_offset_minutes),
                         "intent": p.intent or UNKNOWN}.get(by or "", ALL)
                loose.append((group, *flags))

    def group_of(c: _Conv) -> str:
        if by == "channel":
            return c.channel or UNKNOWN
        if by == "day":
            return c.day or UNKNOWN
        if by == "intent":
            return c.intent or UNKNOWN
        return ALL

    acc: dict[str, dict[str, int]] = {}

    def bucket(g: str) -> dict[str, int]:
        return acc.setdefault(g, Counter())

    for cid, c in convs.items():
        b = bucket(group_of(c))
        msgs = per_conv_msgs.get(cid, [])
        if not msgs and c.outcome is None:
            continue  # feedback about a conversation we never saw
        b["conversations"] += 1
        if c.outcome:
            b["with_outcome"] += 1
            b[c.outcome] += 1
        for fb, cl in msgs:
            b["messages"] += 1
            b["fallbacks"] += fb
            b["clarifications"] += cl
    for g, fb, cl in loose:
        b = bucket(g)
        b["messages"] += 1
        b["fallbacks"] += fb
        b["clarifications"] += cl
    out = []
    for g in sorted(acc):
        b = acc[g]
        out.append(Rates(group=g, conversations=b["conversations"], with_outcome=b["with_outcome"],
                         contained=b["contained"], handed_off=b["handed_off"], abandoned=b["abandoned"],
                         containment_rate=_ratio(b["contained"], b["with_outcome"]),
                         handoff_rate=_ratio(b["handed_off"], b["with_outcome"]),
                         abandon_rate=_ratio(b["abandoned"], b["with_outcome"]),
                         messages=b["messages"], fallbacks=b["fallbacks"], clarifications=b["clarifications"],
                         fallback_rate=_ratio(b["fallbacks"], b["messages"]),
                         clarify_rate=_ratio(b["clarifications"], b["messages"])))
    return out


# ------------------------------------------------------------------ article performance


class ArticlePerformance(msgspec.Struct, kw_only=True):
    article_id: str
    title: str | None
    impressions: int
    clicks: int
    ctr: float | None
    mean_rank: float | None
    votes: int
    resolved: int
    resolution_rate: float | None
    answered: int  # times the bot replied with the article in a conversation
    flagged: bool
    flag_reason: str | None = None


def article_performance(events: Iterable[Any], flags: dict[str, str] | None = None,
                        titles: Callable[[str], str | None] | None = None) -> list[ArticlePerformance]:
    """Per article: impressions, clicks, CTR, mean rank shown, votes, resolution rate, bot answers, flag.

    ``flags``: article id → reason (from the KB's quality model); ``titles``: id → title or None.
    Sorted by impressions, then bot answers.
    """
    c: dict[str, Counter[str]] = {}
    rank_sum: Counter[str] = Counter()
    for e in events:
        p = e.payload
        article = getattr(p, "article_id", None)
        if not article:
            continue
        if e.type == "impression":
            c.setdefault(article, Counter())["impressions"] += 1
            rank_sum[article] += p.rank
        elif e.type == "click":
            c.setdefault(article, Counter())["clicks"] += 1
        elif e.type == "vote":
            b = c.setdefault(article, Counter())
            b["votes"] += 1
            b["resolved"] += bool(p.resolved)
        elif e.type == "reply":
            c.setdefault(article, Counter())["answered"] += 1
    flags = flags or {}
    out = []
    for a, b in c.items():
        out.append(ArticlePerformance(
            article_id=a, title=titles(a) if titles else None, impressions=b["impressions"], clicks=b["clicks"],
            ctr=_ratio(b["clicks"], b["impressions"]),
            mean_rank=round(rank_sum[a] / b["impressions"], 2) if b["impressions"] else None,
            votes=b["votes"], resolved=b["resolved"], resolution_rate=_ratio(b["resolved"], b["votes"]),
            answered=b["answered"], flagged=a in flags, flag_reason=flags.get(a)))
    out.sort(key=lambda r: (-r.impressions, -r.answered, r.article_id))
    return out
