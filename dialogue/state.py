"""Derived conversation state and the pure reducer that folds events into it.

``apply(state, event) -> state`` never mutates its input and touches nothing but its arguments, so
``fold(events)`` over a stored log reproduces exactly the state the bot acted on (bug reports and
eval replays are deterministic). Only events change state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from .events import (
    ActionExecuted,
    ActionReverted,
    ArticleCard,
    AskRejected,
    BehaviourObserved,
    BotUttered,
    ClarificationAsked,
    ClarificationResolved,
    ContextUpdated,
    ConversationBrief,
    Digressed,
    Event,
    FlowEnded,
    FlowStarted,
    FlowStepped,
    HandedOff,
    HandoffReleased,
    Option,
    Restarted,
    SessionStarted,
    SlotSet,
    TriggerFired,
    TurnDecided,
    UserUtteranceReverted,
    UserUttered,
    VisitorRecognised,
)

RECENT_INTENTS = 20
RECENT_PAGES = 5
NON_ACTIONS = {"page_view", "dwell", "idle"}  # behaviour kinds that are not the visitor *doing* something


class FlowFrame(msgspec.Struct, frozen=True, omit_defaults=True):
    flow: str
    step: str
    retries: int = 0
    digressions: int = 0  # side questions answered while waiting at this step
    last_digression: str | None = None


class PendingClarification(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: str  # intent | menu
    question: str
    options: tuple[Option, ...]
    articles: tuple[ArticleCard, ...] = ()


class HandoffState(msgspec.Struct, frozen=True, omit_defaults=True):
    reason: str
    mode: str
    skill_group: str
    priority: str
    since: float


class DialogueState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    conversation_id: str
    created_at: float | None = None
    visitor_id: str | None = None
    channel: str | None = None
    language: str = "zh"
    tags: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()  # "kind:value" of the identities this conversation was linked with
    slots: dict[str, Any] = msgspec.field(default_factory=dict)
    flow_stack: tuple[FlowFrame, ...] = ()
    clarification: PendingClarification | None = None
    fallback_count: int = 0
    handoff: HandoffState | None = None
    handoffs: int = 0
    user_turns: int = 0
    session_turns: int = 0
    session_started_at: float | None = None
    last_user_at: float | None = None
    last_event_at: float | None = None
    offered: tuple[str, ...] = ()  # button payloads offered since the last user message
    recent_intents: tuple[tuple[str, float], ...] = ()  # (intent, confidence), oldest first
    human_requests: int = 0  # explicit requests for a human in this session
    fired: dict[str, float] = msgspec.field(default_factory=dict)  # trigger id -> when (this session)
    page: str | None = None
    page_since: float | None = None
    recent_pages: tuple[str, ...] = ()  # the last pages viewed, newest last (personalised article ranking)
    recent_products: tuple[str, ...] = ()  # the last products viewed or added to the cart
    traditional: bool = False  # the customer's last message was in traditional characters
    last_activity_at: float | None = None  # a message or a non-passive behaviour event
    cart_items: int = 0
    history: tuple[ConversationBrief, ...] = ()
    last_action_error: str | None = None

    @property
    def active_flow(self) -> FlowFrame | None:
        return self.flow_stack[-1] if self.flow_stack else None


def initial_state(conversation_id: str) -> DialogueState:
    return DialogueState(conversation_id=conversation_id)


def _replace(state: DialogueState, **changes: Any) -> DialogueState:
    return msgspec.structs.replace(state, **changes)


def _top_replaced(state: DialogueState, frame: FlowFrame) -> tuple[FlowFrame, ...]:
    return (*state.flow_stack[:-1], frame)


def apply(state: DialogueState, event: Event) -> DialogueState:  # noqa: C901 - one case per event
    """The reducer: the state after ``event``."""
    ts = event.ts
    if state.created_at is None:
        state = _replace(state, created_at=ts)
    state = _replace(state, last_event_at=ts)
    match event:
        case SessionStarted():
            return _replace(
                state, channel=event.channel or state.channel, language=event.language or state.language,
                visitor_id=event.visitor_id or state.visitor_id, flow_stack=(), clarification=None,
                fallback_count=0, session_turns=0, session_started_at=ts, offered=(), human_requests=0,
                fired={}, page=None, page_since=None, last_activity_at=ts)
        case ContextUpdated():
            return _replace(
                state,
                channel=event.channel if event.channel is not None else state.channel,
                language=event.language if event.language is not None else state.language,
                tags=event.tags if event.tags is not None else state.tags,
                visitor_id=event.visitor_id if event.visitor_id is not None else state.visitor_id,
                identities=event.identities if event.identities is not None else state.identities)
        case VisitorRecognised():
            return _replace(state, visitor_id=event.visitor_id, history=event.history)
        case UserUttered():
            intents = state.recent_intents
            if event.parse and event.parse.intent:
                intents = (*intents, (event.parse.intent, event.parse.confidence))[-RECENT_INTENTS:]
            return _replace(
                state, user_turns=state.user_turns + 1, session_turns=state.session_turns + 1,
                last_user_at=ts, last_activity_at=ts, offered=(), clarification=None, recent_intents=intents,
                language=event.parse.language if event.parse else state.language,
                traditional=event.parse.traditional if event.parse else state.traditional,
                channel=event.channel or state.channel)
        case BotUttered():
            payloads = tuple(b.payload for b in event.buttons)
            return _replace(state, offered=(*state.offered, *payloads)) if payloads else state
        case SlotSet():
            slots = dict(state.slots)
            if event.value is None:
                slots.pop(event.name, None)
            else:
                slots[event.name] = event.value
            return _replace(state, slots=slots)
        case FlowStarted():
            return _replace(state, flow_stack=(*state.flow_stack, FlowFrame(event.flow, event.step)),
                            clarification=None)
        case FlowStepped():
            top = state.active_flow
            if top is None or top.flow != event.flow:
                return state
            return _replace(state, flow_stack=_top_replaced(state, FlowFrame(event.flow, event.step)))
        case AskRejected():
            top = state.active_flow
            if top is None or top.flow != event.flow:
                return state
            return _replace(state, flow_stack=_top_replaced(
                state, msgspec.structs.replace(top, retries=top.retries + 1)))
        case Digressed():
            top = state.active_flow
            if top is None or top.flow != event.flow:
                return state
            return _replace(state, flow_stack=_top_replaced(
                state, msgspec.structs.replace(top, digressions=top.digressions + 1, last_digression=event.answered)))
        case FlowEnded():
            stack = list(state.flow_stack)
            for i in range(len(stack) - 1, -1, -1):  # the named flow and anything pushed above it
                if stack[i].flow == event.flow:
                    del stack[i:]
                    break
            return _replace(state, flow_stack=tuple(stack))
        case ActionExecuted():
            return _replace(state, last_action_error=None if event.ok else (event.error or "failed"))
        case ClarificationAsked():
            return _replace(state, clarification=PendingClarification(event.kind, event.question, event.options,
                                                                      event.articles))
        case ClarificationResolved():
            return _replace(state, clarification=None)
        case TurnDecided():
            if event.decision == "fallback":
                count = state.fallback_count + 1
            elif event.decision in ("silent", "none", "proactive"):  # not an answer to the customer
                count = state.fallback_count
            else:
                count = 0
            human = state.human_requests + (1 if event.human_request else 0)
            return _replace(state, fallback_count=count, human_requests=human)
        case HandedOff():
            if event.mode == "message":
                return _replace(state, handoffs=state.handoffs + 1)
            return _replace(state, handoff=HandoffState(event.reason, event.mode, event.skill_group,
                                                        event.priority, ts),
                            handoffs=state.handoffs + 1, flow_stack=(), clarification=None)
        case HandoffReleased():
            return _replace(state, handoff=None, fallback_count=0, human_requests=0)
        case BehaviourObserved():
            changes: dict[str, Any] = {}
            if event.page is not None and event.page != state.page:
                pages = (*(p for p in state.recent_pages if p != event.page), event.page)[-RECENT_PAGES:]
                changes.update(page=event.page, page_since=ts, recent_pages=pages)
            product = event.data.get("product_id") or event.data.get("product") or event.data.get("sku")
            if isinstance(product, str | int) and str(product).strip():
                product = str(product)[:128]
                changes["recent_products"] = (*(p for p in state.recent_products if p != product),
                                              product)[-RECENT_PAGES:]
            if event.kind not in NON_ACTIONS:
                changes["last_activity_at"] = ts
            if event.kind == "add_to_cart":
                changes["cart_items"] = state.cart_items + int(event.data.get("quantity", 1) or 1)
            elif event.kind in ("checkout", "order_paid"):
                changes["cart_items"] = 0
            return _replace(state, **changes) if changes else state
        case TriggerFired():
            return _replace(state, fired={**state.fired, event.trigger: ts})
        case Restarted():
            fresh = initial_state(state.conversation_id)
            return _replace(fresh, created_at=state.created_at, visitor_id=state.visitor_id,
                            channel=state.channel, language=state.language, tags=state.tags,
                            history=state.history, last_event_at=ts)
        case UserUtteranceReverted() | ActionReverted():
            return state  # resolved by applied_events(); a fold never sees them
    return state


def applied_events(events: Sequence[Event]) -> list[Event]:
    """The events that still count once ``undo``/``rewind`` are taken into account."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, UserUtteranceReverted):
            while out:
                if isinstance(out.pop(), UserUttered):
                    break
        elif isinstance(event, ActionReverted):
            while out:
                if isinstance(out.pop(), BotUttered):
                    break
        else:
            out.append(event)
    return out


def fold(events: Iterable[Event], state: DialogueState) -> DialogueState:
    for event in events:
        state = apply(state, event)
    return state


def replay(conversation_id: str, events: Sequence[Event], base: DialogueState | None = None) -> DialogueState:
    """State from scratch (or from a snapshot ``base``) over ``events``, reverts resolved."""
    return fold(applied_events(events), base or initial_state(conversation_id))


_state_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(DialogueState)


def encode_state(state: DialogueState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(data: bytes | str) -> DialogueState:
    return _state_decoder.decode(data)
