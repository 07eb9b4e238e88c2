"""The NLU pipeline: one customer message in, a :class:`ParseResult` out.

Order: normalise → keyword rules → encode → intent head → three-band decision → entities.
Field names follow Rasa's parse result (``intent{name, confidence}``, ``intent_ranking``,
``entities[{entity, value, start, end, confidence, extractor}]``) so Rasa clients adapt easily;
``match{match_type, confidence}`` mirrors Dialogflow CX's ``QueryResult.match``.

A button answer to a clarification arrives as the payload ``/<intent>`` (Rasa's convention) and
resolves deterministically: no re-classification of the label text.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import msgspec
import numpy as np

from .decision import is_intent
from .encoders import Encoder, encoder_layout, split_embedding
from .entities import EntityExtractor
from .intent import IntentModel
from .normalize import Normalizer, detect_language, fold_width
from .rules import KeywordRules, RuleContext, RuleMatch
from .texts import Text, pick_text

DecisionKind = Literal["answer", "clarify", "out_of_scope", "rule"]
MatchType = Literal["INTENT", "DIRECT_INTENT", "CLARIFY", "NO_MATCH", "KEYWORD_RULE"]
OUT_OF_SCOPE_INTENT = "out_of_scope"

CLARIFY_QUESTION = {"zh": "您是想问以下哪个问题？", "en": "Did you mean one of these?"}


class IntentScore(msgspec.Struct):
    name: str
    confidence: float
    label: str | None = None


class Match(msgspec.Struct):
    match_type: MatchType
    confidence: float


class ClarifyOption(msgspec.Struct):
    intent: str
    label: str
    payload: str


class Clarification(msgspec.Struct):
    question: str
    options: list[ClarifyOption]
    category: str | None = None  # the options are this category's guided menu (the operator's 引导问题)
    vague: bool = False  # the message itself was recognised as a vague one of ``category`` (not just ambiguous)


class EntityOut(msgspec.Struct):
    entity: str
    value: object
    text: str
    start: int
    end: int
    confidence: float
    extractor: str


class Reply(msgspec.Struct):
    text: str | None = None
    article: str | None = None


class ModelRef(msgspec.Struct):
    name: str
    version: str


class ParseResult(msgspec.Struct):
    text: str
    normalized_text: str
    language: str
    intent: IntentScore
    intent_ranking: list[IntentScore]
    decision: DecisionKind
    match: Match
    clarification: Clarification | None
    matched_rules: list[RuleMatch]
    entities: list[EntityOut]
    response: Reply | None
    model: ModelRef
    timing_ms: dict[str, float]
    conversation_id: str | None = None


@dataclass(frozen=True)
class ParseContext:
    language: str | None = None
    channel: str | None = None
    visitor_tags: frozenset[str] = frozenset()
    timestamp: datetime | None = None
    conversation_id: str | None = None


@dataclass
class IntentMeta:
    """``label`` and ``response``: one text or per language; ``article``: the intent's own help article."""

    label: Text
    category: str | None = None
    response: Text | None = None
    article: str | None = None

    def label_in(self, language: str | None) -> str:
        return pick_text(self.label, language)


@dataclass
class NLUPipeline:
    """Holds the loaded parts of one model bundle; ``parse`` is safe to call from many threads."""

    model: IntentModel
    encoder: Encoder
    normalizer: Normalizer
    rules: KeywordRules
    entities: EntityExtractor
    intents: dict[str, IntentMeta]
    model_ref: ModelRef
    ranking_size: int = 5
    clarify_menus: dict[str, list[str]] = field(default_factory=dict)
    _encode_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _layout: tuple[tuple[str, int], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        self._layout = encoder_layout(self.encoder)

    def warmup(self) -> None:
        """Pay one-off costs (lazy regexes, OpenCC, first encoder call) before traffic arrives."""
        self.parse("你好，我的订单DD2023112400001什么时候发货？明天下午三点前能到吗", ParseContext())
        self.parse("hello, where is my order", ParseContext())

    def _encode(self, text: str) -> np.ndarray:
        if getattr(self.encoder, "thread_safe", False):  # e.g. the serving batcher: concurrent calls coalesce
            return self.encoder.encode([text], "query")
        with self._encode_lock:  # the C/numpy engines are single-threaded and not re-entrant
            return self.encoder.encode([text], "query")

    async def _aencode(self, text: str) -> np.ndarray:
        aencode = getattr(self.encoder, "aencode", None)
        if aencode is not None:  # the serving batcher: wait for the batch without holding a thread
            return await aencode([text], "query")
        return await asyncio.to_thread(self._encode, text)

    def parse(self, text: str, ctx: ParseContext) -> ParseResult:
        """Parse in the calling thread (blocks while the message is encoded)."""
        steps = self._steps(text, ctx)
        try:
            query = next(steps)
            while True:
                query = steps.send(self._encode(query))
        except StopIteration as done:
            return done.value

    def parse_with_vectors(self, text: str, ctx: ParseContext) -> tuple[ParseResult, dict[str, np.ndarray]]:
        """:meth:`parse`, plus the message's query embedding cut into its encoders' parts (by encoder
        name; empty for a button payload, which is never encoded). The conversation turn hands them
        to the knowledge base, whose e5 is one of the parts, so a message is encoded once."""
        steps = self._steps(text, ctx)
        vectors: dict[str, np.ndarray] = {}
        try:
            query = next(steps)
            while True:
                emb = self._encode(query)
                vectors = split_embedding(emb[0], self._layout)
                query = steps.send(emb)
        except StopIteration as done:
            return done.value, vectors

    async def aparse(self, text: str, ctx: ParseContext) -> ParseResult:
        """Parse on the event loop: the CPU-light steps run inline, the encoder call is awaited.

        Why: a sync handler costs two thread hand-offs per request (loop → worker → loop) besides
        the encoder's own, and on two cores under load each hand-off waits for the GIL (serving
        throughput +12–14% measured, evals/RESULTS.md). Same steps, same result as :meth:`parse`.
        """
        steps = self._steps(text, ctx)
        try:
            query = next(steps)
            while True:
                query = steps.send(await self._aencode(query))
        except StopIteration as done:
            return done.value

    def _steps(self, text: str, ctx: ParseContext) -> Generator[str, np.ndarray, ParseResult]:
        """The pipeline as a generator: yields the normalised text to encode, receives its embedding
        row(s), returns the result; :meth:`parse` and :meth:`aparse` drive it."""
        t0 = time.perf_counter()
        timing: dict[str, float] = {}
        normalized = self.normalizer(text)
        language = ctx.language or detect_language(normalized)
        rule_ctx = RuleContext(ctx.channel, ctx.visitor_tags, ctx.timestamp, language)
        hits = self.rules.match(normalized, rule_ctx)
        t1 = time.perf_counter()
        timing["rules"] = (t1 - t0) * 1000

        direct = self._direct_intent(text.strip())
        if direct is None:
            emb = yield normalized
            t2 = time.perf_counter()
            timing["encode"] = (t2 - t1) * 1000
            all_probs, similarity = self.model.predict_scores([normalized], emb)
            probs = all_probs[0]
            decision = self.model.decide(probs, None if similarity is None else float(similarity[0]))
            ranking = self._ranking(probs, language)
            timing["classify"] = (time.perf_counter() - t2) * 1000
        else:
            ranking = [IntentScore(direct, 1.0, self._label(direct, language))]
            decision = None
        t3 = time.perf_counter()
        entities = [EntityOut(e.entity, e.value, e.text, e.start, e.end, e.confidence, e.extractor)
                    for e in self.entities.extract(fold_width(text), now=ctx.timestamp)]
        timing["entities"] = (time.perf_counter() - t3) * 1000

        clarification = None
        response: Reply | None = None
        if direct is not None:
            kind: DecisionKind = "answer"
            intent = ranking[0]
            match = Match("DIRECT_INTENT", 1.0)
            response = self._intent_reply(direct, language)
        elif hits and (hits[0].response or hits[0].article or hits[0].intent):
            top_rule = hits[0]
            kind = "rule"
            name = top_rule.intent or (decision.intent if decision.kind != "out_of_scope" else None)
            conf = 1.0 if top_rule.intent else (decision.confidence if name else 0.0)
            intent = IntentScore(name or OUT_OF_SCOPE_INTENT, round(conf, 4), self._label(name, language) if name else None)
            match = Match("KEYWORD_RULE", 1.0)
            response = Reply(top_rule.response, top_rule.article) if (top_rule.response or top_rule.article) \
                else self._intent_reply(top_rule.intent, language)
        elif decision.kind == "answer":
            kind = "answer"
            intent = IntentScore(decision.intent, round(decision.confidence, 4), self._label(decision.intent, language))
            match = Match("INTENT", intent.confidence)
            response = self._intent_reply(decision.intent, language)
        elif decision.kind == "clarify":
            kind = "clarify"
            intent = IntentScore(decision.intent, round(decision.confidence, 4), self._label(decision.intent, language))
            match = Match("CLARIFY", intent.confidence)
            names, menu = self._clarify_options(decision.intent, decision.options, decision.category)
            clarification = Clarification(
                CLARIFY_QUESTION.get(language, CLARIFY_QUESTION["zh"]),
                [ClarifyOption(name, self._label(name, language), f"/{name}") for name in names],
                menu,
                vague=menu is not None and menu == decision.category,
            )
        else:
            kind = "out_of_scope"
            intent = IntentScore(OUT_OF_SCOPE_INTENT, round(1.0 - decision.confidence, 4))
            match = Match("NO_MATCH", intent.confidence)
        timing["total"] = (time.perf_counter() - t0) * 1000
        return ParseResult(
            text=text,
            normalized_text=normalized,
            language=language,
            intent=intent,
            intent_ranking=ranking,
            decision=kind,
            match=match,
            clarification=clarification,
            matched_rules=hits,
            entities=entities,
            response=response,
            model=self.model_ref,
            timing_ms={k: round(v, 3) for k, v in timing.items()},
            conversation_id=ctx.conversation_id,
        )

    def _clarify_options(self, top: str | None, candidates: tuple[str, ...], category: str | None
                         ) -> tuple[list[str], str | None]:
        """The operator's guided menu of the recognised vague category, or of the top candidate's
        category when most candidates share it; otherwise the model's own candidates. Also says
        which category's menu was used (None for the model's candidates)."""
        if category and self.clarify_menus.get(category):
            return self.clarify_menus[category][:4], category
        meta = self.intents.get(top) if top else None
        menu = self.clarify_menus.get(meta.category) if meta and meta.category else None
        if not menu:
            return list(candidates), None
        same = sum(1 for c in candidates if (m := self.intents.get(c)) and m.category == meta.category)
        if same * 2 < len(candidates):
            return list(candidates), None
        options = list(menu) if top in menu else [top, *menu]
        return options[:4], meta.category

    def _direct_intent(self, text: str) -> str | None:
        if text.startswith("/") and text[1:] in self.intents:
            return text[1:]
        return None

    def _label(self, name: str | None, language: str | None = None) -> str:
        if name is None:
            return ""
        meta = self.intents.get(name)
        return meta.label_in(language) if meta else name

    def _intent_reply(self, name: str | None, language: str | None = None) -> Reply | None:
        meta = self.intents.get(name) if name else None
        if meta is None or not (meta.response or meta.article):
            return None
        return Reply(pick_text(meta.response, language) or None, meta.article)

    def _ranking(self, probs: np.ndarray, language: str | None = None) -> list[IntentScore]:
        order = np.argsort(-probs)
        out: list[IntentScore] = []
        for i in order:
            name = self.model.classes_[i]
            if not is_intent(name):
                continue
            out.append(IntentScore(name, round(float(probs[i]), 4), self._label(name, language)))
            if len(out) >= self.ranking_size:
                break
        return out
