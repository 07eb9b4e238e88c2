"""The dialogue's event vocabulary: frozen, tagged msgspec structs with stable wire names.

A conversation is an append-only log of these events; everything else (slots, the flow stack,
the fallback count, handoff) is *derived* by folding them with :func:`lingxi.dialogue.state.apply`.
Undo is done by appending (``undo`` / ``rewind``), never by deleting (Rasa's ``UserUtteranceReverted``
and ``ActionReverted``).

Wire names (the ``event`` field) are part of the storage format: never rename one; add a new event
instead.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", omit_defaults=True):
    ts: float  # seconds since the epoch (the request's timestamp when one was given)


# ------------------------------------------------------------------ payload pieces


class Button(msgspec.Struct, frozen=True, omit_defaults=True):
    title: str
    payload: str


class ArticleCard(msgspec.Struct, frozen=True, omit_defaults=True):
    """An article shown to the customer. ``search_id``/``rank``: the search that served it, so the
    customer's clicks and 已解决/未解决 votes count against an impression the server made."""

    id: str
    title: str | None = None
    snippet: str | None = None
    url: str | None = None
    search_id: str | None = None
    rank: int | None = None


class EntityValue(msgspec.Struct, frozen=True, omit_defaults=True):
    entity: str
    value: Any
    text: str
    start: int = 0
    end: int = 0


class ParseSummary(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the dialogue keeps of an NLU parse (not the whole ``ParseResult``)."""

    intent: str | None
    confidence: float
    decision: str
    language: str = "zh"
    ranking: tuple[tuple[str, float], ...] = ()
    entities: tuple[EntityValue, ...] = ()
    rules: tuple[str, ...] = ()
    traditional: bool = False  # written in traditional characters


class Option(msgspec.Struct, frozen=True, omit_defaults=True):
    """A clarification / menu option: ``value`` is an intent name, ``article:<id>`` or a menu category."""

    value: str
    label: str
    payload: str


class ConversationBrief(msgspec.Struct, frozen=True, omit_defaults=True):
    """A short account of one earlier conversation of the same visitor (cross-channel history)."""

    conversation_id: str
    channel: str | None
    started_at: float
    last_at: float
    intents: tuple[str, ...] = ()
    slots: dict[str, Any] = msgspec.field(default_factory=dict)
    last_user_text: str | None = None
    handed_off: bool = False


TraceOutcome = Literal["hit", "skip", "miss", "info"]


class TraceStep(msgspec.Struct, frozen=True, omit_defaults=True):
    """One policy stage's verdict for a turn: why the bot replied the way it did."""

    stage: str
    outcome: TraceOutcome
    detail: str = ""


# ------------------------------------------------------------------ events


class SessionStarted(_Event, frozen=True, tag="session_started"):
    channel: str | None = None
    language: str | None = None
    visitor_id: str | None = None


class ContextUpdated(_Event, frozen=True, tag="context"):
    channel: str | None = None
    language: str | None = None
    tags: tuple[str, ...] | None = None
    visitor_id: str | None = None
    identities: tuple[str, ...] | None = None


class VisitorRecognised(_Event, frozen=True, tag="visitor"):
    visitor_id: str
    history: tuple[ConversationBrief, ...] = ()


class UserUttered(_Event, frozen=True, tag="user"):
    text: str
    payload: str | None = None  # set only when the text was an offered button's payload
    parse: ParseSummary | None = None
    channel: str | None = None
    message_id: str | None = None


class BotUttered(_Event, frozen=True, tag="bot"):
    text: str | None = None
    buttons: tuple[Button, ...] = ()
    article: ArticleCard | None = None
    kind: str = "text"  # text | prompt | menu | clarify | article | fallback | suggestions | handoff | proactive | welcome
    articles: tuple[ArticleCard, ...] = ()  # several cards: suggestions after a fallback


class SlotSet(_Event, frozen=True, tag="slot"):
    name: str
    value: Any
    source: str = "user"  # user | entity | action | client | flow


class FlowStarted(_Event, frozen=True, tag="flow_started"):
    flow: str
    step: str
    reason: str = ""


class FlowStepped(_Event, frozen=True, tag="flow_step"):
    flow: str
    step: str


class FlowEnded(_Event, frozen=True, tag="flow_ended"):
    flow: str
    outcome: Literal["completed", "cancelled", "failed", "interrupted"] = "completed"


class AskRejected(_Event, frozen=True, tag="ask_rejected"):
    flow: str
    step: str
    slot: str


class Digressed(_Event, frozen=True, tag="digressed"):
    """A question on the side was answered while the flow waited at ``step`` (``answered``: what)."""

    flow: str
    step: str
    answered: str


class ActionExecuted(_Event, frozen=True, tag="action"):
    name: str
    ok: bool
    status: int | None = None
    error: str | None = None


class ClarificationAsked(_Event, frozen=True, tag="clarify"):
    kind: Literal["intent", "menu"]
    question: str
    options: tuple[Option, ...]
    articles: tuple[ArticleCard, ...] = ()  # the articles among the options, with the search that offered them


class ClarificationResolved(_Event, frozen=True, tag="clarified"):
    value: str
    via: Literal["button", "text", "ordinal", "parse"]


class TurnDecided(_Event, frozen=True, tag="decision"):
    decision: str
    intent: str | None = None
    trace: tuple[TraceStep, ...] = ()
    human_request: bool = False  # the customer explicitly asked for a human this turn


class HandedOff(_Event, frozen=True, tag="handoff"):
    reason: str
    mode: Literal["live", "message"] = "live"
    skill_group: str = "general"
    priority: str = "normal"
    summary: str = ""
    routing: tuple[str, ...] = ()


class HandoffReleased(_Event, frozen=True, tag="release"):
    by: str = "agent"
    note: str = ""


class AgentUttered(_Event, frozen=True, tag="agent"):
    """A human agent's message to the customer (from the console inbox or a chat platform)."""

    text: str
    agent: str = "agent"
    message_id: str | None = None


class BehaviourObserved(_Event, frozen=True, tag="behaviour"):
    kind: str
    page: str | None = None
    seconds: float | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class TriggerFired(_Event, frozen=True, tag="trigger"):
    trigger: str


class Restarted(_Event, frozen=True, tag="restart"):
    pass


class UserUtteranceReverted(_Event, frozen=True, tag="undo"):
    """Undo everything back to (and including) the latest user message."""


class ActionReverted(_Event, frozen=True, tag="rewind"):
    """Undo the latest bot message and what followed it."""


Event = (
    SessionStarted | ContextUpdated | VisitorRecognised | UserUttered | BotUttered | SlotSet | FlowStarted
    | FlowStepped | FlowEnded | AskRejected | Digressed | ActionExecuted | ClarificationAsked | ClarificationResolved
    | TurnDecided | HandedOff | HandoffReleased | AgentUttered | BehaviourObserved | TriggerFired | Restarted
    | UserUtteranceReverted | ActionReverted
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)
_list_decoder = msgspec.json.Decoder(list[Event])


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    return _decoder.decode(data)


def decode_events(data: bytes | str) -> list[Event]:
    return _list_decoder.decode(data)


def event_name(event: Event) -> str:
    return type(event).__struct_config__.tag  # type: ignore[attr-defined]
