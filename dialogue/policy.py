"""The reply policy: one fixed order of stages, each recorded in the turn's trace.

For a customer message:

0. **handoff active** — a human has the conversation: the bot records the message and stays silent.
1. **clarification** — the previous bot turn asked "which of these?": an offered button payload,
   an option's label typed out, an ordinal ("第二个") or a parse landing on one of the options
   resolves it deterministically; anything else drops the question and goes on.
2. **rules** — handoff triggers (an explicit request, a handoff rule, strong negative sentiment),
   cancel / back words inside a flow, then keyword rules with a reply. A keyword reply yields to an
   active flow (the flow may need the message, e.g. an order number) and to a flow mapped to the
   message's intent (the operator's more specific script); the trace says so.
3. **active flow** — the message answers the waiting question, or is a digression (answered, then
   the question is asked again; a digression with its own flow stacks it), or is re-prompted.
4. **intent** — an intent with a flow starts it; with a response, answers; greetings get the
   (per-channel) welcome and the session-start menu.
5. **knowledge** — the best article from the :class:`KnowledgeSource`, if any scores high enough.
6. **clarify** — an ambiguous parse asks a question with option buttons.
7. **fallback** — apologise and offer the menu; after ``handoff.fallback_after`` consecutive
   fallbacks, hand off.

Context rules (business hours, holidays, channel, visitor tags) shape stages 2 and 4: VIPs on a
workday get a human at once, others are offered self-service first; outside business hours a
handoff becomes an offer to leave a message.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from lingxi.datasets.dialogue_files import DialogueSpec
from lingxi.nlu.parse import ParseContext, ParseResult

from .actions import pick_text
from .events import (
    ArticleCard,
    Button,
    ClarificationAsked,
    ClarificationResolved,
    FlowEnded,
    HandedOff,
    Option,
    ParseSummary,
    TurnDecided,
    UserUtteranceReverted,
    UserUttered,
)
from .flows import FlowRunner, squash
from .handoff import route, summarize
from .knowledge import ArticleLookup, KnowledgeSource
from .sentiment import negative_score
from .state import PendingClarification
from .turn import Turn, summarize_parse

MENU_PREFIX = "/menu:"
_ORDINALS = {"1": 0, "一": 0, "第一个": 0, "第一": 0, "2": 1, "二": 1, "第二个": 1, "第二": 1, "3": 2, "三": 2,
             "第三个": 2, "第三": 2, "4": 3, "四": 3, "第四个": 3, "第四": 3}
_POLITE_TAIL = re.compile(r"(吧|了|啦|啊|呀|哈|谢谢|谢了|please)$")


def _trimmed(text: str) -> set[str]:
    """The text and its forms without trailing particles: 算了吧 → {算了吧, 算了, 算}."""
    forms = {text}
    while True:
        shorter = _POLITE_TAIL.sub("", text)
        if shorter == text or not shorter:
            return forms
        forms.add(shorter)
        text = shorter


class Policy:
    def __init__(self, spec: DialogueSpec, flows: FlowRunner, knowledge: KnowledgeSource | None = None) -> None:
        self.spec = spec
        self.flows = flows
        self.knowledge = knowledge
        flows.handoff = self.handoff
        self._cancel = {squash(w) for w in spec.cancel_words}
        self._back = {squash(w) for w in spec.back_words}

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
        if accepted and accepted.startswith(MENU_PREFIX):
            summary = None
        else:
            assert turn.nlu is not None
            parse = turn.nlu.parse(accepted or text, parse_ctx)
            summary = summarize_parse(parse, state.language)
            if accepted:  # a button click says nothing about the customer's language
                summary = msgspec.structs.replace(summary, language=state.language)
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
                intent = option.value
                summary = ParseSummary(intent=intent, confidence=1.0, decision="answer",
                                       language=summary.language if summary else turn.language,
                                       entities=summary.entities if summary else ())
                turn.parse = summary
                parse = None  # the typed text's own parse no longer decides
            else:
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
        # 4..7
        self._respond(turn, text, summary, parse, intent)

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
        from .events import SlotSet

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
        if summary and summary.intent and summary.decision in ("answer", "clarify", "rule"):
            for o in pending.options:
                if o.value == summary.intent and summary.decision != "clarify":
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
            rule_text = human_rule.response if human_rule is not None and turn.situation.open else None
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
        if parse is not None and parse.decision == "rule" and parse.matched_rules:
            top = parse.matched_rules[0]
            has_reply = bool(top.response or top.article)
            if has_reply:
                if frame is not None:
                    turn.note("rules", "skip", f"keyword rule {top.rule_id} deferred: flow {frame.flow} is active")
                    return False
                flow = self.flows.flow_for_intent(intent)
                if flow is not None:
                    turn.note("rules", "skip", f"keyword rule {top.rule_id} deferred: intent {intent} has flow {flow}")
                    return False
                if intent == "greet" and turn.state.session_turns <= 1:
                    turn.note("rules", "skip", f"keyword rule {top.rule_id}: greeting at session start → welcome")
                    return False
                turn.note("rules", "hit", f"keyword rule {top.rule_id} ({top.match} {top.pattern!r})")
                self._reply_rule(turn, top)
                self._finish(turn, "rule", intent)
                return True
        turn.note("rules", "miss", "no handoff trigger or keyword rule")
        return False

    def _reply_rule(self, turn: Turn, rule: Any) -> None:
        card = self._card(rule.article) if rule.article else None
        turn.say(rule.response, article=card, kind="article" if card else "text")

    def _card(self, article_id: str) -> ArticleCard:
        hit = self.knowledge.get(article_id) if isinstance(self.knowledge, ArticleLookup) else None
        if hit is None:
            return ArticleCard(id=article_id)
        return ArticleCard(id=hit.article_id, title=hit.title, snippet=hit.snippet, url=hit.url)

    # ---------------------------------------------------------------- 3. active flow
    def _active_flow(self, turn: Turn, text: str, summary: ParseSummary | None, parse: ParseResult | None,
                     intent: str | None) -> bool:
        frame = turn.state.active_flow
        flow = self.flows.flow(frame.flow)
        own = set(flow.trigger.intents)
        digression = None
        if flow.interruptible and summary is not None:
            if parse is not None and parse.decision == "rule" and parse.matched_rules \
                    and (parse.matched_rules[0].response or parse.matched_rules[0].article) \
                    and intent not in own and self.flows.flow_for_intent(intent) != flow.id:
                digression = "rule"
            elif summary.decision == "answer" and intent and intent not in own:
                meta = turn.nlu.intents.get(intent) if turn.nlu else None
                if self.flows.flow_for_intent(intent) or (meta and meta.response):
                    digression = "intent"
        outcome = self.flows.handle_input(turn, text, summary, allow_free_text=digression is None)
        if outcome.consumed:
            turn.intent = None  # the message was an answer, whatever the classifier thought of it
            self._finish(turn, "flow")
            return True
        if digression is None:
            turn.note("flow", "miss", outcome.detail)
            turn.intent = None
            self.flows.reject(turn)
            self._finish(turn, "flow")
            return True
        # a question on the side: answer it, then come back to the waiting question
        other_flow = self.flows.flow_for_intent(intent)
        if other_flow and other_flow != frame.flow:
            turn.note("flow", "info", f"digression {intent} has its own flow: {other_flow} stacked on {frame.flow}")
            self.flows.start(turn, other_flow, f"digression from {frame.flow}", text, summary)
            self._finish(turn, "flow", intent)
            return True
        turn.note("flow", "info", f"digression ({digression} {intent}); answer, then resume {frame.flow}")
        if digression == "rule":
            self._reply_rule(turn, parse.matched_rules[0])
        else:
            turn.say(turn.nlu.intents[intent].response)
        self.flows.prompt(turn, self.flows.step(frame.flow, frame.step), resume=True)
        self._finish(turn, "answer", intent)
        return True

    # ---------------------------------------------------------------- 4..7
    def _respond(self, turn: Turn, text: str, summary: ParseSummary | None, parse: ParseResult | None,
                 intent: str | None) -> None:
        decision = summary.decision if summary else None
        understood = intent is not None and decision in ("answer", "rule")
        # 4. intent
        if understood:
            flow = self.flows.flow_for_intent(intent)
            meta = turn.nlu.intents.get(intent) if turn.nlu else None
            if intent == "greet":
                turn.note("intent", "hit", "greeting → welcome and menu")
                self.welcome(turn)
                self._finish(turn, "welcome", intent)
                return
            if flow is not None:
                turn.note("intent", "hit", f"{intent} ({summary.confidence:.2f}) → flow {flow}")
                self.flows.start(turn, flow, f"intent {intent}", text, summary)
                self._finish(turn, "flow", intent)
                return
            reply = parse.response if parse is not None else None
            reply_text = (reply.text if reply else None) or (meta.response if meta else None)
            if reply_text or (reply and reply.article):
                turn.note("intent", "hit", f"{intent} ({summary.confidence:.2f}) → response")
                card = self._card(reply.article) if reply and reply.article else None
                turn.say(reply_text, article=card, kind="article" if card else "text")
                self._finish(turn, "answer", intent)
                return
            turn.note("intent", "miss", f"{intent} has no response or flow")
        else:
            turn.note("intent", "miss", f"parse decision {decision}" if decision else "no parse")
        # 5. knowledge
        if self.knowledge is not None and text.strip():
            hits = self.knowledge.search(text, turn.state.channel, turn.state.tags)
            good = [h for h in hits if h.score >= self.spec.knowledge.min_score][: self.spec.knowledge.max_articles]
            if good:
                top = good[0]
                turn.note("knowledge", "hit", f"article {top.article_id} (score {top.score:.2f})")
                turn.say(turn.t("article_intro"),
                         article=ArticleCard(id=top.article_id, title=top.title, snippet=top.snippet, url=top.url),
                         kind="article")
                self._finish(turn, "knowledge", intent)
                return
            turn.note("knowledge", "miss", f"no article scored ≥ {self.spec.knowledge.min_score}"
                                           + (f" (best {hits[0].score:.2f})" if hits else ""))
        else:
            turn.note("knowledge", "skip", "no knowledge source")
        # 6. clarify
        if parse is not None and parse.decision == "clarify" and parse.clarification and parse.clarification.options:
            c = parse.clarification
            options = tuple(Option(o.intent, o.label, o.payload) for o in c.options)
            turn.emit(ClarificationAsked(ts=turn.ts, kind="intent", question=c.question, options=options))
            turn.say(c.question, [Button(o.label, o.payload) for o in options], kind="clarify")
            turn.note("clarify", "hit", f"ambiguous: {', '.join(o.value for o in options)}")
            self._finish(turn, "clarify", intent)
            return
        turn.note("clarify", "skip", "parse is not ambiguous")
        # 7. fallback
        count = turn.state.fallback_count + 1
        if count >= self.spec.handoff.fallback_after:
            turn.note("fallback", "hit", f"{count} consecutive fallbacks → handoff")
            self.handoff(turn, "repeated_fallback")
            return
        turn.note("fallback", "hit", f"fallback {count}/{self.spec.handoff.fallback_after}")
        self._menu(turn, turn.t("fallback"), kind="fallback", with_human=True)
        self._finish(turn, "fallback", intent)

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

    def _menu(self, turn: Turn, question: str, kind: str, with_human: bool) -> None:
        menu = self.spec.menu
        options: tuple[Option, ...] = ()
        if menu and menu.categories:
            options = tuple(Option(c, c, f"{MENU_PREFIX}{c}") for c in menu.categories)
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
                               category=category)
        options = tuple(Option(i, turn.intent_label(i), f"/{i}") for i in intents)
        turn.emit(ClarificationAsked(ts=turn.ts, kind="intent", question=question, options=options))
        turn.say(question, [Button(o.label, o.payload) for o in options], kind="clarify")
        self._finish(turn, "clarify")

    # ================================================================ handoff
    def handoff(self, turn: Turn, reason: str, *, skill_group: str | None = None, priority: str | None = None,
                text: str | None = None, mode: str | None = None) -> None:
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
        summary = summarize(turn.tracker.tail, lambda n: turn.intent_label(n) or "咨询")
        say = text or turn.t("handoff_online")
        turn.say(say, kind="handoff")
        turn.emit(HandedOff(ts=turn.ts, reason=reason, mode=mode or "live", skill_group=r.skill_group,
                            priority=r.priority, summary=summary, routing=r.matched))
        turn.note("handoff", "hit", f"{reason} → {r.skill_group} / {r.priority}"
                                    + (f" (rules: {', '.join(r.matched)})" if r.matched else ""))
        self._finish(turn, "handoff" if mode != "message" else "leave_message")


def text_of(value: Any, language: str) -> str:
    return pick_text(value, language)
