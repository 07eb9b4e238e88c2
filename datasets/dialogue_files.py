"""Dialogue files of a domain: flows, slots, backend actions and dialogue config, as typed YAML.

They live in the domain folder's ``flows/`` subfolder (the intent loader skips it); every
``flows/*.yml`` file may hold any of the top-level keys of :class:`DialogueFile` and the loader
merges them. Conversation tests live in ``tests/*.yml`` (:func:`load_conversation_tests`).

Every problem is reported as ``file:line: message`` — unknown keys, a step whose ``next`` names no
step (dangling), an ``ask`` of an undeclared slot, a cycle of steps with no ``ask`` in it (it
would loop forever without waiting for the customer), an unknown action — and nothing loads until
all are fixed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from lingxi.nlu.texts import Text  # one text, or per language: {zh: ..., en: ...}

from .domain import WEEKDAYS, DomainError, Problem, RuleConditions, TimeWindow, locate, read_yaml

Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TEMPLATE_VAR = re.compile(r"\{(\w+)(?:\|(\w+))?\}")
BUILTIN_VARS = {"flow", "category", "last_topic", "hours", "option"}


class _Spec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    pass


# ------------------------------------------------------------------ slots, flows, actions


class ChoiceSpec(_Spec, kw_only=True):
    value: str
    label: Text | None = None  # the button title; per language as {zh: ..., en: ...}
    synonyms: list[str] = msgspec.field(default_factory=list)


class SlotSpec(_Spec, kw_only=True):
    name: str
    type: Literal["text", "entity", "pattern", "choice", "boolean", "any"] = "text"
    entity: str | None = None
    pattern: str | None = None
    choices: list[ChoiceSpec] = msgspec.field(default_factory=list)
    auto_fill: bool = False  # fill from any message's entity of this type, asked or not
    description: str | None = None


class ValidateSpec(_Spec, kw_only=True):
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None


class Condition(_Spec, kw_only=True):
    """All given fields must hold."""

    slot: str | None = None
    equals: Any = None
    one_of: list[Any] | None = None
    is_set: bool | None = None
    intent: str | None = None
    intents: list[str] | None = None
    entity: str | None = None
    channels: list[str] | None = None
    visitor_tags_any: list[str] | None = None
    business_hours: Literal["open", "closed"] | None = None


class BranchCase(_Spec, kw_only=True):
    when: Condition | None = None  # absent: the "else" case
    goto: str


class StepSpec(_Spec, kw_only=True):
    id: str
    # exactly one of the step kinds:
    say: Text | None = None
    ask: str | None = None
    branch: list[BranchCase] | None = None
    action: str | None = None
    article: str | None = None
    handoff: bool | None = None
    end: bool | None = None
    # common
    next: str | None = None
    buttons: list[ChoiceSpec] | None = None  # quick replies attached to a say
    # ask
    prompt: Text | None = None
    reprompt: Text | None = None
    validate: ValidateSpec | None = None
    max_retries: int = 2
    on_failure: str | None = None
    skip_if_filled: bool = True
    optional: bool = False  # the customer may skip the question (a 跳过 button, skip words); said, never silent
    # action
    on_error: str | None = None
    # article / handoff / end message
    text: Text | None = None
    # handoff
    reason: str | None = None
    skill_group: str | None = None
    priority: Priority | None = None
    summary: Text | None = None  # the handoff's summary, a template over slots (e.g. the customer's message)

    @property
    def kind(self) -> str:
        kinds = [k for k in ("say", "ask", "branch", "action", "article", "handoff", "end")
                 if getattr(self, k) is not None]
        return kinds[0] if len(kinds) == 1 else ""


class FlowTrigger(_Spec, kw_only=True):
    intents: list[str] = msgspec.field(default_factory=list)


class FlowSpec(_Spec, kw_only=True):
    id: str
    name: Text | None = None  # how the bot names the flow to the customer ("我们继续刚才的{flow}")
    description: str | None = None
    trigger: FlowTrigger = msgspec.field(default_factory=FlowTrigger)
    steps: list[StepSpec]
    interruptible: bool = True


class ActionSpec(_Spec, kw_only=True):
    """An HTTP call to the shop's backend. ``url``/``body`` are templates over slots and
    ``{base_url}``; ``result`` maps slots to dotted paths in the JSON reply; ``found_slot`` is set
    to true on 2xx and false on 404. Anything else (timeout, 5xx, bad JSON) → ``fallback`` reply."""

    name: str
    url: str
    method: Literal["GET", "POST", "PUT"] = "GET"
    timeout: float = 3.0
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body: dict[str, Any] | None = None
    result: dict[str, str] = msgspec.field(default_factory=dict)
    found_slot: str | None = None
    fallback: Text = "抱歉，系统暂时繁忙，请稍后再试。"


# ------------------------------------------------------------------ dialogue config


class BusinessHours(_Spec, kw_only=True):
    windows: list[TimeWindow] = msgspec.field(default_factory=lambda: [TimeWindow()])
    holidays: list[str] = msgspec.field(default_factory=list)  # YYYY-MM-DD: closed all day
    workdays: list[str] = msgspec.field(default_factory=list)  # make-up working days (调休) that count as workdays
    hours_text: str = ""


class WelcomeSpec(_Spec, kw_only=True):
    default: Text = "您好，请问有什么可以帮您？"
    channels: dict[str, Text] = msgspec.field(default_factory=dict)
    returning: Text | None = None


class MenuSpec(_Spec, kw_only=True):
    question: Text = "请问您想咨询哪类问题？"
    categories: list[str] = msgspec.field(default_factory=list)
    labels: dict[str, Text] = msgspec.field(default_factory=dict)  # a category's button title, per language
    category_question: Text = "请问是{category}的哪方面问题？"


class ContextWhen(_Spec, kw_only=True):
    channels: list[str] | None = None
    visitor_tags_any: list[str] | None = None
    visitor_tags_none: list[str] | None = None
    workday: bool | None = None
    business_hours: Literal["open", "closed"] | None = None
    time_windows: list[TimeWindow] | None = None


class ContextRule(_Spec, kw_only=True):
    """Per-situation behaviour: the first rule whose ``when`` holds applies."""

    id: str
    when: ContextWhen = msgspec.field(default_factory=ContextWhen)
    offer_human: bool = False  # show a 转人工 button at once and hand off on the first request
    self_service_first: bool = False  # first request for a human before any question → self-service nudge
    welcome: Text | None = None
    priority: Priority | None = None


class RouteWhen(_Spec, kw_only=True):
    intents_any: list[str] | None = None
    categories_any: list[str] | None = None
    keywords_any: list[str] | None = None
    visitor_tags_any: list[str] | None = None
    channels: list[str] | None = None
    reasons: list[str] | None = None
    repeat_contact_hours: float | None = None


class RouteRule(_Spec, kw_only=True):
    id: str
    when: RouteWhen
    skill_group: str | None = None
    priority: Priority | None = None
    priority_boost: int = 0


class HandoffConfig(_Spec, kw_only=True):
    intents: list[str] = msgspec.field(default_factory=lambda: ["human_agent"])
    rules: list[str] = msgspec.field(default_factory=list)  # keyword rules that hand off
    fallback_after: int = 2
    sentiment_threshold: float = 2.0
    offline_flow: str | None = None
    default_skill_group: str = "general"
    default_priority: Priority = "normal"
    transcript_turns: int = 20


class TriggerSpec(_Spec, kw_only=True):
    """A behaviour trigger: an event from the frontend → a proactive message."""

    id: str
    event: str
    page: str | None = None  # regex on the page
    min_seconds: float | None = None
    without_action: bool = False  # no message / cart / order action since the page was opened
    data: dict[str, list[Any]] = msgspec.field(default_factory=dict)  # data key → accepted values
    conditions: RuleConditions | None = None
    once_per_session: bool = True
    cooldown_s: float | None = None
    say: Text
    buttons: list[ChoiceSpec] = msgspec.field(default_factory=list)
    start_flow: str | None = None


class SentimentConfig(_Spec, kw_only=True):
    strong: list[str] = msgspec.field(default_factory=list)  # 2 points each
    weak: list[str] = msgspec.field(default_factory=list)  # 1 point each
    intensifiers: list[str] = msgspec.field(default_factory=list)  # +1 when present with a negative term


class KnowledgeConfig(_Spec, kw_only=True):
    """How the bot uses the knowledge base in a conversation. When to answer with an article is not
    set here: it is fitted on held-out questions (``lingxi.dialogue.calibration``)."""

    enabled: bool = True
    max_suggestions: int = 3  # article cards after a fallback (only those above the fitted cut-off)


class DialogueFile(_Spec, kw_only=True):
    """What one ``flows/*.yml`` file may contain."""

    version: int | None = None
    timezone: str | None = None
    slots: list[SlotSpec] = msgspec.field(default_factory=list)
    actions: list[ActionSpec] = msgspec.field(default_factory=list)
    flows: list[FlowSpec] = msgspec.field(default_factory=list)
    business_hours: BusinessHours | None = None
    session_timeout_minutes: float | None = None
    welcome: WelcomeSpec | None = None
    menu: MenuSpec | None = None
    texts: dict[str, Text] = msgspec.field(default_factory=dict)
    cancel_words: list[str] | None = None
    back_words: list[str] | None = None
    skip_words: list[str] | None = None
    chitchat_intents: list[str] | None = None  # small talk: never a clarification option or a side question in a flow
    handoff: HandoffConfig | None = None
    routing: list[RouteRule] = msgspec.field(default_factory=list)
    context_rules: list[ContextRule] = msgspec.field(default_factory=list)
    triggers: list[TriggerSpec] = msgspec.field(default_factory=list)
    sentiment: SentimentConfig | None = None
    knowledge: KnowledgeConfig | None = None
    traditional_replies: bool | None = None  # answer a message in traditional characters in traditional


DEFAULT_TEXTS: dict[str, Text] = {
    "fallback": {"zh": "抱歉，我没有理解您的意思，可以换个说法，或者从下面选择您要咨询的问题。",
                 "en": "Sorry, I didn't get that. Could you rephrase, or pick a topic below?"},
    "cancelled": {"zh": "好的，已为您取消。还有其他可以帮您的吗？", "en": "OK, cancelled. Anything else?"},
    "resume": {"zh": "我们继续刚才的{flow}：", "en": "Let's continue with {flow}:"},
    "handoff_online": {"zh": "正在为您转接人工客服，请稍候。", "en": "Connecting you to a human agent, please wait."},
    "handoff_offline": {"zh": "现在是非工作时间，人工客服暂时无法接入。您可以给我们留言，客服上班后会第一时间联系您。",
                        "en": "Our agents are offline now. Please leave a message and we will get back to you."},
    "self_service_first": {"zh": "我先帮您看看：请简单描述一下您遇到的问题，或从下面选择问题类型。"
                                 "如果仍需人工服务，请再发送「转人工」。",
                           "en": "Let me try first: please describe your problem or pick a topic. "
                                 "Send \"agent\" again if you still want a human."},
    "human_button": {"zh": "转人工", "en": "Talk to an agent"},
    "flow_failed": {"zh": "抱歉，这一步多次没能识别，我先为您结束当前流程。", "en": "Sorry, I couldn't get that; let's stop here."},
    "back": {"zh": "好的，回到上一步。", "en": "OK, going back one step."},
    "back_unavailable": {"zh": "已经没有上一步了。", "en": "There is no earlier step."},
    "article_intro": {"zh": "为您找到这篇帮助文章：", "en": "This help article should answer it:"},
    "clarify_question": {"zh": "您是想问以下哪个问题？", "en": "Did you mean one of these?"},
    "confirm_question": {"zh": "您是想问「{option}」吗？", "en": "Did you mean \"{option}\"?"},
    "suggestions": {"zh": "您也可以看看这些帮助文章：", "en": "These help articles may be related:"},
    "skip_button": {"zh": "跳过", "en": "Skip"},
    "skipped": {"zh": "好的，这一项先不填。", "en": "OK, let's skip that."},
    "continue_prompt": {"zh": "如需继续，", "en": "To continue, "},
}

DEFAULT_CANCEL = ["算了", "取消", "不用了", "不要了", "不办了", "不弄了", "先不了", "退出", "不需要了", "cancel",
                  "stop", "never mind", "forget it"]
DEFAULT_BACK = ["上一步", "返回上一步", "回到上一步", "back"]
DEFAULT_SKIP = ["跳过", "跳过吧", "不留了", "不想留", "不方便留", "skip", "no thanks"]


@dataclass
class DialogueSpec:
    """The merged, validated dialogue files of a domain."""

    timezone: str = "Asia/Shanghai"
    slots: dict[str, SlotSpec] = field(default_factory=dict)
    actions: dict[str, ActionSpec] = field(default_factory=dict)
    flows: dict[str, FlowSpec] = field(default_factory=dict)
    business_hours: BusinessHours = field(default_factory=BusinessHours)
    session_timeout_minutes: float = 30.0
    welcome: WelcomeSpec = field(default_factory=WelcomeSpec)
    menu: MenuSpec | None = None
    texts: dict[str, Text] = field(default_factory=lambda: dict(DEFAULT_TEXTS))
    cancel_words: list[str] = field(default_factory=lambda: list(DEFAULT_CANCEL))
    back_words: list[str] = field(default_factory=lambda: list(DEFAULT_BACK))
    skip_words: list[str] = field(default_factory=lambda: list(DEFAULT_SKIP))
    chitchat_intents: list[str] = field(default_factory=lambda: ["greet", "thanks", "goodbye"])
    handoff: HandoffConfig = field(default_factory=HandoffConfig)
    routing: list[RouteRule] = field(default_factory=list)
    context_rules: list[ContextRule] = field(default_factory=list)
    triggers: list[TriggerSpec] = field(default_factory=list)
    sentiment: SentimentConfig = field(default_factory=SentimentConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    traditional_replies: bool = False
    root: Path | None = None
    locations: dict[str, tuple[str, int]] = field(default_factory=dict)


def text_vars(text: Text | None) -> set[str]:
    if text is None:
        return set()
    values = text.values() if isinstance(text, dict) else [text]
    return {m.group(1) for v in values for m in _TEMPLATE_VAR.finditer(v)}


# ------------------------------------------------------------------ loading and validation


def dialogue_folder(domain_root: str | Path) -> Path:
    return Path(domain_root) / "flows"


def load_dialogue(domain_root: str | Path, known_intents: set[str] | None = None,
                  known_rules: set[str] | None = None) -> DialogueSpec:
    """Load ``<domain>/flows/*.yml``; an absent folder gives the defaults (no flows)."""
    root = Path(domain_root)
    folder = dialogue_folder(root)
    spec = DialogueSpec(root=root)
    files = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]) if folder.is_dir() else []
    problems: list[Problem] = []
    nodes: dict[str, yaml.Node | None] = {}
    for path in files:
        display = str(path.relative_to(root))
        try:
            part, node = read_yaml(path, display, DialogueFile)
        except DomainError as exc:
            problems.extend(exc.problems)
            continue
        nodes[display] = node
        _merge(spec, part, display, node, problems)
    if not problems:
        problems.extend(_validate(spec, known_intents, known_rules))
    if problems:
        raise DomainError(problems)
    return spec


def _merge(spec: DialogueSpec, part: DialogueFile, display: str, node: yaml.Node | None,
           problems: list[Problem]) -> None:
    loc = spec.locations
    for key in ("timezone", "business_hours", "session_timeout_minutes", "welcome", "menu", "handoff",
                "sentiment", "knowledge", "cancel_words", "back_words", "skip_words", "chitchat_intents",
                "traditional_replies"):
        value = getattr(part, key)
        if value is not None:
            setattr(spec, key, value)
            loc[key] = (display, locate(node, f"$.{key}"))
    for name, text in part.texts.items():
        spec.texts[name] = text
        loc[f"text:{name}"] = (display, locate(node, f"$.texts.{name}"))
    for kind, items, store in (("slot", part.slots, spec.slots), ("action", part.actions, spec.actions),
                               ("flow", part.flows, spec.flows)):
        for i, item in enumerate(items):
            key = item.name if kind != "flow" else item.id
            where = (display, locate(node, f"$.{kind}s[{i}]"))
            if key in store:
                first = loc[f"{kind}:{key}"]
                problems.append(Problem(*where, f"{kind} {key!r} already defined at {first[0]}:{first[1]}"))
                continue
            store[key] = item
            loc[f"{kind}:{key}"] = where
            if kind == "flow":
                for j in range(len(item.steps)):
                    loc[f"step:{key}:{j}"] = (display, locate(node, f"$.flows[{i}].steps[{j}]"))
    for kind, items, target in (("route", part.routing, spec.routing),
                                ("context_rule", part.context_rules, spec.context_rules),
                                ("trigger", part.triggers, spec.triggers)):
        listname = {"route": "routing", "context_rule": "context_rules", "trigger": "triggers"}[kind]
        for i, item in enumerate(items):
            loc[f"{kind}:{item.id}"] = (display, locate(node, f"$.{listname}[{i}]"))
            target.append(item)


def _validate(spec: DialogueSpec, known_intents: set[str] | None,
              known_rules: set[str] | None) -> list[Problem]:
    out: list[Problem] = []
    loc = spec.locations

    def at(key: str, message: str) -> None:
        file, line = loc.get(key, ("flows", 0))
        out.append(Problem(file, line, message))

    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(spec.timezone)
    except Exception:  # noqa: BLE001 - any failure means an unusable zone name
        at("timezone", f"unknown timezone {spec.timezone!r}")
    for w in spec.business_hours.windows:
        for value in (w.start, w.end):
            if not _HHMM.match(value):
                at("business_hours", f"business_hours: time must be HH:MM, got {value!r}")
    for d in (*spec.business_hours.holidays, *spec.business_hours.workdays):
        if not _DATE.match(d):
            at("business_hours", f"business_hours: dates must be YYYY-MM-DD, got {d!r}")

    for name, slot in spec.slots.items():
        key = f"slot:{name}"
        if slot.type == "entity" and not slot.entity:
            at(key, f"slot {name!r} has type entity but no `entity:`")
        if slot.type == "pattern":
            if not slot.pattern:
                at(key, f"slot {name!r} has type pattern but no `pattern:`")
            else:
                _check_regex(slot.pattern, lambda m, k=key, n=name: at(k, f"slot {n!r}: {m}"))
        if slot.type == "choice" and not slot.choices:
            at(key, f"slot {name!r} has type choice but no `choices:`")
    for name, action in spec.actions.items():
        for var in text_vars(action.url) - set(spec.slots) - {"base_url"}:
            at(f"action:{name}", f"action {name!r}: url uses unknown slot {var!r}")
        for slot in (*action.result, *([action.found_slot] if action.found_slot else [])):
            if slot not in spec.slots:
                at(f"action:{name}", f"action {name!r}: result sets unknown slot {slot!r}")
        if action.timeout <= 0:
            at(f"action:{name}", f"action {name!r}: timeout must be positive")

    for fid, flow in spec.flows.items():
        out.extend(_validate_flow(spec, fid, flow, known_intents))

    if spec.handoff.offline_flow and spec.handoff.offline_flow not in spec.flows:
        at("handoff", f"handoff.offline_flow {spec.handoff.offline_flow!r} is not a flow")
    if known_rules is not None:
        for rule in spec.handoff.rules:
            if rule not in known_rules:
                at("handoff", f"handoff.rules: {rule!r} is not a keyword rule of the domain")
    for trig in spec.triggers:
        if trig.page:
            _check_regex(trig.page, lambda m, t=trig: at(f"trigger:{t.id}", f"trigger {t.id!r}: {m}"))
        if trig.start_flow and trig.start_flow not in spec.flows:
            at(f"trigger:{trig.id}", f"trigger {trig.id!r}: start_flow {trig.start_flow!r} is not a flow")
    return out


def _check_regex(pattern: str, report) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        report(f"bad regex {pattern!r}: {exc}")


def _validate_flow(spec: DialogueSpec, fid: str, flow: FlowSpec, known_intents: set[str] | None) -> list[Problem]:
    out: list[Problem] = []
    loc = spec.locations

    def at_step(j: int, message: str) -> None:
        file, line = loc.get(f"step:{fid}:{j}", loc.get(f"flow:{fid}", ("flows", 0)))
        out.append(Problem(file, line, f"flow {fid!r}: {message}"))

    if not flow.steps:
        file, line = loc[f"flow:{fid}"]
        return [Problem(file, line, f"flow {fid!r} has no steps")]
    if known_intents is not None:
        for intent in flow.trigger.intents:
            if intent not in known_intents:
                file, line = loc[f"flow:{fid}"]
                out.append(Problem(file, line, f"flow {fid!r}: trigger intent {intent!r} is not an intent of the domain"))
    ids: dict[str, int] = {}
    for j, step in enumerate(flow.steps):
        if step.id in ids:
            at_step(j, f"step id {step.id!r} is used twice")
        ids.setdefault(step.id, j)
        if not step.kind:
            at_step(j, f"step {step.id!r} must have exactly one of say / ask / branch / action / article / handoff / end")
    slots = set(spec.slots)
    for j, step in enumerate(flow.steps):
        targets = step_targets(step)
        for case in step.branch or []:
            if case.when and case.when.slot and case.when.slot not in slots:
                at_step(j, f"step {step.id!r} branches on unknown slot {case.when.slot!r}")
        for label, target in targets:
            if target not in ids:
                at_step(j, f"step {step.id!r}: {label} {target!r} is not a step of this flow (dangling)")
        if step.ask is not None and step.ask not in slots:
            at_step(j, f"step {step.id!r} asks for unknown slot {step.ask!r}")
        if step.action is not None and step.action not in spec.actions:
            at_step(j, f"step {step.id!r} calls unknown action {step.action!r}")
        if step.ask is not None and not step.prompt:
            at_step(j, f"step {step.id!r} asks without a `prompt`")
        for text in (step.say, step.prompt, step.reprompt, step.text):
            for var in text_vars(text) - slots - BUILTIN_VARS:
                at_step(j, f"step {step.id!r}: template uses unknown slot {var!r}")
        if step.validate and step.validate.pattern:
            _check_regex(step.validate.pattern, lambda m, jj=j: at_step(jj, m))
    asks = {s.id for s in flow.steps if s.kind == "ask"}
    for cycle in _cycles(flow_successors(flow)):
        if not set(cycle) & asks:
            j = ids[cycle[0]]
            at_step(j, f"steps {' → '.join([*cycle, cycle[0]])} form a cycle without an ask (would loop forever)")
    return out


def step_targets(step: StepSpec) -> list[tuple[str, str]]:
    """The explicit jumps of a step as (field, target step id): next, on_failure, on_error, branch gotos."""
    targets: list[tuple[str, str]] = []
    if step.next:
        targets.append(("next", step.next))
    if step.on_failure:
        targets.append(("on_failure", step.on_failure))
    if step.on_error:
        targets.append(("on_error", step.on_error))
    for case in step.branch or []:
        targets.append(("goto", case.goto))
    return targets


def flow_successors(flow: FlowSpec) -> dict[str, list[str]]:
    """Step id → the steps that can run next: its jumps, plus the following step when it falls
    through (no ``next``, not an end/handoff, and not a branch with an ``else`` case)."""
    ids = {s.id for s in flow.steps}
    edges: dict[str, list[str]] = {}
    for j, step in enumerate(flow.steps):
        succ = [t for _, t in step_targets(step) if t in ids]
        falls_through = step.kind not in ("end", "handoff") and not step.next and (
            step.kind != "branch" or not any(c.when is None for c in step.branch or []))
        if falls_through and j + 1 < len(flow.steps):
            succ.append(flow.steps[j + 1].id)
        edges[step.id] = succ
    return edges


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components that contain a cycle (Tarjan), each in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, []):
                out.append(sorted(comp, key=lambda s: index[s]))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


# ------------------------------------------------------------------ conversation tests


class TurnExpect(_Spec, kw_only=True):
    intent: str | None = None
    decision: str | list[str] | None = None
    bot: str | None = None  # regex searched in the bot texts of the turn, joined by newlines
    not_bot: str | None = None
    buttons: list[str] | None = None  # button titles that must be offered (subset)
    article: str | None = None
    slots: dict[str, Any] | None = None
    flow: str | None = None  # active flow after the turn; "" = none
    handoff: bool | dict[str, Any] | None = None
    silent: bool | None = None
    stage: str | None = None  # the policy stage that decided


class BehaviourSpec(_Spec, kw_only=True):
    kind: str
    page: str | None = None
    seconds: float | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class IdentitySpec(_Spec, kw_only=True):
    kind: str
    value: str


class TestTurn(_Spec, kw_only=True):
    user: str | int | None = None  # a bare number in YAML (a phone, an order id) is a message too
    payload: str | None = None
    event: BehaviourSpec | None = None
    release: bool | None = None
    open: bool | None = None  # the chat window opened (POST /v1/conversations): welcome and menu
    at: str | None = None
    channel: str | None = None
    tags: list[str] | None = None
    identities: list[IdentitySpec] | None = None
    expect: TurnExpect = msgspec.field(default_factory=TurnExpect)


class BackendReply(_Spec, kw_only=True):
    status: int = 200
    json: Any = None
    fail: Literal["timeout", "connect"] | None = None


class TestConversation(_Spec, kw_only=True):
    name: str
    description: str | None = None
    channel: str | None = "web"
    tags: list[str] = msgspec.field(default_factory=list)
    identities: list[IdentitySpec] = msgspec.field(default_factory=list)
    at: str | None = None  # ISO time of the first turn; later turns +30 s each unless they give `at`
    backend: dict[str, BackendReply] = msgspec.field(default_factory=dict)
    turns: list[TestTurn]


class ConversationTestFile(_Spec, kw_only=True):
    conversations: list[TestConversation]


@dataclass
class LoadedTest:
    conversation: TestConversation
    file: str
    line: int
    turn_lines: list[int]


def load_conversation_tests(path: str | Path) -> list[LoadedTest]:
    """Test conversations from a YAML file or every ``*.yml`` of a folder."""
    path = Path(path)
    files = sorted([*path.glob("*.yml"), *path.glob("*.yaml")]) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise DomainError([Problem(str(path), 0, "no conversation test files found")])
    out: list[LoadedTest] = []
    problems: list[Problem] = []
    for f in files:
        display = str(f)
        try:
            spec, node = read_yaml(f, display, ConversationTestFile)
        except DomainError as exc:
            problems.extend(exc.problems)
            continue
        for i, conv in enumerate(spec.conversations):
            line = locate(node, f"$.conversations[{i}]")
            turn_lines = [locate(node, f"$.conversations[{i}].turns[{j}]") for j in range(len(conv.turns))]
            for j, turn in enumerate(conv.turns):
                given = [k for k in ("user", "payload", "event", "release", "open") if getattr(turn, k) is not None]
                if len(given) != 1:
                    problems.append(Problem(display, turn_lines[j], "a turn needs exactly one of user / payload / "
                                                                    "event / release / open"))
            out.append(LoadedTest(conv, display, line, turn_lines))
    if problems:
        raise DomainError(problems)
    return out


def weekday_name(index: int) -> str:
    return WEEKDAYS[index]
