"""One turn in progress: the tracker it writes to, the situation, the trace, and the turn's result types."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from lingxi.datasets.dialogue_files import DialogueSpec, Text
from lingxi.nlu.normalize import is_traditional, to_traditional
from lingxi.nlu.parse import IntentMeta, ParseContext, ParseResult
from lingxi.nlu.texts import pick_text

from .actions import render
from .context import Situation, context_rule
from .events import (
    ArticleCard,
    BotUttered,
    Button,
    ConversationBrief,
    EntityValue,
    Event,
    ParseSummary,
    TraceOutcome,
    TraceStep,
)
from .knowledge import ArticleHit
from .state import DialogueState
from .tracker import Tracker


class NLU(Protocol):
    """What the dialogue needs from the NLU pipeline (``lingxi.nlu.parse.NLUPipeline`` fits)."""

    intents: dict[str, IntentMeta]
    clarify_menus: dict[str, list[str]]

    def parse(self, text: str, ctx: ParseContext) -> ParseResult: ...


_CJK = re.compile(r"[\u3400-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def message_language(text: str, detected: str, current: str) -> str:
    """The conversation's language after this message: an order number or an emoji says nothing
    about it, so only text with Chinese characters or real English words can switch it."""
    if _CJK.search(text):
        return "zh" if detected == "zh" or len(_CJK.findall(text)) * 2 >= len(_LATIN_WORD.findall(text)) else detected
    if len(_LATIN_WORD.findall(text)) >= 1 and not re.fullmatch(r"[A-Za-z]{0,4}\d[\w-]*", text.strip()):
        return detected
    return current


def summarize_parse(p: ParseResult, current_language: str = "zh") -> ParseSummary:
    return ParseSummary(
        intent=p.intent.name if p.intent.name != "out_of_scope" else None,
        confidence=p.intent.confidence,
        decision=p.decision,
        language=message_language(p.text, p.language, current_language),
        ranking=tuple((i.name, i.confidence) for i in p.intent_ranking[:3]),
        entities=tuple(EntityValue(e.entity, e.value, e.text, e.start, e.end) for e in p.entities),
        rules=tuple(r.rule_id for r in p.matched_rules),
        traditional=is_traditional(p.text),
    )


# ------------------------------------------------------------------ wire types of a turn's result


class BotMessage(msgspec.Struct, omit_defaults=True):
    type: str  # text | buttons | article | articles
    text: str | None = None
    buttons: list[Button] = msgspec.field(default_factory=list)
    article: ArticleCard | None = None
    kind: str = "text"
    articles: list[ArticleCard] = msgspec.field(default_factory=list)  # suggestions (several cards)


class TranscriptLine(msgspec.Struct, omit_defaults=True):
    role: str  # user | bot
    text: str
    ts: float
    intent: str | None = None


class HandoffPayload(msgspec.Struct, omit_defaults=True):
    """What the agents' platform needs to take over: who, why, where to route, and the context."""

    reason: str
    mode: str  # live (an agent takes over; the bot is silent) | message (a left message / ticket)
    skill_group: str
    priority: str
    summary: str
    transcript: list[TranscriptLine]
    intents: list[dict[str, Any]]
    slots: dict[str, Any]
    visitor: dict[str, Any]
    routing: list[str]
    history: list[ConversationBrief] = msgspec.field(default_factory=list)
    business_hours_open: bool = True


class TurnResult(msgspec.Struct):
    conversation_id: str
    messages: list[BotMessage]
    decision: str
    intent: str | None
    trace: list[TraceStep]
    silent: bool = False  # a human holds the conversation and the bot said nothing; never set otherwise
    handoff: HandoffPayload | None = None
    active_flow: str | None = None
    slots: dict[str, Any] = msgspec.field(default_factory=dict)
    created: bool = False
    parse: ParseSummary | None = None


# ------------------------------------------------------------------ the turn


@dataclass
class Turn:
    tracker: Tracker
    spec: DialogueSpec
    ts: float
    situation: Situation
    nlu: NLU | None = None
    trace: list[TraceStep] = field(default_factory=list)
    decision: str | None = None
    intent: str | None = None
    parse: ParseSummary | None = None
    text: str = ""
    human_request: bool = False
    start_seq: int = 0  # the conversation's event count when the turn began (absolute, not a tail index)
    resume_note: str | None = None  # "我们继续刚才的…：" waiting to prefix the next question
    result: ParseResult | None = None  # the message's full parse (None for a button that needs none)
    vectors: dict[str, Any] = field(default_factory=dict)  # its query embedding by encoder (for the KB)
    hits: list[ArticleHit] | None = None  # the knowledge base's answer to the message, once asked

    def __post_init__(self) -> None:
        self.start_seq = self.tracker.event_count

    @property
    def state(self) -> DialogueState:
        return self.tracker.state

    @property
    def language(self) -> str:
        return self.state.language or "zh"

    @property
    def context_rule(self):
        return context_rule(self.spec, self.situation)

    def emit(self, event: Event) -> DialogueState:
        return self.tracker.append(event)

    def note(self, stage: str, outcome: TraceOutcome, detail: str = "") -> None:
        self.trace.append(TraceStep(stage, outcome, detail))

    def t(self, key: str, **values: Any) -> str:
        """A system text of the dialogue config, rendered."""
        return self.render(self.spec.texts.get(key), **values)

    def render(self, text: Text | None, **values: Any) -> str:
        return render(pick_text(text, self.language), {**self.state.slots, **values})

    def say(self, text: str | None, buttons: Sequence[Button] = (), article: ArticleCard | None = None,
            kind: str = "text", articles: Sequence[ArticleCard] = ()) -> None:
        if not text and not buttons and article is None and not articles:
            return
        if self.spec.traditional_replies and self.state.traditional:  # answer 繁體 in kind (domain option)
            text = to_traditional(text) if text else text
            buttons = [Button(to_traditional(b.title), b.payload) for b in buttons]
        self.emit(BotUttered(ts=self.ts, text=text or None, buttons=tuple(buttons), article=article, kind=kind,
                             articles=tuple(articles)))

    def intent_label(self, name: str | None) -> str:
        if not name:
            return ""
        meta = self.nlu.intents.get(name) if self.nlu else None
        return meta.label_in(self.language) if meta else name

    def intent_category(self, name: str | None) -> str | None:
        meta = self.nlu.intents.get(name) if (self.nlu and name) else None
        return meta.category if meta else None

    def decide(self, decision: str, intent: str | None = None) -> None:
        self.decision = decision
        if intent is not None:
            self.intent = intent

    @property
    def new_events(self) -> list[Event]:
        """The events this turn appended. Read them before the store saves the tracker: a save may
        take a snapshot and drop the in-memory tail before it (``Tracker.rebase``)."""
        return self.tracker.tail[max(0, self.start_seq - self.tracker.base_seq):]
