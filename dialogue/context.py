"""The situation a message arrives in: business hours and holidays, workday, channel, visitor tags.

Time windows reuse the keyword rules' condition logic (:func:`lingxi.nlu.rules.conditions_hold`),
so a window written for a rule and one written for business hours mean exactly the same thing.
On top of it: a holiday calendar (closed all day) and make-up working days (调休).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from lingxi.datasets.dialogue_files import ContextRule, ContextWhen, DialogueSpec
from lingxi.datasets.domain import RuleConditions
from lingxi.nlu.rules import RuleContext, conditions_hold


@dataclass(frozen=True)
class Situation:
    channel: str | None
    tags: frozenset[str]
    moment: datetime  # aware, in the dialogue's timezone
    open: bool  # humans are on duty
    workday: bool

    @property
    def rule_context(self) -> RuleContext:
        return RuleContext(self.channel, self.tags, self.moment)


def local_time(spec: DialogueSpec, ts: float) -> datetime:
    return datetime.fromtimestamp(ts, ZoneInfo(spec.timezone))


def is_workday(spec: DialogueSpec, moment: datetime) -> bool:
    day = moment.date().isoformat()
    if day in spec.business_hours.workdays:
        return True
    if day in spec.business_hours.holidays:
        return False
    return moment.weekday() < 5


def is_open(spec: DialogueSpec, moment: datetime) -> bool:
    bh = spec.business_hours
    day = moment.date().isoformat()
    if day in bh.holidays and day not in bh.workdays:
        return False
    cond = RuleConditions(time_windows=bh.windows, timezone=spec.timezone)
    return conditions_hold(cond, RuleContext(timestamp=moment))


def situation(spec: DialogueSpec, channel: str | None, tags: frozenset[str] | tuple[str, ...], ts: float) -> Situation:
    moment = local_time(spec, ts)
    return Situation(channel, frozenset(tags), moment, is_open(spec, moment), is_workday(spec, moment))


def when_holds(when: ContextWhen, sit: Situation) -> bool:
    if when.visitor_tags_none is not None and sit.tags & set(when.visitor_tags_none):
        return False
    if when.workday is not None and when.workday != sit.workday:
        return False
    if when.business_hours is not None and (when.business_hours == "open") != sit.open:
        return False
    cond = RuleConditions(channels=when.channels, visitor_tags_any=when.visitor_tags_any,
                          time_windows=when.time_windows)
    return conditions_hold(cond, sit.rule_context)


def context_rule(spec: DialogueSpec, sit: Situation) -> ContextRule | None:
    """The first context rule whose conditions hold."""
    return next((r for r in spec.context_rules if when_holds(r.when, sit)), None)
