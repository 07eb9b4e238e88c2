"""Domain files: a bot's intents, keyword rules and entity patterns as YAML, with typed validation.

A domain is a folder of ``*.yml`` files; every file may hold any of the top-level keys below and
the loader merges them (like Rasa's data folders). ``flows/`` and ``tests/`` belong to the dialogue
manager. ``eval/`` is reserved for held-out data that training never reads: ``eval/heldout.yml`` (``examples: [{text, intent}]``) and ``eval/oos.yml``
(``out_of_scope: [...]``).

Errors name the file and line, e.g. ``intents.yml:42: rules[3].patterns[0]: bad regex``, so an
operator can fix a broken file without reading a traceback.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from lingxi.nlu.texts import Text

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
OOS_LABEL = "oos"
VAGUE_PREFIX = "clarify:"  # must equal lingxi.nlu.decision.VAGUE_PREFIX


class _Spec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class IntentSpec(_Spec):
    """``label`` and ``response`` are one text or per language (``{zh: …, en: …}``); ``article`` is
    the intent's own help article (its card goes with the answer)."""

    name: str
    examples: list[str]
    label: Text | None = None
    category: str | None = None
    description: str | None = None
    response: Text | None = None
    article: str | None = None


class TimeWindow(_Spec):
    days: list[Weekday] = msgspec.field(default_factory=lambda: list(WEEKDAYS))
    start: str = "00:00"
    end: str = "24:00"


class RuleConditions(_Spec):
    channels: list[str] | None = None
    visitor_tags_any: list[str] | None = None
    visitor_tags_all: list[str] | None = None
    time_windows: list[TimeWindow] | None = None
    timezone: str = "Asia/Shanghai"


class RuleSpec(_Spec):
    id: str
    match: Literal["exact", "contains", "regex"]
    patterns: list[str]
    priority: int = 0
    response: Text | None = None
    article: str | None = None
    intent: str | None = None
    conditions: RuleConditions | None = None


class EntityPatternSpec(_Spec):
    """A named regex; ``values`` maps a matched text (case-insensitive) to the value to report, e.g. the
    canonical value of a synonym (``{"nyc": "New York"}``, Rasa's entity synonyms)."""

    name: str
    pattern: str
    description: str | None = None
    values: dict[str, str] | None = None


class CategorySpec(_Spec):
    """An intent category; ``clarify`` is the operator's guided question menu for vague messages
    of this category (美洽's 引导问题): which intents to offer, in this order. ``examples`` are
    such vague messages; they train a class ``clarify:<name>`` that triggers the menu."""

    name: str
    label: Text | None = None  # the button title in menus (default: the name)
    clarify: list[str] = msgspec.field(default_factory=list)
    examples: list[str] = msgspec.field(default_factory=list)  # vague messages: "账号有点问题"


class HeldoutExample(_Spec):
    text: str
    intent: str


class ArticleQuestion(_Spec):
    """A held-out question answered by a help article (``article``: one id, or several that answer it equally)."""

    text: str
    article: str | list[str]

    @property
    def articles(self) -> list[str]:
        return [self.article] if isinstance(self.article, str) else list(self.article)


class VagueQuestion(_Spec):
    """A held-out vague message: the right reply asks which of ``category``'s menu items is meant."""

    text: str
    category: str


class DomainFile(_Spec):
    """What one YAML file may contain."""

    version: int | None = None
    name: str | None = None
    language: str | None = None
    description: str | None = None
    intents: list[IntentSpec] = msgspec.field(default_factory=list)
    out_of_scope: list[str] = msgspec.field(default_factory=list)
    rules: list[RuleSpec] = msgspec.field(default_factory=list)
    entities: list[EntityPatternSpec] = msgspec.field(default_factory=list)
    categories: list[CategorySpec] = msgspec.field(default_factory=list)
    examples: list[HeldoutExample] = msgspec.field(default_factory=list)
    article_questions: list[ArticleQuestion] = msgspec.field(default_factory=list)
    vague_questions: list[VagueQuestion] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class DomainError(ValueError):
    """One or more problems in domain files; ``str()`` lists them as ``file:line: message``."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Domain:
    """The merged, validated content of a domain folder."""

    name: str
    language: str
    description: str
    intents: list[IntentSpec]
    out_of_scope: list[str]
    rules: list[RuleSpec]
    entities: list[EntityPatternSpec]
    categories: list[CategorySpec]
    root: Path
    fingerprint: str
    locations: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def intent_names(self) -> list[str]:
        return [i.name for i in self.intents]

    def intent(self, name: str) -> IntentSpec | None:
        return next((i for i in self.intents if i.name == name), None)

    def training_pairs(self) -> tuple[list[str], list[str]]:
        """(texts, labels) for the intent head; explicit out-of-scope examples get label ``oos``."""
        texts: list[str] = []
        labels: list[str] = []
        for spec in self.intents:
            texts.extend(spec.examples)
            labels.extend([spec.name] * len(spec.examples))
        for cat in self.categories:
            texts.extend(cat.examples)
            labels.extend([f"{VAGUE_PREFIX}{cat.name}"] * len(cat.examples))
        texts.extend(self.out_of_scope)
        labels.extend([OOS_LABEL] * len(self.out_of_scope))
        return texts, labels


# --------------------------------------------------------------------------- YAML with line numbers


def locate(node: yaml.Node | None, path: str) -> int:
    """Line (1-based) of the node at a msgspec-style path such as ``$.flows[0].steps[2].next``."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for key, index in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path.removeprefix("$")):
        child = None
        if key and isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            child = node.value[int(index)]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def read_yaml(path: Path, display: str, schema: type) -> tuple[Any, yaml.Node | None]:
    """Parse ``path`` into ``schema``; any problem becomes a :class:`DomainError` with file:line."""
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DomainError([Problem(display, line, "file is not valid UTF-8")]) from None
    try:
        node = yaml.compose(raw, Loader=yaml.SafeLoader)
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DomainError([Problem(display, mark.line + 1 if mark else 1,
                                   f"invalid YAML: {getattr(exc, 'problem', None) or exc}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DomainError([Problem(display, 1, "top level must be a mapping")])
    try:
        return msgspec.convert(data, schema), node
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = re.search(r"at `(\$[^`]*)`", text)
        where = found.group(1) if found else "$"
        message = text.split(" - at `")[0]
        line = locate(node, where)
        unknown = re.search(r"unknown field `([^`]+)`", message)
        if unknown:
            line = locate(node, f"{where}.{unknown.group(1)}")
        label = where.removeprefix("$.").removeprefix("$")
        raise DomainError([Problem(display, line, f"{label}: {message}" if label else message)]) from None



RESERVED_SUBFOLDERS = ("eval", "flows", "tests")  # read by their own loaders, not as domain files


def _yaml_files(root: Path) -> list[Path]:
    return sorted(
        p for p in (*root.rglob("*.yml"), *root.rglob("*.yaml"))
        if not set(p.relative_to(root).parts[:-1]) & set(RESERVED_SUBFOLDERS)
    )


def fingerprint_files(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(paths):
        digest.update(str(p.relative_to(root)).encode())
        digest.update(p.read_bytes())
    return digest.hexdigest()[:16]


def load_domain(root: str | Path) -> Domain:
    """Load and validate every YAML file under ``root`` (except ``eval/``)."""
    root = Path(root)
    if not root.is_dir():
        raise DomainError([Problem(str(root), 0, "domain folder does not exist")])
    files = _yaml_files(root)
    if not files:
        raise DomainError([Problem(str(root), 0, "no .yml files in domain folder")])
    problems: list[Problem] = []
    meta: dict[str, Any] = {}
    intents: list[IntentSpec] = []
    oos: list[str] = []
    rules: list[RuleSpec] = []
    entities: list[EntityPatternSpec] = []
    categories: list[CategorySpec] = []
    locations: dict[str, tuple[str, int]] = {}
    for path in files:
        display = str(path.relative_to(root))
        try:
            spec, node = read_yaml(path, display, DomainFile)
        except DomainError as exc:
            problems.extend(exc.problems)
            continue
        for key in ("name", "language", "description"):
            if getattr(spec, key) is not None:
                meta[key] = getattr(spec, key)
        for i, intent in enumerate(spec.intents):
            where = (display, locate(node, f"$.intents[{i}]"))
            if intent.name in locations:
                problems.append(Problem(*where, f"intent {intent.name!r} already defined at "
                                        f"{':'.join(map(str, locations[intent.name]))}"))
                continue
            locations[intent.name] = where
            problems.extend(_check_intent(intent, where, node, i))
            intents.append(intent)
        oos.extend(spec.out_of_scope)
        for i, rule in enumerate(spec.rules):
            where = (display, locate(node, f"$.rules[{i}]"))
            key = f"rule:{rule.id}"
            if key in locations:
                problems.append(Problem(*where, f"rule id {rule.id!r} is used twice"))
                continue
            locations[key] = where
            problems.extend(_check_rule(rule, display, node, i))
            rules.append(rule)
        for i, ent in enumerate(spec.entities):
            where = (display, locate(node, f"$.entities[{i}]"))
            try:
                re.compile(ent.pattern)
            except re.error as exc:
                problems.append(Problem(display, locate(node, f"$.entities[{i}].pattern"),
                                        f"entity {ent.name!r}: bad regex: {exc}"))
            locations[f"entity:{ent.name}"] = where
            entities.append(ent)
        for i, cat in enumerate(spec.categories):
            locations[f"category:{cat.name}"] = (display, locate(node, f"$.categories[{i}]"))
            categories.append(cat)
        if spec.examples:
            problems.append(Problem(display, locate(node, "$.examples"),
                                    "`examples:` lists belong in eval/ files, not in training files"))
    known = {i.name for i in intents}
    for rule in rules:
        if rule.intent and rule.intent not in known:
            file, line = locations[f"rule:{rule.id}"]
            problems.append(Problem(file, line, f"rule {rule.id!r} refers to unknown intent {rule.intent!r}"))
    for cat in categories:
        file, line = locations[f"category:{cat.name}"]
        if cat.examples and not cat.clarify:
            problems.append(Problem(file, line, f"category {cat.name!r} has vague examples but no clarify menu"))
        for name in cat.clarify:
            if name not in known:
                problems.append(Problem(file, line, f"category {cat.name!r}: clarify option {name!r} is not an intent"))
    if not intents and not problems:
        problems.append(Problem(str(root), 0, "domain defines no intents"))
    if problems:
        raise DomainError(problems)
    return Domain(
        name=str(meta.get("name", root.name)),
        language=str(meta.get("language", "zh")),
        description=str(meta.get("description", "")),
        intents=intents,
        out_of_scope=oos,
        rules=rules,
        entities=entities,
        categories=categories,
        root=root,
        fingerprint=fingerprint_files(files, root),
        locations=locations,
    )


def _check_intent(intent: IntentSpec, where: tuple[str, int], node: yaml.Node | None, i: int) -> list[Problem]:
    out: list[Problem] = []
    if not _NAME.match(intent.name) or intent.name == OOS_LABEL:
        out.append(Problem(*where, f"intent name {intent.name!r} must be an identifier (letters, digits, _ . -) "
                           f"and not {OOS_LABEL!r}"))
    if len(intent.examples) < 2:
        out.append(Problem(*where, f"intent {intent.name!r} needs at least 2 examples, has {len(intent.examples)}"))
    for j, ex in enumerate(intent.examples):
        if not isinstance(ex, str) or not ex.strip():
            out.append(Problem(where[0], locate(node, f"$.intents[{i}].examples[{j}]"),
                               f"intent {intent.name!r}: empty example"))
    return out


def _check_rule(rule: RuleSpec, display: str, node: yaml.Node | None, i: int) -> list[Problem]:
    out: list[Problem] = []
    line = locate(node, f"$.rules[{i}]")
    if not rule.patterns:
        out.append(Problem(display, line, f"rule {rule.id!r} has no patterns"))
    if rule.response is None and rule.article is None and rule.intent is None:
        out.append(Problem(display, line, f"rule {rule.id!r} needs a response, an article or an intent"))
    for j, pattern in enumerate(rule.patterns):
        if not pattern.strip():
            out.append(Problem(display, locate(node, f"$.rules[{i}].patterns[{j}]"), "empty pattern"))
        elif rule.match == "regex":
            try:
                re.compile(pattern)
            except re.error as exc:
                out.append(Problem(display, locate(node, f"$.rules[{i}].patterns[{j}]"),
                                   f"rule {rule.id!r}: bad regex {pattern!r}: {exc}"))
    if rule.conditions and rule.conditions.time_windows:
        for j, window in enumerate(rule.conditions.time_windows):
            for key in ("start", "end"):
                if not _HHMM.match(getattr(window, key)):
                    out.append(Problem(display, locate(node, f"$.rules[{i}].conditions.time_windows[{j}].{key}"),
                                       f"rule {rule.id!r}: {key} must be HH:MM, got {getattr(window, key)!r}"))
    if rule.conditions:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(rule.conditions.timezone)
        except Exception:  # noqa: BLE001 - any failure means the zone name is unusable
            out.append(Problem(display, line, f"rule {rule.id!r}: unknown timezone {rule.conditions.timezone!r}"))
    return out


def load_eval_set(root: str | Path) -> tuple[list[HeldoutExample], list[str]]:
    """Held-out examples and out-of-scope utterances from ``root/eval/`` (empty lists when absent)."""
    held = load_calibration_set(root)
    return held.examples, held.out_of_scope


@dataclass
class CalibrationSet:
    """Everything held out in ``eval/``: what the bot's answer arbitration is calibrated on."""

    examples: list[HeldoutExample] = field(default_factory=list)
    out_of_scope: list[str] = field(default_factory=list)
    article_questions: list[ArticleQuestion] = field(default_factory=list)
    vague_questions: list[VagueQuestion] = field(default_factory=list)


def load_calibration_set(root: str | Path) -> CalibrationSet:
    """Held-out intent questions, out-of-scope requests, article questions and vague messages from
    ``root/eval/`` (empty when absent). Training reads none of them."""
    root = Path(root)
    out = CalibrationSet()
    problems: list[Problem] = []
    for path in sorted((root / "eval").glob("*.y*ml")) if (root / "eval").is_dir() else []:
        display = str(path.relative_to(root))
        try:
            spec, _ = read_yaml(path, display, DomainFile)
        except DomainError as exc:
            problems.extend(exc.problems)
            continue
        out.examples.extend(spec.examples)
        out.out_of_scope.extend(spec.out_of_scope)
        out.article_questions.extend(spec.article_questions)
        out.vague_questions.extend(spec.vague_questions)
    if problems:
        raise DomainError(problems)
    return out


def demo_domain_path() -> Path:
    """The built-in Chinese demo shop, shipped as package data."""
    return Path(__file__).resolve().parent / "demo"
