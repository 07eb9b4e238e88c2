"""The dialogue engine: one customer message (or behaviour event, or release) in, one turn out.

Per call: take the conversation's lock → load the tracker (snapshot + tail) → session and visitor
bookkeeping → the policy → save the new events → release the lock. Messages of one conversation
are therefore processed strictly one at a time, across threads, processes and replicas that share
a store; different conversations run in parallel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lingxi.datasets.dialogue_files import DialogueSpec
from lingxi.datasets.domain import CalibrationSet
from lingxi.nlu.parse import ParseContext

from .actions import ActionClient
from .arbitration import Arbitration
from .calibration import calibrate
from .context import situation
from .events import (
    BehaviourObserved,
    BotUttered,
    ContextUpdated,
    ConversationBrief,
    HandedOff,
    HandoffReleased,
    SessionStarted,
    SlotSet,
    TurnDecided,
    UserUttered,
    VisitorRecognised,
)
from .flows import FlowRunner
from .handoff import build_payload
from .knowledge import KnowledgeSource
from .policy import Policy
from .stores import TrackerStore
from .tracker import Tracker
from .triggers import evaluate
from .turn import NLU, BotMessage, Turn, TurnResult
from .visitors import Identity, VisitorStore


class ConversationNotFound(LookupError):
    pass


class ModelNotLoaded(RuntimeError):
    pass


@dataclass
class MessageIn:
    text: str | None = None
    payload: str | None = None
    channel: str | None = None
    language: str | None = None
    tags: Sequence[str] | None = None
    identities: Sequence[Identity] = ()
    timestamp: datetime | float | None = None
    slots: dict[str, Any] | None = None
    message_id: str | None = None


@dataclass
class BehaviourIn:
    kind: str
    page: str | None = None
    seconds: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    channel: str | None = None
    tags: Sequence[str] | None = None
    identities: Sequence[Identity] = ()
    timestamp: datetime | float | None = None


def _ts(value: datetime | float | None, clock: Callable[[], float]) -> float:
    if value is None:
        return clock()
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=None).timestamp()
    return float(value)


class DialogueEngine:
    def __init__(self, spec: DialogueSpec, nlu: NLU | Callable[[], NLU | None], store: TrackerStore, *,
                 knowledge: KnowledgeSource | None = None, actions: ActionClient | None = None,
                 visitors: VisitorStore | None = None, clock: Callable[[], float] = time.time,
                 history_conversations: int = 3,
                 arbitration: Arbitration | Callable[[], Arbitration | None] | None = None) -> None:
        """``arbitration``: the fitted :class:`Arbitration` (or a callable returning the current
        tenant's); without one the parse decides and articles are not offered."""
        self.spec = spec
        self._nlu = nlu if callable(nlu) and not hasattr(nlu, "parse") else (lambda: nlu)
        self.store = store
        self.knowledge = knowledge
        self.actions = actions
        self.visitors = visitors or VisitorStore(store)
        self.clock = clock
        self.history_conversations = history_conversations
        self.flows = FlowRunner(spec, actions, knowledge)
        current = arbitration if callable(arbitration) else (lambda: arbitration)
        self.policy = Policy(spec, self.flows, knowledge, current)

    def fit_arbitration(self, held: CalibrationSet, fitted_on: dict[str, Any] | None = None,
                        progress: Callable[[int, int], None] | None = None) -> Arbitration:
        """Fit the answer arbitration for the served NLU and this engine's knowledge base on the
        domain's held-out questions (``held``) and the knowledge base's own: see :mod:`.calibration`."""
        nlu = self.nlu
        own = {name: meta.article for name, meta in nlu.intents.items() if getattr(meta, "article", None)}
        probe_turn = Turn(Tracker("calibration"), self.spec, self.clock(),
                          situation(self.spec, None, (), self.clock()), nlu)
        return calibrate(nlu, self.knowledge, held, own, lambda intent: self.policy.answerable(probe_turn, intent),
                         fitted_on, progress, outcome=lambda intent: self.flows.flow_for_intent(intent) or intent)

    def close(self) -> None:
        if self.actions is not None:
            self.actions.close()
        self.store.close()

    @property
    def nlu(self) -> NLU:
        nlu = self._nlu()
        if nlu is None:
            raise ModelNotLoaded("no NLU model is loaded")
        return nlu

    # ------------------------------------------------------------------ public API
    def tracker(self, cid: str) -> Tracker | None:
        return self.store.load(cid)

    def handle_message(self, cid: str, msg: MessageIn) -> TurnResult:
        text = (msg.text or "").strip()
        payload = (msg.payload or "").strip() or None
        if not text and not payload:
            raise ValueError("a message needs `text` or `payload`")
        nlu = self.nlu
        ts = _ts(msg.timestamp, self.clock)
        with self.store.lock(cid):
            tracker = self.store.load(cid)
            created = tracker is None
            tracker = tracker or Tracker(cid)
            turn = self._begin(tracker, nlu, ts, msg.channel, msg.language, msg.tags, msg.identities)
            for name, value in (msg.slots or {}).items():
                turn.emit(SlotSet(ts=ts, name=name, value=value, source="client"))
            s = turn.situation
            ctx = ParseContext(language=msg.language, channel=s.channel, visitor_tags=s.tags,
                               timestamp=s.moment, conversation_id=cid)
            self.policy.on_message(turn, text, payload, ctx)
            return self._save_and_result(turn, created)

    def handle_behaviour(self, cid: str, ev: BehaviourIn) -> TurnResult:
        ts = _ts(ev.timestamp, self.clock)
        with self.store.lock(cid):
            tracker = self.store.load(cid)
            if tracker is None:
                raise ConversationNotFound(cid)
            turn = self._begin(tracker, self._nlu(), ts, ev.channel, None, ev.tags, ev.identities)
            event = BehaviourObserved(ts=ts, kind=ev.kind, page=ev.page, seconds=ev.seconds, data=dict(ev.data))
            turn.emit(event)
            fired = evaluate(turn, event, start_flow=lambda t, f: self.flows.start(t, f, "behaviour trigger"))
            decision = "proactive" if fired else ("silent" if turn.state.handoff else "none")
            turn.decide(decision)
            turn.emit(TurnDecided(ts=ts, decision=decision, trace=tuple(turn.trace)))
            return self._save_and_result(turn, False)

    def release(self, cid: str, by: str = "agent", note: str = "", timestamp: datetime | float | None = None,
                say: str | None = None) -> TurnResult:
        ts = _ts(timestamp, self.clock)
        with self.store.lock(cid):
            tracker = self.store.load(cid)
            if tracker is None:
                raise ConversationNotFound(cid)
            turn = self._begin(tracker, self._nlu(), ts, None, None, None, ())
            if tracker.state.handoff is None:
                turn.note("handoff", "skip", "no human handoff to release")
                turn.decide("none")
            else:
                turn.emit(HandoffReleased(ts=ts, by=by, note=note))
                turn.note("handoff", "hit", f"released by {by}: the bot answers again")
                if say:
                    turn.say(say)
                turn.decide("released")
            turn.emit(TurnDecided(ts=ts, decision=turn.decision or "none", trace=tuple(turn.trace)))
            return self._save_and_result(turn, False)

    def open(self, cid: str, msg: MessageIn) -> TurnResult:
        """Start a conversation (the chat window opened): the welcome and menu, no customer text yet."""
        ts = _ts(msg.timestamp, self.clock)
        with self.store.lock(cid):
            tracker = self.store.load(cid)
            created = tracker is None
            tracker = tracker or Tracker(cid)
            turn = self._begin(tracker, self._nlu(), ts, msg.channel, msg.language, msg.tags, msg.identities)
            if tracker.state.handoff is None:
                turn.note("session", "hit", "conversation opened → welcome")
                self.policy.welcome(turn)
                turn.decide("welcome")
            else:
                turn.decide("silent")
            turn.emit(TurnDecided(ts=ts, decision=turn.decision, trace=tuple(turn.trace)))
            return self._save_and_result(turn, created)

    # ------------------------------------------------------------------ internals
    def _begin(self, tracker: Tracker, nlu: NLU | None, ts: float, channel: str | None, language: str | None,
               tags: Sequence[str] | None, identities: Sequence[Identity]) -> Turn:
        state = tracker.state
        timeout = self.spec.session_timeout_minutes * 60
        tentative = Turn(tracker, self.spec, ts, situation(self.spec, channel or state.channel,
                                                           tuple(tags or state.tags), ts), nlu)
        if tracker.event_count == 0 or (state.last_event_at is not None and ts - state.last_event_at > timeout):
            tracker.append(SessionStarted(ts=ts, channel=channel, language=language))
            tentative.note("session", "info", "new session" if tracker.event_count > 1 else "new conversation")
        state = tracker.state
        changes: dict[str, Any] = {}
        if channel and channel != state.channel:
            changes["channel"] = channel
        if language and language != state.language:
            changes["language"] = language
        if tags is not None and tuple(sorted(set(tags))) != tuple(sorted(state.tags)):
            changes["tags"] = tuple(sorted(set(tags)))
        if changes:
            tracker.append(ContextUpdated(ts=ts, **changes))
        if identities:
            keys = tuple(sorted({f"{i.kind}:{i.value}" for i in identities}))
            if not set(keys) <= set(state.identities) or state.visitor_id is None:
                self._link_visitor(tracker, identities, keys, ts, tentative)
        s = tracker.state
        tentative.situation = situation(self.spec, s.channel, s.tags, ts)
        tentative.start_seq = tracker.event_count
        return tentative

    def _link_visitor(self, tracker: Tracker, identities: Sequence[Identity], keys: tuple[str, ...], ts: float,
                      turn: Turn) -> None:
        state = tracker.state
        visitor, merged = self.visitors.resolve(identities, tracker.conversation_id, state.channel, now=ts)
        all_keys = tuple(sorted({*state.identities, *keys}))
        tracker.append(ContextUpdated(ts=ts, visitor_id=visitor.visitor_id, identities=all_keys))
        others = [c for c in visitor.conversations if c.conversation_id != tracker.conversation_id]
        if merged:
            turn.note("visitor", "info", f"identities linked: merged {', '.join(merged)} into {visitor.visitor_id}")
        if others and (visitor.visitor_id != state.visitor_id or merged):
            briefs = [b for b in (self._brief(c.conversation_id) for c in others[-self.history_conversations:]) if b]
            tracker.append(VisitorRecognised(ts=ts, visitor_id=visitor.visitor_id, history=tuple(briefs)))
            turn.note("visitor", "info", f"returning visitor {visitor.visitor_id}: {len(briefs)} earlier conversation(s)")

    def _brief(self, cid: str) -> ConversationBrief | None:
        other = self.store.load(cid)
        if other is None:
            return None
        s = other.state
        last_user = next((e.text for e in reversed(other.tail) if isinstance(e, UserUttered)), None)
        intents = tuple(dict.fromkeys(name for name, _ in s.recent_intents))
        return ConversationBrief(conversation_id=cid, channel=s.channel, started_at=s.created_at or 0.0,
                                 last_at=s.last_event_at or 0.0, intents=intents, slots=dict(s.slots),
                                 last_user_text=last_user, handed_off=s.handoffs > 0)

    def _save_and_result(self, turn: Turn, created: bool) -> TurnResult:
        """Save the turn's events, then describe the turn. The events are taken before the save,
        which may snapshot the tracker and drop them from its in-memory tail."""
        new = list(turn.new_events)
        self.store.save(turn.tracker)
        return self._result(turn, created, new)

    def _result(self, turn: Turn, created: bool, new: list) -> TurnResult:
        tracker = turn.tracker
        state = tracker.state
        messages = []
        for e in new:
            if isinstance(e, BotUttered):
                kind = "article" if e.article else ("articles" if e.articles else ("buttons" if e.buttons else "text"))
                messages.append(BotMessage(type=kind, text=e.text, buttons=list(e.buttons), article=e.article,
                                           kind=e.kind, articles=list(e.articles)))
        payload = None
        handed = next((e for e in reversed(new) if isinstance(e, HandedOff)), None)
        if handed is not None:
            events = self.store.events(tracker.conversation_id)
            payload = build_payload(reason=handed.reason, mode=handed.mode, skill_group=handed.skill_group,
                                    priority=handed.priority, summary=handed.summary, routing=handed.routing,
                                    state=state, events=events, turns=self.spec.handoff.transcript_turns,
                                    is_open=turn.situation.open)
        frame = state.active_flow
        return TurnResult(
            conversation_id=tracker.conversation_id, messages=messages, decision=turn.decision or "none",
            intent=turn.intent, trace=list(turn.trace), silent=state.handoff is not None and not messages,
            handoff=payload,
            active_flow=frame.flow if frame else None, slots=dict(state.slots), created=created, parse=turn.parse,
        )
