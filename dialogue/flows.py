"""Running flows: declarative step graphs (say / ask / branch / action / article / handoff / end).

A flow runs step by step until it needs the customer (an ``ask`` whose slot is empty) or ends.
Flows stack: a flow started while another waits (a digression that has its own flow) runs on top
and, when it ends, the one below resumes with its question asked again. Every move is an event
(``flow_started``, ``flow_step``, ``slot``, ``ask_rejected``, ``flow_ended``), so the flow's
position is part of the folded state like everything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lingxi.datasets.dialogue_files import (
    ActionSpec,
    BranchCase,
    ChoiceSpec,
    Condition,
    DialogueSpec,
    FlowSpec,
    SlotSpec,
    StepSpec,
)
from lingxi.nlu.texts import pick_text

from .actions import ActionClient
from .events import (
    ActionExecuted,
    ArticleCard,
    AskRejected,
    Button,
    FlowEnded,
    FlowStarted,
    FlowStepped,
    ParseSummary,
    SlotSet,
    UserUttered,
)
from .turn import Turn

MAX_STEPS_PER_TURN = 100  # a safety net; load-time validation already rejects cycles without an ask

YES = {"是", "是的", "对", "对的", "确认", "确定", "好", "好的", "可以", "行", "嗯", "嗯嗯", "没问题", "提交", "确认提交",
       "yes", "y", "ok", "okay", "sure", "confirm", "yep"}
NO = {"否", "不是", "不对", "不", "不行", "不可以", "不确认", "先不", "no", "n", "nope"}
_PUNCT = re.compile(r"[\s,.!?;:，。！？；：、~～…\"'“”‘’()（）\[\]【】]+")


def squash(text: str) -> str:
    return _PUNCT.sub("", text).lower()


def match_choice(text: str, choices: list[ChoiceSpec]) -> str | None:
    """The choice a message picks: exact value/label/synonym first, then the longest one contained."""
    t = squash(text)
    if not t:
        return None
    best: tuple[int, str] | None = None
    for choice in choices:
        labels = list(choice.label.values()) if isinstance(choice.label, dict) else [choice.label or ""]
        names = [choice.value, *labels, *choice.synonyms]
        for name in filter(None, (squash(n) for n in names)):
            if t == name:
                return choice.value
            if name in t and (best is None or len(name) > best[0]):
                best = (len(name), choice.value)
    return best[1] if best else None


_NEGATION = re.compile(r"不|别|没有|取消|no\b|not\b|don'?t", re.IGNORECASE)
_AFFIRM = ("确认", "确定", "提交", "没问题", "可以", "好的", "同意", "ok", "yes", "sure", "confirm")
_PARTICLES = re.compile(r"(吧|了|啦|啊|呀|哈|嗯|滴|哦|呢)+$")


def match_boolean(text: str) -> bool | None:
    """Yes / no / neither. A short answer counts as yes when it holds a yes word and no negation
    ("好 确认吧", "没问题 确认提交"), as no when it is a no word."""
    t = squash(text)
    bare = _PARTICLES.sub("", t) or t
    if t in YES or bare in YES:
        return True
    if t in NO or bare in NO:
        return False
    if len(t) <= 10 and any(w in t for w in _AFFIRM) and not _NEGATION.search(t.replace("没问题", "")):
        return True
    return None


@dataclass
class FlowOutcome:
    consumed: bool
    detail: str = ""


class FlowRunner:
    def __init__(self, spec: DialogueSpec, actions: ActionClient | None, knowledge: Any = None,
                 handoff: Callable[..., None] | None = None) -> None:
        self.spec = spec
        self.actions = actions
        self.knowledge = knowledge
        self.handoff = handoff  # policy callback: handoff(turn, reason, skill_group=, priority=, text=, mode=)

    # ------------------------------------------------------------ lookups
    def flow(self, flow_id: str) -> FlowSpec:
        return self.spec.flows[flow_id]

    def step(self, flow_id: str, step_id: str) -> StepSpec:
        return next(s for s in self.flow(flow_id).steps if s.id == step_id)

    def flow_for_intent(self, intent: str | None) -> str | None:
        if not intent:
            return None
        return next((f.id for f in self.spec.flows.values() if intent in f.trigger.intents), None)

    def flow_label(self, flow_id: str, language: str | None = None) -> str:
        f = self.spec.flows.get(flow_id)
        return (pick_text(f.name, language) or f.id) if f else flow_id

    def _following(self, flow: FlowSpec, step: StepSpec) -> str | None:
        if step.next:
            return step.next
        idx = next(i for i, s in enumerate(flow.steps) if s.id == step.id)
        return flow.steps[idx + 1].id if idx + 1 < len(flow.steps) else None

    def _slots_of(self, flow: FlowSpec) -> list[str]:
        names = [s.ask for s in flow.steps if s.ask]
        for s in flow.steps:
            if s.action and s.action in self.spec.actions:
                a = self.spec.actions[s.action]
                names.extend(a.result)
                if a.found_slot:
                    names.append(a.found_slot)
        return list(dict.fromkeys(names))

    # ------------------------------------------------------------ start / run
    def start(self, turn: Turn, flow_id: str, reason: str, text: str = "", parse: ParseSummary | None = None) -> None:
        flow = self.flow(flow_id)
        # flow-local slots start empty; auto-fill slots (e.g. the order number) carry over
        for name in self._slots_of(flow):
            slot = self.spec.slots.get(name)
            if slot is not None and not slot.auto_fill and name in turn.state.slots:
                turn.emit(SlotSet(ts=turn.ts, name=name, value=None, source="flow"))
        turn.emit(FlowStarted(ts=turn.ts, flow=flow_id, step=flow.steps[0].id, reason=reason))
        turn.note("flow", "hit", f"start flow {flow_id} ({reason})")
        # the triggering message may already answer some questions ("我想用邮箱找回密码")
        if text:
            for step in flow.steps:
                if step.ask and step.ask not in turn.state.slots:
                    slot = self.spec.slots[step.ask]
                    if slot.type in ("entity", "choice", "pattern"):
                        value = self.extract(slot, text, parse)
                        if value is not None and self._valid(step, value):
                            turn.emit(SlotSet(ts=turn.ts, name=slot.name, value=value, source="user"))
                            turn.note("flow", "info", f"slot {slot.name}={value!r} from the triggering message")
        self.run(turn)

    def run(self, turn: Turn) -> None:
        """Execute steps of the active flow until one waits for the customer or the flow ends."""
        for _ in range(MAX_STEPS_PER_TURN):
            frame = turn.state.active_flow
            if frame is None:
                return
            flow = self.flow(frame.flow)
            step = self.step(frame.flow, frame.step)
            kind = step.kind
            if kind == "ask":
                slot = self.spec.slots[step.ask]
                if step.skip_if_filled and slot.name in turn.state.slots:
                    if not self._advance(turn, flow, step):
                        return
                    continue
                self.prompt(turn, step)
                return
            if kind == "say":
                buttons = [Button(pick_text(c.label, turn.language) or c.value, c.value) for c in step.buttons or []]
                turn.say(turn.render(step.say), buttons, kind="text")
            elif kind == "branch":
                target = self._branch(turn, step.branch or [])
                if target is not None:
                    turn.emit(FlowStepped(ts=turn.ts, flow=flow.id, step=target))
                    continue
            elif kind == "action":
                ok = self._action(turn, self.spec.actions[step.action])
                if not ok:
                    if step.on_error:
                        turn.emit(FlowStepped(ts=turn.ts, flow=flow.id, step=step.on_error))
                        continue
                    self.end(turn, flow.id, "failed")
                    return
            elif kind == "article":
                turn.say(turn.render(step.text) or None, article=self._card(turn, step.article), kind="article")
            elif kind == "handoff":
                summary = turn.render(step.summary) if step.summary else None  # before the flow's slots go
                self.end(turn, flow.id, "completed", resume=False)
                if self.handoff:
                    self.handoff(turn, step.reason or f"flow:{flow.id}", skill_group=step.skill_group,
                                 priority=step.priority, text=turn.render(step.text) or None,
                                 mode="message" if flow.id == self.spec.handoff.offline_flow else None,
                                 summary=summary)
                return
            elif kind == "end":
                if step.text:
                    turn.say(turn.render(step.text))
                self.end(turn, flow.id, "completed")
                return
            if not self._advance(turn, flow, step):
                return
        turn.note("flow", "miss", "step limit reached; flow stopped")
        frame = turn.state.active_flow
        if frame:
            self.end(turn, frame.flow, "failed")

    def _advance(self, turn: Turn, flow: FlowSpec, step: StepSpec) -> bool:
        nxt = self._following(flow, step)
        if nxt is None:
            self.end(turn, flow.id, "completed")
            return False
        turn.emit(FlowStepped(ts=turn.ts, flow=flow.id, step=nxt))
        return True

    def end(self, turn: Turn, flow_id: str, outcome: str, resume: bool = True) -> None:
        turn.emit(FlowEnded(ts=turn.ts, flow=flow_id, outcome=outcome))
        turn.note("flow", "info", f"flow {flow_id} {outcome}")
        below = turn.state.active_flow
        if resume and below is not None:
            turn.note("flow", "info", f"resume flow {below.flow}")
            self.prompt(turn, self.step(below.flow, below.step), resume=True)

    def prompt(self, turn: Turn, step: StepSpec, resume: bool = False, reprompt: bool = False) -> None:
        """Ask the step's question. On ``resume`` (back to a flow after a digression or a flow on
        top of it) the question is prefixed with "我们继续刚才的…"; a question answered meanwhile
        (an order number given in the digression) is not asked again."""
        if resume:
            frame = turn.state.active_flow
            turn.resume_note = turn.t("resume", flow=self.flow_label(frame.flow, turn.language) if frame else "")
        if step.kind != "ask" or (resume and step.skip_if_filled and step.ask in turn.state.slots):
            self.run(turn)
            return
        slot = self.spec.slots[step.ask]
        text = turn.render(step.reprompt if (reprompt and step.reprompt) else step.prompt)
        if turn.resume_note:
            text, turn.resume_note = turn.resume_note + text, None
        buttons = self._buttons(slot, turn.language)
        if step.optional:
            skip = turn.t("skip_button")
            buttons.append(Button(skip, skip))
        turn.say(text, buttons, kind="prompt")

    @staticmethod
    def _buttons(slot: SlotSpec, language: str) -> list[Button]:
        if slot.type == "choice":
            titles = [pick_text(c.label, language) or c.value for c in slot.choices]
            return [Button(t, t) for t in titles]
        if slot.type == "boolean":
            yes, no = ("Confirm", "Cancel") if language == "en" else ("确认", "取消")
            return [Button(yes, yes), Button(no, no)]
        return []

    def _card(self, turn: Turn, article_id: str | None) -> ArticleCard:
        """The card of a flow's article step: the live article when the knowledge base has it."""
        hit = self.knowledge.get(article_id, turn.language) if self.knowledge is not None and article_id else None
        if hit is None:
            return ArticleCard(id=article_id or "")
        return ArticleCard(id=hit.article_id, title=hit.title, snippet=hit.answer or hit.snippet, url=hit.url)

    # ------------------------------------------------------------ input
    def handle_input(self, turn: Turn, text: str, parse: ParseSummary | None, allow_free_text: bool) -> FlowOutcome:
        """Try to use the message as the answer to the active ask. ``allow_free_text``: the caller
        found no digression, so text slots may take the message as it is."""
        frame = turn.state.active_flow
        step = self.step(frame.flow, frame.step)
        if step.kind != "ask":
            return FlowOutcome(False, "flow is not waiting for an answer")
        slot = self.spec.slots[step.ask]
        free = slot.type in ("text", "any")
        if free and not allow_free_text:
            return FlowOutcome(False, f"{slot.name} takes free text; message looks like another request")
        value = text.strip() if free else self.extract(slot, text, parse)
        if value is not None and self._valid(step, value):
            turn.emit(SlotSet(ts=turn.ts, name=slot.name, value=value, source="user"))
            turn.note("flow", "hit", f"{frame.flow}.{step.id}: {slot.name}={value!r}")
            flow = self.flow(frame.flow)
            if self._advance(turn, flow, step):
                self.run(turn)
            return FlowOutcome(True)
        return FlowOutcome(False, f"no valid {slot.name} in the message")

    def skip(self, turn: Turn) -> None:
        """The customer skips an optional question: say so, record it, and go on with the flow."""
        frame = turn.state.active_flow
        step = self.step(frame.flow, frame.step)
        turn.emit(SlotSet(ts=turn.ts, name=step.ask or "", value=None, source="skipped"))
        turn.say(turn.t("skipped"))
        if self._advance(turn, self.flow(frame.flow), step):
            self.run(turn)

    def reject(self, turn: Turn) -> None:
        """The message did not answer the question: ask again, or give up after max_retries (an
        optional question is then skipped, and the customer is told)."""
        frame = turn.state.active_flow
        step = self.step(frame.flow, frame.step)
        turn.emit(AskRejected(ts=turn.ts, flow=frame.flow, step=step.id, slot=step.ask or ""))
        retries = turn.state.active_flow.retries
        if retries > step.max_retries:
            turn.note("flow", "miss", f"{frame.flow}.{step.id}: {retries} failed attempts (max {step.max_retries})")
            if step.optional:
                self.skip(turn)
                return
            if step.on_failure:
                turn.emit(FlowStepped(ts=turn.ts, flow=frame.flow, step=step.on_failure))
                self.run(turn)
            else:
                turn.say(turn.t("flow_failed"))
                self.end(turn, frame.flow, "failed")
            return
        turn.note("flow", "miss", f"{frame.flow}.{step.id}: re-prompt ({retries}/{step.max_retries})")
        self.prompt(turn, step, reprompt=True)

    def extract(self, slot: SlotSpec, text: str, parse: ParseSummary | None) -> Any:
        if slot.type == "entity":
            for ent in parse.entities if parse else ():
                if ent.entity == slot.entity:
                    return ent.value
            return None
        if slot.type == "pattern":
            m = re.search(slot.pattern or "", text)
            if not m:
                return None
            return m.group(1) if m.groups() else m.group(0)
        if slot.type == "choice":
            return match_choice(text, slot.choices)
        if slot.type == "boolean":
            return match_boolean(text)
        return text.strip() or None

    @staticmethod
    def _valid(step: StepSpec, value: Any) -> bool:
        v = step.validate
        if v is None:
            return True
        s = str(value)
        if v.min_length is not None and len(s) < v.min_length:
            return False
        if v.max_length is not None and len(s) > v.max_length:
            return False
        return not (v.pattern and not re.search(v.pattern, s))

    # ------------------------------------------------------------ branch / action
    def _branch(self, turn: Turn, cases: list[BranchCase]) -> str | None:
        for case in cases:
            if case.when is None or self.holds(turn, case.when):
                turn.note("flow", "info", f"branch → {case.goto}")
                return case.goto
        return None

    def holds(self, turn: Turn, c: Condition) -> bool:
        state = turn.state
        if c.slot is not None:
            value = state.slots.get(c.slot)
            if c.is_set is not None and (value is not None) != c.is_set:
                return False
            if c.equals is not None and value != c.equals:
                return False
            if c.one_of is not None and value not in c.one_of:
                return False
        last = turn.parse
        if c.intent is not None and (not last or last.intent != c.intent):
            return False
        if c.intents is not None and (not last or last.intent not in c.intents):
            return False
        if c.entity is not None and not (last and any(e.entity == c.entity for e in last.entities)):
            return False
        if c.channels is not None and (state.channel or "") not in c.channels:
            return False
        if c.visitor_tags_any is not None and not set(state.tags) & set(c.visitor_tags_any):
            return False
        return not (c.business_hours is not None and (c.business_hours == "open") != turn.situation.open)

    def _action(self, turn: Turn, action: ActionSpec) -> bool:
        if self.actions is None:
            result_ok, status, data, error = False, None, None, "no backend configured"
        else:
            r = self.actions.call(action, dict(turn.state.slots))
            result_ok, status, data, error = r.ok, r.status, r.data, r.error
        turn.emit(ActionExecuted(ts=turn.ts, name=action.name, ok=result_ok, status=status, error=error))
        if not result_ok:
            turn.note("flow", "miss", f"action {action.name} failed: {error}; fallback reply")
            turn.say(turn.render(action.fallback), kind="fallback")
            return False
        from .actions import dig

        found = status != 404
        for slot, path in action.result.items():
            value = dig(data, path) if found else None
            turn.emit(SlotSet(ts=turn.ts, name=slot, value=value, source="action"))
        if action.found_slot:
            turn.emit(SlotSet(ts=turn.ts, name=action.found_slot, value=found, source="action"))
        turn.note("flow", "info", f"action {action.name}: HTTP {status}")
        return True

    # ------------------------------------------------------------ going back
    def can_go_back(self, turn: Turn) -> bool:
        """True when the previous user message answered a question of the active flow."""
        tail = turn.tracker.tail
        users = [i for i, e in enumerate(tail) if isinstance(e, UserUttered)]
        if len(users) < 2:
            return False
        prev, cur = users[-2], users[-1]
        frame = turn.state.active_flow
        between = tail[prev:cur]
        return frame is not None and any(isinstance(e, SlotSet) and e.source == "user" for e in between) \
            and not any(isinstance(e, FlowStarted | FlowEnded) for e in between)
