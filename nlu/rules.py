"""Keyword trigger rules: exact / contains / regex, with priorities and context conditions.

``contains`` patterns of all rules go into one Aho–Corasick automaton (pyahocorasick), so matching
costs one pass over the message however many thousands of keywords a shop configures. Patterns are
normalised exactly like messages (full-width, traditional, case), so ``APP登錄`` triggers a rule
written as ``app登录``. Latin keywords only match on word boundaries (``app`` does not fire inside
``happy``); Chinese keywords match anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

import ahocorasick
import msgspec

from lingxi.datasets.domain import WEEKDAYS, RuleConditions, RuleSpec

from .texts import pick_text

_WORDCHAR = re.compile(r"[a-z0-9]", re.IGNORECASE)


@dataclass(frozen=True)
class RuleContext:
    """What the request tells us about the situation; rules may condition on it."""

    channel: str | None = None
    visitor_tags: frozenset[str] = frozenset()
    timestamp: datetime | None = None
    language: str | None = None  # picks a rule's reply when it is given per language


class RuleMatch(msgspec.Struct, frozen=True):
    """One triggered rule; also the wire shape of ``matched_rules`` in a parse result."""

    rule_id: str
    match: str
    pattern: str
    start: int
    end: int
    priority: int
    response: str | None = None
    article: str | None = None
    intent: str | None = None


def _parse_hhmm(value: str) -> time:
    if value == "24:00":
        return time(23, 59, 59, 999999)
    hour, minute = value.split(":")
    return time(int(hour), int(minute))


def conditions_hold(cond: RuleConditions | None, ctx: RuleContext, now: datetime | None = None) -> bool:
    """True when every given condition holds; an absent condition always holds."""
    if cond is None:
        return True
    if cond.channels is not None and (ctx.channel or "") not in cond.channels:
        return False
    if cond.visitor_tags_any is not None and not (ctx.visitor_tags & set(cond.visitor_tags_any)):
        return False
    if cond.visitor_tags_all is not None and not set(cond.visitor_tags_all) <= ctx.visitor_tags:
        return False
    if cond.time_windows:
        moment = ctx.timestamp or now or datetime.now(ZoneInfo(cond.timezone))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(cond.timezone))
        local = moment.astimezone(ZoneInfo(cond.timezone))
        day = WEEKDAYS[local.weekday()]
        clock = local.time()
        if not any(_in_window(day, clock, w.days, _parse_hhmm(w.start), _parse_hhmm(w.end))
                   for w in cond.time_windows):
            return False
    return True


def _in_window(day: str, clock: time, days: Sequence[str], start: time, end: time) -> bool:
    if start <= end:
        return day in days and start <= clock < end
    # overnight window (22:00–06:00): the evening part belongs to the listed day
    prev_day = WEEKDAYS[(WEEKDAYS.index(day) - 1) % 7]
    return (day in days and clock >= start) or (prev_day in days and clock < end)


class KeywordRules:
    """Compiled rule set. ``match(text, ctx)`` → matches ordered by priority (highest first)."""

    def __init__(self, rules: Sequence[RuleSpec], normalize: Callable[[str], str] = lambda s: s) -> None:
        self.rules = {r.id: r for r in rules}
        self._normalize = normalize
        self._exact: dict[str, list[tuple[str, str]]] = {}
        self._regex: list[tuple[str, str, re.Pattern[str]]] = []
        self._automaton = ahocorasick.Automaton()
        has_keywords = False
        for rule in rules:
            for raw in rule.patterns:
                if rule.match == "regex":
                    self._regex.append((rule.id, raw, re.compile(raw, re.IGNORECASE)))
                    continue
                pattern = normalize(raw)
                if not pattern:
                    continue
                if rule.match == "exact":
                    self._exact.setdefault(pattern, []).append((rule.id, raw))
                else:
                    entries = self._automaton.get(pattern, [])
                    if not entries:
                        self._automaton.add_word(pattern, entries)
                    entries.append((rule.id, raw, pattern))
                    has_keywords = True
        if has_keywords:
            self._automaton.make_automaton()
        self._has_keywords = has_keywords

    def __len__(self) -> int:
        return len(self.rules)

    def _hits(self, text: str) -> list[tuple[str, str, str, int, int]]:
        hits: list[tuple[str, str, str, int, int]] = []
        for rule_id, raw in self._exact.get(text, []):
            hits.append((rule_id, "exact", raw, 0, len(text)))
        if self._has_keywords:
            for end_index, entries in self._automaton.iter(text):
                for rule_id, raw, pattern in entries:
                    start, end = end_index - len(pattern) + 1, end_index + 1
                    if _WORDCHAR.match(pattern[0]) and start > 0 and _WORDCHAR.match(text[start - 1]):
                        continue
                    if _WORDCHAR.match(pattern[-1]) and end < len(text) and _WORDCHAR.match(text[end]):
                        continue
                    hits.append((rule_id, "contains", raw, start, end))
        for rule_id, raw, regex in self._regex:
            found = regex.search(text)
            if found:
                hits.append((rule_id, "regex", raw, found.start(), found.end()))
        return hits

    def match(self, text: str, ctx: RuleContext | None = None, now: datetime | None = None) -> list[RuleMatch]:
        """Rules triggered by already-normalised ``text`` whose conditions hold; one match per rule."""
        ctx = ctx or RuleContext()
        seen: dict[str, RuleMatch] = {}
        for rule_id, kind, raw, start, end in self._hits(text):
            if rule_id in seen:
                continue
            rule = self.rules[rule_id]
            if not conditions_hold(rule.conditions, ctx, now):
                continue
            seen[rule_id] = RuleMatch(rule_id, kind, raw, start, end, rule.priority,
                                      pick_text(rule.response, ctx.language) or None, rule.article, rule.intent)
        return sorted(seen.values(), key=lambda m: (-m.priority, m.start, m.rule_id))
