"""Behaviour triggers: frontend events (page views, dwell, idle, cart, order status) → proactive messages.

A trigger fires when the event kind matches, the page matches its regex, the dwell/idle seconds
reach ``min_seconds``, the event's data has an accepted value for every listed key, the rule
conditions (channel, visitor tags, time windows) hold, and — with ``without_action`` — the visitor
has done nothing (no message, no cart or order action) since the page was opened. Each trigger
fires once per session unless ``once_per_session: false``, then at most once per ``cooldown_s``.
At most one trigger fires per event; the bot stays silent while a human has the conversation.
"""

from __future__ import annotations

import re

from lingxi.datasets.dialogue_files import TriggerSpec
from lingxi.nlu.rules import conditions_hold
from lingxi.nlu.texts import pick_text

from .events import BehaviourObserved, Button, TriggerFired
from .turn import Turn


def _matches(trigger: TriggerSpec, event: BehaviourObserved, turn: Turn) -> str | None:
    """None when the trigger fires, else why not."""
    state = turn.state
    if trigger.event != event.kind:
        return "other event"
    page = event.page or state.page
    if trigger.page and not (page and re.search(trigger.page, page)):
        return f"page {page!r} does not match {trigger.page!r}"
    if trigger.min_seconds is not None and (event.seconds or 0) < trigger.min_seconds:
        return f"{event.seconds or 0:g}s < {trigger.min_seconds:g}s"
    for key, accepted in trigger.data.items():
        if event.data.get(key) not in accepted:
            return f"data.{key}={event.data.get(key)!r} not in {accepted}"
    if trigger.conditions and not conditions_hold(trigger.conditions, turn.situation.rule_context):
        return "conditions (channel / tags / time) do not hold"
    if trigger.without_action:
        since = state.page_since if trigger.page else None
        last = state.last_activity_at
        if since is not None and last is not None and last > since:
            return "the visitor acted since opening the page"
        if since is None and last is not None and event.seconds is not None and turn.ts - last < event.seconds:
            return "the visitor acted within the idle period"
    fired = state.fired.get(trigger.id)
    if fired is not None:
        if trigger.once_per_session:
            return "already fired in this session"
        if trigger.cooldown_s is not None and turn.ts - fired < trigger.cooldown_s:
            return f"cooling down ({turn.ts - fired:.0f}s < {trigger.cooldown_s:g}s)"
    return None


def evaluate(turn: Turn, event: BehaviourObserved, start_flow=None) -> bool:
    """Fire the first matching trigger for ``event`` (already appended). True when one fired."""
    if turn.state.handoff is not None:
        turn.note("triggers", "skip", "a human has the conversation: no proactive message")
        return False
    candidates = [t for t in turn.spec.triggers if t.event == event.kind]
    if not candidates:
        turn.note("triggers", "miss", f"no trigger for {event.kind!r} events")
        return False
    for trigger in candidates:
        why_not = _matches(trigger, event, turn)
        if why_not is not None:
            turn.note("triggers", "miss", f"{trigger.id}: {why_not}")
            continue
        turn.emit(TriggerFired(ts=turn.ts, trigger=trigger.id))
        buttons = [Button(pick_text(c.label, turn.language) or c.value, c.value) for c in trigger.buttons]
        turn.say(turn.render(trigger.say), buttons, kind="proactive")
        turn.note("triggers", "hit", f"{trigger.id} fired")
        if trigger.start_flow and start_flow is not None:
            start_flow(turn, trigger.start_flow)
        return True
    return False
