"""The reply policy: one fixed order of stages, each recorded in the turn's trace.

For a customer message:

0. **handoff active** — a human has the conversation: the bot records the message and stays silent.
1. **clarification** — the previous bot turn asked "which of these?": an offered button payload,
   an option's label typed out, an ordinal ("第二个") or a parse landing on one of the options
   resolves it deterministically (an intent, an article or a menu category); anything else drops
   the question and goes on.
2. **rules** — handoff triggers (an explicit request, a handoff rule, strong negative sentiment)
   and cancel / back words inside a flow.
3. **active flow** — the message answers the waiting question; or it is a question on the side
   that the arbitration answers confidently (an intent, a keyword rule's reply or an article:
   answered, then the waiting question is asked again; a side question with its own flow stacks
   it); or it is re-prompted. A free-text question (the leave-a-message step) takes the message as
   the answer unless it is such a side question.
4. **arbitration** — the intent model, the keyword rules and the knowledge base each offer an
   answer; one calibrated arbitration (:mod:`.arbitration`) decides: answer with an intent (its
   response, with its own article's card; its flow; the welcome for a greeting), a keyword rule's
   reply or an article (a short answer and the card); ask a clarifying question whose options mix
   intents and articles; or fall back (menu and 转人工, with related articles only above the fitted
   cut-off); after ``handoff.fallback_after`` consecutive fallbacks, hand off.

Context rules (business hours, holidays, channel, visitor tags) shape stages 2 and 4: VIPs on a
workday get a human at once, others are offered self-service first; outside business hours a
handoff becomes an offer to leave a message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from lingxi.datasets.dialogue_files import DialogueSpec
from lingxi.nlu.parse import ParseContext, ParseResult
from lingxi.nlu.texts import pick_text

from .arbitration import Arbitration, Candidate, Links, Verdict, decide, gather
from .events import (
    ArticleCard,
    Button,
    ClarificationAsked,
    ClarificationResolved,
    Digressed,
    FlowEnded,
    HandedOff,
    Option,
    ParseSummary,
    SlotSet,
    TurnDecided,
    UserUtteranceReverted,
    UserUttered,
)
from .flows import FlowRunner, squash
from .handoff import route, summarize
from .knowledge import ArticleHit, KnowledgeQuery, KnowledgeSource
from .sentiment import negative_score
from .state import PendingClarification
from .turn import Turn, summarize_parse

MENU_PREFIX = "/menu:"
ARTICLE_PREFIX = "/article:"  # an article offered as a clarification option
ARTICLE_VALUE = "article:"
FREE_TEXT_DIGRESSIONS = 2
SIDE_CLARIFY_MIN_CHARS = 6  # a shorter message in a flow ("忘了", "不知道") is a try at the answer, not a new topic  # side questions answered at one free-text step before the message is taken as is
_ORDINALS = {"1": 0, "一": 0, "第一个": 0, "第一": 0, "2": 1, "二": 1, "第二个": 1, "第二": 1, "3": 2, "三": 2,
             "第三个": 2, "第三": 2, "4": 3, "四": 3, "第四个": 3, "第四": 3}
_POLITE_TAIL = re.compile(r"(吧|了|啦|啊|呀|哈|谢谢|谢了|please)$")


_QUESTION_WORDS = re.compile(
    r"[?？]|怎[么麼樣样]|如何|[什甚][么麼]|啥|[吗嗎]|呢|哪|[几幾][天号號点點个個]|多少|多久|多长|多長|能不能|能否|可不可以"
    r"|是不是|是否|[为為]什[么麼]|[为為]何|咋"
    r"|^\s*(how|what|where|when|why|which|who|can|could|do|does|did|is|are|will|would|should)\b", re.IGNORECASE)


def _asks(text: str, parse: ParseResult | None) -> bool:
    """Is the message phrased as a question (in the raw or the normalised, simplified text)?"""
    return bool(_QUESTION_WORDS.search(text) or (parse is not None and _QUESTION_WORDS.search(parse.normalized_text)))


def _trimmed(text: str) -> set[str]:
    """The text and its forms without trailing particles: 算了吧 → {算了吧, 算了, 算}."""
    forms = {text}
    while True:
        shorter = _POLITE_TAIL.sub("", text)
        if shorter == text or not shorter:
            return forms
        forms.add(shorter)
        text = shorter


def card_of(hit: ArticleHit) -> ArticleCard:
    return ArticleCard(id=hit.article_id, title=hit.title, snippet=hit.answer or hit.snippet, url=hit.url,
                       search_id=hit.search_id, rank=hit.rank or None)


class Policy:
    """``arbitration()`` returns the arbitration fitted for the current tenant and model (None until
    one is fitted: then the parse's own decision answers, and articles are not offered)."""

    def __init__(self, spec: DialogueSpec, flows: FlowRunner, knowledge: KnowledgeSource | None = None,
                 arbitration: Callable[[], Arbitration | None] | None = None) -> None:
        self.spec = spec
        self.flows = flows
        self.knowledge = knowledge
        self.arbitration = arbitration or (lambda: None)
        flows.handoff = self.handoff
        self._cancel = {squash(w) for w in spec.cancel_words}
        self._back = {squash(w) for w in spec.back_words}
        self._skip = {squash(w) for w in spec.skip_words}

    # ================================================================ entry point
    def on_message(self, turn: Turn, text: str, payload: str | None, parse_ctx: ParseContext) -> None:
        state = turn.state
        offered = state.offered
        pending = state.clarification
        raw = (payload or text).strip()

        # 0. a human has the conversation
        if state.handoff is not None:
            turn.emit(UserUttered(ts=turn.ts, text=raw, channel=state.channel))
            turn.note("handoff", "hit", f"human agent active since {state.handoff.since:.0f} "
                                        f"({state.handoff.reason}); bot silent")
            self._finish(turn, "silent")
            return

        accepted = raw if raw.startswith("/") and raw in offered else None
        if raw.startswith("/") and accepted is None:
            text = raw.lstrip("/") or raw
            turn.note("input", "info", f"payload {raw!r} was never offered: treated as text")
        elif accepted:
            turn.note("input", "info", f"button payload {accepted!r}")
        else:
            text = raw
        turn.text = text

        parse: ParseResult | None = None
        if accepted and accepted.startswith((MENU_PREFIX, ARTICLE_PREFIX)):
            summary = None
        else:
            assert turn.nlu is not None
            parse, turn.vectors = self._parse(turn, accepted or text, parse_ctx)
            turn.result = parse
            summary = summarize_parse(parse, state.language)
            if accepted:  # a button click says nothing about the customer's language
                summary = msgspec.structs.replace(summary, language=state.language, traditional=state.traditional)
        turn.parse = summary
        turn.emit(UserUttered(ts=turn.ts, text=text if not accepted else self._button_title(turn, accepted, text),
                              payload=accepted, parse=summary, channel=state.channel))
        self._auto_fill(turn, summary)

        intent = summary.intent if summary else None
        # 1. pending clarification
        if pending is not None:
            choice = self._resolve_clarification(turn, pending, accepted, text, summary)
            if choice is not None:
                option, via = choice
                turn.emit(ClarificationResolved(ts=turn.ts, value=option.value, via=via))
                turn.note("clarification", "hit", f"{pending.kind} → {option.value} (via {via})")
                if pending.kind == "menu":
                    self._category_menu(turn, option.value)
                    return
                if option.value.startswith(ARTICLE_VALUE):
                    self._chosen_article(turn, option.value.removeprefix(ARTICLE_VALUE), pending)
                    self._resume_flow(turn)
                    return
                intent = option.value
                summary = ParseSummary(intent=intent, confidence=1.0, decision="answer",
                                       language=summary.language if summary else turn.language,
                                       entities=summary.entities if summary else ())
                turn.parse = summary
                turn.intent = intent
                if self._rules(turn, text, summary, None, intent):
                    return
                frame = turn.state.active_flow
                self._answer_intent(turn, Candidate("intent", intent, 1.0, intent=intent,
                                                    own_article=self._own_article(turn, intent)), text, summary)
                if turn.state.active_flow == frame:  # answered on the side of a waiting flow: back to it
                    self._resume_flow(turn)
                return
            turn.note("clarification", "miss", "the message picks none of the options; question dropped")
        else:
            turn.note("clarification", "skip", "no pending question")
        turn.intent = intent

        # 2. rules
        if self._rules(turn, text, summary, parse, intent):
            return
        # 3. active flow
        if turn.state.active_flow is not None:
            if self._active_flow(turn, text, summary, parse, intent):
                return
        else:
            turn.note("flow", "skip", "no active flow")
        # 4. arbitration
        self._respond(turn, text, summary, parse)

    @staticmethod
    def _parse(turn: Turn, text: str, ctx: ParseContext) -> tuple[ParseResult, dict[str, Any]]:
        nlu = turn.nlu
        with_vectors = getattr(nlu, "parse_with_vectors", None)
        if with_vectors is not None:
            return with_vectors(text, ctx)
        return nlu.parse(text, ctx), {}  # type: ignore[union-attr]

    # ================================================================ stage helpers
    def _finish(self, turn: Turn, decision: str, intent: str | None = None) -> None:
        if turn.decision is not None:  # decided already (a handoff inside a flow step)
            return
        turn.decide(decision, intent)
        turn.emit(TurnDecided(ts=turn.ts, decision=decision, intent=turn.intent, trace=tuple(turn.trace),
                              human_request=turn.human_request))

    @staticmethod
    def _button_title(turn: Turn, payload: str, fallback: str) -> str:
        for e in reversed(turn.tracker.tail):
            for b in getattr(e, "buttons", ()) or ():
                if b.payload == payload:
                    return b.title
        return fallback

    def _auto_fill(self, turn: Turn, summary: ParseSummary | None) -> None:
        if not summary:
            return
        for slot in self.spec.slots.values():
            if slot.auto_fill and slot.type == "entity":
                for ent in summary.entities:
                    if ent.entity == slot.entity and turn.state.slots.get(slot.name) != ent.value:
                        turn.emit(SlotSet(ts=turn.ts, name=slot.name, value=ent.value, source="entity"))
                        turn.note("slots", "info", f"{slot.name}={ent.value!r} (auto-filled from entity)")
                        break

    def _resolve_clarification(self, turn: Turn, pending: PendingClarification, accepted: str | None, text: str,
                               summary: ParseSummary | None) -> tuple[Option, str] | None:
        if accepted:
            for o in pending.options:
                if o.payload == accepted:
                    return o, "button"
        t = squash(text)
        if not t:
            return None
        for o in pending.options:
            if t == squash(o.label) or t == squash(o.value):
                return o, "text"
        ordinal = next((_ORDINALS[f] for f in _trimmed(t) if f in _ORDINALS), None)
        if ordinal is not None and ordinal < len(pending.options):
            return pending.options[ordinal], "ordinal"
        contained = [o for o in pending.options
                     if squash(o.label) and squash(o.label) in t and len(t) <= len(squash(o.label)) + 4]
        if len(contained) == 1:
            return contained[0], "text"
        if summary and summary.intent and summary.decision in ("answer", "rule"):
            for o in pending.options:
                if o.value == summary.intent:
                    return o, "parse"
        return None

    # ---------------------------------------------------------------- 2. rules
    def _rules(self, turn: Turn, text: str, summary: ParseSummary | None, parse: ParseResult | None,
               intent: str | None) -> bool:
        h = self.spec.handoff
        rule_ids = summary.rules if summary else ()
        human_rule = next((r for r in (parse.matched_rules if parse else []) if r.intent in h.intents), None)
        explicit = intent in h.intents and (summary is None or summary.decision in ("answer", "rule"))
        if explicit or human_rule is not None:
            turn.human_request = True
            ctx_rule = turn.context_rule
            state = turn.state
            first_contact = state.human_requests == 0 and state.session_turns <= 1
            if ctx_rule is not None and ctx_rule.self_service_first and first_contact:
                turn.note("rules", "hit", f"human request; context rule {ctx_rule.id}: self-service first")
                self._menu(turn, turn.t("self_service_first"), kind="menu", with_human=False)
                self._finish(turn, "self_service_first", intent)
                return True
            why = f"human request ({'rule ' + human_rule.rule_id if human_rule else 'intent ' + str(intent)})"
            if ctx_rule is not None and ctx_rule.offer_human:
                why += f"; context rule {ctx_rule.id}: human at once"
            turn.note("rules", "hit", why)
            rule_text = human_rule.response if human_rule is not None and turn.situation.open \
                and turn.language == "zh" else None
            self.handoff(turn, "explicit_request", text=rule_text,
                         priority=ctx_rule.priority if ctx_rule is not None else None)
            return True
        escalation = next((r for r in rule_ids if r in h.rules), None)
        if escalation:
            turn.note("rules", "hit", f"handoff rule {escalation}")
            rule = next(r for r in parse.matched_rules if r.rule_id == escalation) if parse else None
            self.handoff(turn, f"rule:{escalation}", text=rule.response if rule and turn.situation.open else None)
            return True
        mood = negative_score(text, self.spec.sentiment)
        if mood.score >= h.sentiment_threshold:
            turn.note("rules", "hit", f"strong negative sentiment {mood.score:g} ({', '.join(mood.terms)})")
            self.handoff(turn, "negative_sentiment")
            return True
        frame = turn.state.active_flow
        if frame is not None:
            forms = _trimmed(squash(text))
            if forms & self._cancel:
                turn.note("rules", "hit", f"cancel word: flow {frame.flow} cancelled")
                turn.emit(FlowEnded(ts=turn.ts, flow=frame.flow, outcome="cancelled"))
                turn.say(turn.t("cancelled"))
                below = turn.state.active_flow
                if below is not None:
                    self.flows.prompt(turn, self.flows.step(below.flow, below.step), resume=True)
                turn.intent = None
                self._finish(turn, "cancel")
                return True
            if forms & self._back:
                if self.flows.can_go_back(turn):
                    turn.emit(UserUtteranceReverted(ts=turn.ts))  # this "back" message
                    turn.emit(UserUtteranceReverted(ts=turn.ts))  # the previous answer and what it caused
                    turn.note("rules", "hit", "back word: previous answer undone")
                    turn.say(turn.t("back"))
                    now = turn.state.active_flow
                    if now is not None:
                        self.flows.prompt(turn, self.flows.step(now.flow, now.step))
                else:
                    turn.note("rules", "hit", "back word, but there is no earlier answer in this flow")
                    turn.say(turn.t("back_unavailable"))
                    self.flows.prompt(turn, self.flows.step(frame.flow, frame.step))
                turn.intent = None
                self._finish(turn, "flow")
                return True
        turn.note("rules", "miss", "no handoff trigger")
        return False

    # ---------------------------------------------------------------- 3. active flow
    def _active_flow(self, turn: Turn, text: str, summary: ParseSummary | None, parse: ParseResult | None,
                     intent: str | None) -> bool:
        frame = turn.state.active_flow
        flow = self.flows.flow(frame.flow)
        step = self.flows.step(frame.flow, frame.step)
        slot = self.spec.slots.get(step.ask) if step.ask else None
        free = slot is not None and slot.type in ("text", "any")
        if slot is not None and not free:  # a structured answer (order number, choice, yes/no) goes first
            outcome = self.flows.handle_input(turn, text, summary, allow_free_text=False)
            if outcome.consumed:
                turn.intent = None  # the message was an answer, whatever the classifier thought of it
                self._finish(turn, "flow")
                return True
        if step.optional and _trimmed(squash(text)) & self._skip:
            turn.note("flow", "hit", f"{frame.flow}.{step.id}: skipped by the customer")
            self.flows.skip(turn)
            turn.intent = None
            self._finish(turn, "flow")
            return True
        own = set(flow.trigger.intents)
        side = self._side_question(turn, text, parse, frame, flow.interruptible, own, free)
        if side is not None:
            return self._digress(turn, side, text, summary, frame)
        if free:
            outcome = self.flows.handle_input(turn, text, summary, allow_free_text=True)
            if outcome.consumed:
                turn.intent = None
                self._finish(turn, "flow")
                return True
        turn.note("flow", "miss", f"{frame.flow}.{step.id}: no valid {step.ask or 'answer'} in the message")
        turn.intent = None
        self.flows.reject(turn)
        self._finish(turn, "flow")
        return True

    def _side_question(self, turn: Turn, text: str, parse: ParseResult | None, frame: Any, interruptible: bool,
                       own: set[str], free: bool) -> Verdict | None:
        """A question on the side of the waiting one: a confident answer to something else, or (when
        the message did not answer a structured question, and an arbitration is fitted) a
        clarification among other topics. A flow that is not interruptible (leave a message) has
        side questions answered by a response or an article, never by another flow."""
        if parse is None:
            return None
        if free and (frame.digressions >= FREE_TEXT_DIGRESSIONS):
            return None
        verdict = self._verdict(turn, text, parse, stage="flow")
        chosen = verdict.chosen
        if verdict.kind == "clarify" and not free and self.arbitration() is not None \
                and len(squash(text)) >= SIDE_CLARIFY_MIN_CHARS:
            options = [o for o in verdict.options if o.intent not in own]
            return Verdict("clarify", options=options, why=verdict.why) if options else None
        if verdict.kind != "answer" or chosen is None:
            return None
        about = chosen.intent
        if free and (chosen.kind == "rule" or not _asks(text, parse)):
            # at a free-text step (the leave-a-message text) a description of the problem is the
            # answer, even when it names a topic; only a question on the side is answered first
            return None
        if about in own or about == "greet":  # a greeting would restart the welcome
            return None
        if free and frame.last_digression == chosen.value:  # asked again: it is their message, not a question
            return None
        other = self.flows.flow_for_intent(about) if chosen.kind == "intent" and about else None
        if other == frame.flow or (other is not None and not interruptible and not self._has_response(turn, about)):
            return None
        return verdict

    def _digress(self, turn: Turn, verdict: Verdict, text: str, summary: ParseSummary | None, frame: Any) -> bool:
        if verdict.kind == "clarify":  # which side question? the flow waits; its question comes back after
            turn.emit(Digressed(ts=turn.ts, flow=frame.flow, step=frame.step, answered="clarify"))
            turn.note("flow", "info", f"side question, unsure which: clarify, then resume {frame.flow}")
            self._clarify(turn, verdict.options)
            return True
        chosen = verdict.chosen
        assert chosen is not None
        turn.emit(Digressed(ts=turn.ts, flow=frame.flow, step=frame.step, answered=chosen.value))
        other = self.flows.flow_for_intent(chosen.intent) if chosen.kind == "intent" else None
        interruptible = self.flows.flow(frame.flow).interruptible
        if other is not None and interruptible:  # a side question with its own flow stacks it
            turn.note("flow", "info", f"side question {chosen.intent} has its own flow: {other} stacked on {frame.flow}")
            self.flows.start(turn, other, f"digression from {frame.flow}", text, summary)
            self._finish(turn, "flow", chosen.intent)
            return True
        turn.note("flow", "info", f"side question ({chosen.kind} {chosen.value}); answer, then resume {frame.flow}")
        decision = self._say_answer(turn, chosen)
        self.flows.prompt(turn, self.flows.step(frame.flow, frame.step), resume=True)
        self._finish(turn, decision, chosen.intent)
        return True

    def _resume_flow(self, turn: Turn) -> None:
        frame = turn.state.active_flow
        if frame is not None and turn.state.handoff is None:
            self.flows.prompt(turn, self.flows.step(frame.flow, frame.step), resume=True)

    # ---------------------------------------------------------------- 4. arbitration
    def _respond(self, turn: Turn, text: str, summary: ParseSummary | None, parse: ParseResult | None) -> None:
        if parse is None:
            turn.note("arbitration", "miss", "no parse")
            self._fallback(turn, [])
            return
        verdict = self._verdict(turn, text, parse, stage="arbitration")
        if verdict.kind == "answer" and verdict.chosen is not None:
            chosen = verdict.chosen
            if chosen.kind == "intent" or (chosen.kind == "rule" and self._rule_yields(turn, chosen.intent)):
                self._answer_intent(turn, chosen, text, summary)
            else:
                self._finish(turn, self._say_answer(turn, chosen), chosen.intent)
            return
        if verdict.kind == "clarify":
            self._clarify(turn, verdict.options)
            return
        self._fallback(turn, verdict.suggestions)

    def _hits(self, turn: Turn, text: str, parse: ParseResult) -> list[ArticleHit]:
        """The knowledge base's articles for this message (searched once per turn)."""
        if turn.hits is None:
            turn.hits = []
            if self.knowledge is not None and self.spec.knowledge.enabled and text.strip():
                s = turn.state
                primary = parse.intent.name if parse.decision in ("answer", "rule") else None
                turn.hits = self.knowledge.search(KnowledgeQuery(
                    text=text, channel=s.channel, tags=s.tags, recent_pages=s.recent_pages,
                    recent_products=s.recent_products, intent=primary, language=turn.language,
                    normalized=parse.normalized_text, vectors=turn.vectors))
        return turn.hits

    def _verdict(self, turn: Turn, text: str, parse: ParseResult, stage: str) -> Verdict:
        arbitration = self.arbitration()
        if arbitration is None:
            verdict = self._parse_verdict(turn, parse)
            turn.note(stage, "info", f"no fitted arbitration: the parse decides ({verdict.kind}); articles unused")
            return verdict
        hits = self._hits(turn, text, parse)
        if self.knowledge is None:
            turn.note("knowledge", "skip", "no knowledge source")
        elif hits:
            turn.note("knowledge", "info", ", ".join(f"{h.article_id} ({h.score:.2f})" for h in hits[:3]))
        else:
            turn.note("knowledge", "miss", "no article")
        evidence = gather(parse, hits, arbitration, Links.of(turn.nlu.intents), lambda i: self.answerable(turn, i),
                          lambda i: self.answerable(turn, i) and i not in self.spec.chitchat_intents,
                          lambda i: self.flows.flow_for_intent(i) or i)
        verdict = decide(evidence, arbitration)
        turn.note(stage, "hit" if verdict.kind == "answer" else "info", f"{verdict.kind}: {verdict.why}")
        return verdict

    def _rule_yields(self, turn: Turn, intent: str | None) -> bool:
        """A keyword rule's reply gives way to what its intent does itself: a flow (the operator's
        more specific script), or the welcome for a greeting that opens a session."""
        return bool(intent) and (self.flows.flow_for_intent(intent) is not None
                                 or (intent == "greet" and turn.state.session_turns <= 1))

    def _parse_verdict(self, turn: Turn, parse: ParseResult) -> Verdict:
        """Without a fitted arbitration: what the NLU decided, with no articles."""
        rule = parse.matched_rules[0] if parse.decision == "rule" and parse.matched_rules else None
        if rule is not None and not rule.intent and self._rule_yields(turn, parse.intent.name):
            name = parse.intent.name
            return Verdict("answer", Candidate("intent", name, float(parse.intent.confidence), intent=name,
                                               own_article=self._own_article(turn, name)),
                           why=f"keyword rule {rule.rule_id} yields to intent {name}")
        if rule is not None and (rule.response or rule.article):
            return Verdict("answer", Candidate("rule", rule.rule_id, 1.0, intent=rule.intent,
                                               own_article=rule.article), why=f"keyword rule {rule.rule_id}")
        name = parse.intent.name
        if parse.decision in ("answer", "rule") and self.answerable(turn, name):
            return Verdict("answer", Candidate("intent", name, float(parse.intent.confidence), intent=name,
                                               own_article=self._own_article(turn, name)), why="parse answer")
        if parse.decision == "clarify" and parse.clarification and len(parse.clarification.options) >= 2:
            options = [Candidate("intent", o.intent, 0.0, intent=o.intent, label=o.label)
                       for o in parse.clarification.options]
            return Verdict("clarify", options=options, why="parse clarification")
        return Verdict("fallback", why=f"parse decision {parse.decision}")

    # ---------------------------------------------------------------- answers
    def answerable(self, turn: Turn, intent: str) -> bool:
        """The bot has something to say for ``intent``: a response, a flow, or the welcome."""
        return intent == "greet" or self._has_response(turn, intent) or self.flows.flow_for_intent(intent) is not None

    @staticmethod
    def _has_response(turn: Turn, intent: str) -> bool:
        meta = turn.nlu.intents.get(intent) if turn.nlu else None
        return bool(meta and meta.response)

    @staticmethod
    def _own_article(turn: Turn, intent: str | None) -> str | None:
        meta = turn.nlu.intents.get(intent) if (turn.nlu and intent) else None
        return meta.article if meta else None

    def _article_card(self, turn: Turn, candidate: Candidate) -> ArticleCard | None:
        """The card of a candidate's article: the hit this turn's search served, else the live article
        looked up (an article unpublished since is not shown)."""
        if candidate.article is not None:
            return card_of(candidate.article)
        if candidate.own_article and self.knowledge is not None:
            hit = self.knowledge.get(candidate.own_article, turn.language)
            return card_of(hit) if hit is not None else None
        return None

    def _answer_intent(self, turn: Turn, chosen: Candidate, text: str, summary: ParseSummary | None) -> None:
        intent = chosen.intent or chosen.value
        if intent == "greet":
            turn.note("intent", "hit", "greeting → welcome and menu")
            self.welcome(turn)
            self._finish(turn, "welcome", intent)
            return
        flow = self.flows.flow_for_intent(intent)
        if flow is not None:
            turn.note("intent", "hit", f"{intent} → flow {flow}")
            self.flows.start(turn, flow, f"intent {intent}", text, summary)
            self._finish(turn, "flow", intent)
            return
        self._finish(turn, self._say_answer(turn, chosen), intent)

    def _say_answer(self, turn: Turn, chosen: Candidate) -> str:
        """Say an intent's response, a rule's reply or an article; returns the turn's decision."""
        if chosen.kind == "article":
            hit = chosen.article
            assert hit is not None
            turn.note("knowledge", "hit", f"article {hit.article_id} p={chosen.probability:.2f}")
            turn.say(self._article_text(turn, hit), article=card_of(hit), kind="article")
            return "knowledge"
        card = self._article_card(turn, chosen)
        if chosen.kind == "rule":
            rule = next((r for r in (turn.result.matched_rules if turn.result else []) if r.rule_id == chosen.value),
                        None)
            turn.note("rules", "hit", f"keyword rule {chosen.value}" + (f" ({rule.match} {rule.pattern!r})" if rule else ""))
            turn.say(rule.response if rule else None, article=card, kind="article" if card else "text")
            return "rule"
        meta = turn.nlu.intents[chosen.value]
        turn.note("intent", "hit", f"{chosen.value} p={chosen.probability:.2f} → response"
                                   + (f" + article {card.id}" if card else ""))
        turn.say(pick_text(meta.response, turn.language), article=card, kind="article" if card else "text")
        return "answer"

    def _article_text(self, turn: Turn, hit: ArticleHit) -> str:
        """What the bot says with an article's card: its short answer; in another language than the
        article's, the intro in the customer's language (the card carries the article)."""
        if turn.language != "zh" and not _latin_heavy(hit.title):
            return turn.t("article_intro")
        return hit.answer or turn.t("article_intro")

    def _chosen_article(self, turn: Turn, article_id: str, pending: PendingClarification) -> None:
        hit = self.knowledge.get(article_id, turn.language) if self.knowledge is not None else None
        if hit is None:
            turn.note("knowledge", "miss", f"article {article_id} is no longer published")
            self._fallback(turn, [])
            return
        offered = next((c for c in pending.articles if c.id == article_id), None)
        if offered is not None:  # the click counts against the search that offered it
            hit = msgspec.structs.replace(hit, search_id=offered.search_id, rank=offered.rank or 0)
        turn.say(self._article_text(turn, hit), article=card_of(hit), kind="article")
        turn.note("knowledge", "hit", f"article {article_id} chosen")
        self._finish(turn, "knowledge")

    def _clarify(self, turn: Turn, options: list[Candidate]) -> None:
        opts: list[Option] = []
        cards: list[ArticleCard] = []
        for o in options:
            if o.kind == "article" and o.article is not None:
                opts.append(Option(f"{ARTICLE_VALUE}{o.value}", o.article.title, f"{ARTICLE_PREFIX}{o.value}"))
                cards.append(card_of(o.article))
            else:
                opts.append(Option(o.value, turn.intent_label(o.value), f"/{o.value}"))
        question = turn.t("clarify_question") if len(opts) > 1 else turn.t("confirm_question", option=opts[0].label)
        turn.emit(ClarificationAsked(ts=turn.ts, kind="intent", question=question, options=tuple(opts),
                                     articles=tuple(cards)))
        turn.say(question, [Button(o.label, o.payload) for o in opts], kind="clarify")
        turn.note("clarify", "hit", ", ".join(o.value for o in opts))
        self._finish(turn, "clarify")

    def _fallback(self, turn: Turn, suggestions: list[ArticleHit]) -> None:
        count = turn.state.fallback_count + 1
        if count >= self.spec.handoff.fallback_after:
            turn.note("fallback", "hit", f"{count} consecutive fallbacks → handoff")
            self.handoff(turn, "repeated_fallback")
            return
        turn.note("fallback", "hit", f"fallback {count}/{self.spec.handoff.fallback_after}")
        self._menu(turn, turn.t("fallback"), kind="fallback", with_human=True)
        if suggestions:
            limit = self.spec.knowledge.max_suggestions
            turn.say(turn.t("suggestions"), articles=[card_of(h) for h in suggestions[:limit]], kind="suggestions")
        self._finish(turn, "fallback")

    # ================================================================ welcome / menus
    def welcome(self, turn: Turn) -> None:
        ctx_rule = turn.context_rule
        channel = turn.state.channel
        text = None
        if ctx_rule is not None and ctx_rule.welcome:
            text = ctx_rule.welcome
        elif channel and channel in self.spec.welcome.channels:
            text = self.spec.welcome.channels[channel]
        parts = [turn.render(text or self.spec.welcome.default)]
        history = turn.state.history
        if history and self.spec.welcome.returning:
            last = next((i for b in reversed(history) for i in reversed(b.intents)
                         if i not in ("greet", "thanks", "goodbye")), None)
            if last:
                parts.append(turn.render(self.spec.welcome.returning, last_topic=turn.intent_label(last)))
        turn.say("".join(parts), kind="welcome")
        with_human = bool(ctx_rule and ctx_rule.offer_human)
        if self.spec.menu and self.spec.menu.categories:
            self._menu(turn, turn.render(self.spec.menu.question), kind="menu", with_human=with_human)
        elif with_human:
            turn.say(None, [self._human_button(turn)], kind="menu")

    def _human_button(self, turn: Turn) -> Button:
        return Button(turn.t("human_button"), "/human_agent")

    def _category_label(self, turn: Turn, category: str) -> str:
        labels = self.spec.menu.labels if self.spec.menu else {}
        return pick_text(labels.get(category), turn.language) or category

    def _menu(self, turn: Turn, question: str, kind: str, with_human: bool) -> None:
        menu = self.spec.menu
        options: tuple[Option, ...] = ()
        if menu and menu.categories:
            options = tuple(Option(c, self._category_label(turn, c), f"{MENU_PREFIX}{c}") for c in menu.categories)
            turn.emit(ClarificationAsked(ts=turn.ts, kind="menu", question=question, options=options))
        buttons = [Button(o.label, o.payload) for o in options]
        if with_human and turn.nlu is not None and "human_agent" in turn.nlu.intents:
            buttons.append(self._human_button(turn))
        turn.say(question, buttons, kind=kind)

    def _category_menu(self, turn: Turn, category: str) -> None:
        intents = (turn.nlu.clarify_menus.get(category) if turn.nlu else None) or []
        if not intents:
            turn.note("clarification", "miss", f"category {category} has no menu")
            self._finish(turn, "clarify")
            return
        question = turn.render(self.spec.menu.category_question if self.spec.menu else "{category}",
                               category=self._category_label(turn, category))
        options = tuple(Option(i, turn.intent_label(i), f"/{i}") for i in intents)
        turn.emit(ClarificationAsked(ts=turn.ts, kind="intent", question=question, options=options))
        turn.say(question, [Button(o.label, o.payload) for o in options], kind="clarify")
        self._finish(turn, "clarify")

    # ================================================================ handoff
    def handoff(self, turn: Turn, reason: str, *, skill_group: str | None = None, priority: str | None = None,
                text: str | None = None, mode: str | None = None, summary: str | None = None) -> None:
        """Hand the conversation to a human, or outside business hours offer to leave a message."""
        h = self.spec.handoff
        if mode != "message" and not turn.situation.open:
            turn.note("handoff", "info", f"{reason}: outside business hours → leave a message")
            turn.say(turn.t("handoff_offline"), kind="handoff")
            if h.offline_flow:
                frame = turn.state.active_flow
                if frame is not None and frame.flow != h.offline_flow:
                    turn.emit(FlowEnded(ts=turn.ts, flow=frame.flow, outcome="interrupted"))
                    frame = None
                if frame is None:
                    self.flows.start(turn, h.offline_flow, f"offline handoff: {reason}")
                else:
                    self.flows.prompt(turn, self.flows.step(frame.flow, frame.step))
            self._finish(turn, "leave_message")
            return
        users = [e.text for e in turn.tracker.tail if isinstance(e, UserUttered)]
        ctx = turn.context_rule
        r = route(self.spec, turn.state, users, reason, turn.ts, turn.intent_category,
                  base_priority=ctx.priority if ctx else None, skill_group=skill_group, priority=priority)
        if not summary:
            summary = summarize(turn.tracker.tail, lambda n: turn.intent_label(n) or "咨询")
        say = text or turn.t("handoff_online")
        turn.say(say, kind="handoff")
        turn.emit(HandedOff(ts=turn.ts, reason=reason, mode=mode or "live", skill_group=r.skill_group,
                            priority=r.priority, summary=summary, routing=r.matched))
        turn.note("handoff", "hit", f"{reason} → {r.skill_group} / {r.priority}"
                                    + (f" (rules: {', '.join(r.matched)})" if r.matched else ""))
        self._finish(turn, "handoff" if mode != "message" else "leave_message")


def _latin_heavy(text: str) -> bool:
    return sum(c.isascii() and c.isalpha() for c in text) * 2 > len(text)
