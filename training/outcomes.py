"""Conversation outcomes: contained, handed off or abandoned, as ``outcome`` events in the event store.

A handoff is recorded the moment it happens (``serving/events.py``). Whether the bot *contained* a
conversation or the customer *abandoned* it is only known once the conversation has gone quiet:
:func:`close_idle_conversations` looks at conversations silent for ``idle_s`` that have no outcome
yet and decides from their last events —

* **abandoned**: the bot's last move was a question the customer never answered (a clarification,
  a flow's prompt, a menu) or a fallback ("I did not understand");
* **contained**: anything else (the bot answered and the customer had nothing more to ask).

Clients that know better (a CSAT form, a closed ticket) may post their own ``outcome`` event; a
conversation with any outcome is left alone. Ids are ``outcome:<conversation>``, so a sweep that
runs twice — or on two replicas — records each outcome once.
"""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import case, func, select

from .events import Event, EventStore, Outcome, Parse, Reply, events_t

OPEN_QUESTIONS = frozenset({"clarify", "prompt", "menu", "fallback"})  # bot reply kinds awaiting the customer
_CONVERSATION_TYPES = ("parse", "reply", "handoff", "clarification")


def _outcome_id(cid: str) -> str:
    key = cid if len(cid) <= 110 else hashlib.sha256(cid.encode()).hexdigest()[:32]
    return f"outcome:{key}"


def classify(events: list) -> str:
    """``handed_off`` | ``abandoned`` | ``contained`` from one conversation's events (oldest first)."""
    if any(e.type == "handoff" for e in events):
        return "handed_off"
    last_reply = next((e.payload for e in reversed(events) if isinstance(e.payload, Reply)), None)
    last_parse = next((e.payload for e in reversed(events) if isinstance(e.payload, Parse)), None)
    if last_reply is not None and last_reply.kind in OPEN_QUESTIONS:
        return "abandoned"
    if last_parse is not None and last_parse.action in ("fallback", "clarify"):
        return "abandoned"
    return "contained"


def close_idle_conversations(store: EventStore, idle_s: float = 1800.0, lookback_s: float = 7 * 86_400,
                             now: float | None = None, limit: int = 1000) -> dict[str, int]:
    """Record the outcome of conversations quiet for ``idle_s`` (active within ``lookback_s``); counts per outcome."""
    now = time.time() if now is None else now
    last = func.max(events_t.c.ts)
    has_outcome = func.sum(case((events_t.c.type == "outcome", 1), else_=0))
    q = (select(events_t.c.tenant, events_t.c.conversation_id, last.label("last_ts"))
         .where(events_t.c.conversation_id.is_not(None), events_t.c.ts >= now - lookback_s)
         .group_by(events_t.c.tenant, events_t.c.conversation_id)
         .having(last < now - idle_s, has_outcome == 0).limit(limit))
    with store.reader.connect() as conn:
        quiet = conn.execute(q).all()
    counts: dict[str, int] = {}
    new: list[Event] = []
    for tenant, cid, last_ts in quiet:
        history = store.query(tenant, conversation_id=cid, types=_CONVERSATION_TYPES)
        if not history:  # only feedback about it: nothing the bot did to judge
            continue
        outcome = classify(history)
        ref = history[-1]
        new.append(Event(event_id=_outcome_id(cid), ts=float(last_ts), tenant=tenant, bot=ref.bot,
                         conversation_id=cid, visitor_id=ref.visitor_id, channel=ref.channel,
                         model_version=ref.model_version,
                         payload=Outcome(outcome=outcome, turns=sum(e.type == "parse" for e in history))))
    for (status, _), e in zip(store.append(new), new, strict=True):
        if status == "accepted":
            counts[e.payload.outcome] = counts.get(e.payload.outcome, 0) + 1  # type: ignore[union-attr]
    return counts
