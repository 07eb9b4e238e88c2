"""Handoff to a human: routing (skill group, priority), a short extractive summary, and the payload.

Routing rules (``routing:`` in the dialogue config) are checked in order. The first matching rule
that names a ``skill_group`` decides the group; the priority is the highest ``priority`` among the
matching rules, raised one level per matching ``priority_boost`` (VIP, angry, repeat contact),
capped at ``urgent``. The names of the matching rules go into the payload so an operator can see
why a conversation landed where it did.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lingxi.datasets.dialogue_files import PRIORITIES, DialogueSpec, RouteRule

from .events import BotUttered, Event, UserUttered
from .state import DialogueState
from .turn import HandoffPayload, TranscriptLine


@dataclass(frozen=True)
class Route:
    skill_group: str
    priority: str
    matched: tuple[str, ...]


def _rule_holds(rule: RouteRule, *, intents: set[str], categories: set[str], texts: str, tags: set[str],
                channel: str | None, reason: str, repeat_hours: float | None) -> bool:
    w = rule.when
    if w.intents_any is not None and not intents & set(w.intents_any) and not (
            w.keywords_any and any(k.lower() in texts for k in w.keywords_any)):
        return False
    if w.intents_any is None and w.keywords_any is not None and not any(k.lower() in texts for k in w.keywords_any):
        return False
    if w.categories_any is not None and not categories & set(w.categories_any):
        return False
    if w.visitor_tags_any is not None and not tags & set(w.visitor_tags_any):
        return False
    if w.channels is not None and (channel or "") not in w.channels:
        return False
    if w.reasons is not None and reason not in w.reasons:
        return False
    return not (w.repeat_contact_hours is not None and (repeat_hours is None or repeat_hours > w.repeat_contact_hours))


def route(spec: DialogueSpec, state: DialogueState, user_texts: Sequence[str], reason: str, now: float,
          category_of: Callable[[str], str | None], base_priority: str | None = None,
          skill_group: str | None = None, priority: str | None = None) -> Route:
    """Skill group and priority for a handoff. Explicit ``skill_group``/``priority`` (a flow step's)
    take precedence over the rules; boosts still apply to the priority."""
    intents = {name for name, _ in state.recent_intents}
    categories = {c for c in (category_of(i) for i in intents) if c}
    # the latest intent's category decides first: order the intents newest first
    texts = "\n".join(user_texts).lower()
    last_seen = max((b.last_at for b in state.history), default=None)
    repeat_hours = (now - last_seen) / 3600 if last_seen is not None else None
    group = skill_group
    level = PRIORITIES.index(priority or base_priority or spec.handoff.default_priority)
    boosts = 0
    matched: list[str] = []
    for rule in spec.routing:
        if not _rule_holds(rule, intents=intents, categories=categories, texts=texts, tags=set(state.tags),
                           channel=state.channel, reason=reason, repeat_hours=repeat_hours):
            continue
        matched.append(rule.id)
        if rule.skill_group and group is None:
            group = rule.skill_group
        if rule.priority:
            level = max(level, PRIORITIES.index(rule.priority))
        boosts += rule.priority_boost
    level = min(level + boosts, len(PRIORITIES) - 1)
    return Route(group or spec.handoff.default_skill_group, PRIORITIES[level], tuple(matched))


_GREETINGS = re.compile(r"^(你好|您好|在吗|hi|hello|谢谢|好的|嗯|ok)[!！。.]*$", re.IGNORECASE)


def summarize(events: Sequence[Event], label_of: Callable[[str | None], str], max_chars: int = 120) -> str:
    """Extractive: the customer's own most informative sentences, prefixed with the main topic.

    Sentences score by what an agent needs first: an entity (order number, phone) +2, a confidently
    recognised intent +2, a useful length +1; greetings, button clicks and handoff requests score low.
    The best two are kept in their original order.
    """
    users = [e for e in events if isinstance(e, UserUttered)]
    if not users:
        return ""
    scored: list[tuple[float, int, str]] = []
    topic = None
    for i, u in enumerate(users):
        text = u.text.strip()
        p = u.parse
        score = 0.0
        if p and p.entities:
            score += 2
        if p and p.intent and p.confidence >= 0.5 and p.intent != "human_agent":
            score += 2
            if topic is None and p.intent not in ("greet", "thanks", "goodbye"):
                topic = p.intent
        if 6 <= len(text) <= 80:
            score += 1
        if _GREETINGS.match(text) or u.payload or (p and p.intent == "human_agent") or len(text) < 3:
            score -= 3
        scored.append((score, i, text))
    best = sorted(sorted(scored, key=lambda s: (-s[0], -s[1]))[:2], key=lambda s: s[1])
    body = "；".join(t for s, _, t in best if s > 0) or users[-1].text.strip()
    prefix = f"【{label_of(topic)}】" if topic else ""
    out = prefix + body
    return out if len(out) <= max_chars else out[: max_chars - 1] + "…"


def transcript(events: Sequence[Event], turns: int) -> list[TranscriptLine]:
    lines: list[TranscriptLine] = []
    for e in events:
        if isinstance(e, UserUttered):
            lines.append(TranscriptLine("user", e.text, e.ts, e.parse.intent if e.parse else None))
        elif isinstance(e, BotUttered) and (e.text or e.article):
            text = e.text or ""
            if e.article is not None:
                text = (text + " " if text else "") + f"[文章] {e.article.title or e.article.id}"
            lines.append(TranscriptLine("bot", text, e.ts))
    users_seen = 0
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].role == "user":
            users_seen += 1
            if users_seen > turns:
                return lines[i + 1:]
    return lines


def build_payload(*, reason: str, mode: str, skill_group: str, priority: str, summary: str, routing: Sequence[str],
                  state: DialogueState, events: Sequence[Event], turns: int, is_open: bool) -> HandoffPayload:
    seen: dict[str, float] = {}
    for name, conf in state.recent_intents:
        seen[name] = max(conf, seen.get(name, 0.0))
    intents: list[dict[str, Any]] = [{"intent": k, "confidence": round(v, 4)} for k, v in seen.items()]
    return HandoffPayload(
        reason=reason, mode=mode, skill_group=skill_group, priority=priority, summary=summary,
        transcript=transcript(events, turns), intents=intents, slots=dict(state.slots),
        visitor={"id": state.visitor_id, "channel": state.channel, "tags": list(state.tags)},
        routing=list(routing), history=list(state.history), business_hours_open=is_open,
    )
