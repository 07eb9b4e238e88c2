"""``lingxi import rasa DIR --out DOMAIN``: a Rasa project (1.x Markdown/JSON, 2.x/3.x YAML) as a Lingxi domain.

What maps (and how), so a team can judge the result before training on it:

* NLU intents and their examples → ``intents.yml``; entity annotations ``[text](entity)``,
  ``[text](entity:value)``, ``[text]{"entity": …, "value": …}`` become plain text, and their
  surface values, synonyms and lookup tables become one case-insensitive dictionary regex per
  entity in ``entities.yml``, with ``values`` mapping a synonym to its canonical value (Rasa's
  EntitySynonymMapper); a learned tagger is not trained. Entities Rasa gets from Duckling map to Lingxi's built-in
  extractors (``email``, ``number``, ``amount-of-money`` → ``money``, ``time`` → ``datetime``,
  ``phone-number`` → ``phone``).
* Retrieval intents ``faq/ask_x`` → one intent each, named ``faq.ask_x`` (``/`` is not allowed in
  Lingxi names) with category ``faq``; their ``utter_faq/ask_x`` response is the intent's response.
* A response for an intent comes from a rule or a story whose whole content is "this intent, then
  only ``utter_*`` actions" (several utterances are joined by a blank line); failing that from the
  response named ``utter_<intent>``. Only the first variant of a response is kept; buttons,
  images, custom payloads and conditional variants are dropped (each listed).
* ``tests/test_nlu.yml`` (or ``.md``) → ``eval/heldout.yml``: held-out examples that training
  never reads, so ``lingxi train`` reports accuracy on them.
* Dropped, each with file:line: rules and stories that need dialogue state (conditions, slots,
  forms/loops, custom actions, several user turns, checkpoints), forms, slots, custom actions,
  regex features, end-to-end test stories, the pipeline and policies of ``config.yml``.

Bad source files (invalid YAML or JSON, an intent without examples) raise :class:`ImportError_`
naming the file and line.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .report import ImportError_, ImportReport

# ----------------------------------------------------------------------------- YAML with lines


class _LDict(dict):
    """A mapping that remembers where it and each of its values start (1-based lines)."""

    line: int = 1
    value_lines: dict[str, tuple[int, str | None]]


class _LList(list):
    line: int = 1
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode):
    data = _LDict()
    data.line = node.start_mark.line + 1
    data.value_lines = {}
    yield data
    data.update(loader.construct_mapping(node))
    for key, value in node.value:
        data.value_lines[str(key.value)] = (value.start_mark.line + 1, getattr(value, "style", None))


def _construct_seq(loader: _Loader, node: yaml.SequenceNode):
    data = _LList()
    data.line = node.start_mark.line + 1
    data.item_lines = [item.start_mark.line + 1 for item in node.value]
    yield data
    data.extend(loader.construct_sequence(node))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _load_yaml(path: Path, display: str) -> Any:
    try:
        raw = path.read_text("utf-8")
    except UnicodeDecodeError:
        raise ImportError_([f"{display}:1: file is not valid UTF-8"]) from None
    try:
        return yaml.load(raw, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ImportError_([f"{display}:{mark.line + 1 if mark else 1}: invalid YAML: "
                            f"{getattr(exc, 'problem', None) or exc}"]) from None


def _line(obj: Any, key: str | None = None) -> int:
    if key is not None and isinstance(obj, _LDict) and key in obj.value_lines:
        return obj.value_lines[key][0]
    return getattr(obj, "line", 1)


# ----------------------------------------------------------------------------- annotations

_ANNOTATION = re.compile(r"\[(?P<text>[^\]\n]+)\](?:\((?P<paren>[^)\n]*)\)|(?P<json>\{[^{}\n]*\})"
                         r"|(?P<list>\[\s*\{[^\]\n]*\}\s*\]))")
DUCKLING_TO_BUILTIN = {"email": "email", "number": "number", "amount-of-money": "money", "time": "datetime",
                       "phone-number": "phone", "duration": "datetime"}
BUILTIN_ENTITIES = {"email", "number", "money", "datetime", "phone", "order_id"}


@dataclass
class Annotation:
    text: str
    entity: str
    value: str | None = None  # a synonym's canonical value
    role: str | None = None
    group: str | None = None


@dataclass
class _Located:
    file: str
    line: int


@dataclass
class _Example(_Located):
    text: str
    annotations: list[Annotation] = field(default_factory=list)


def parse_annotated(text: str) -> tuple[str, list[Annotation], list[str]]:
    """Plain text, its annotations, and problems (unreadable annotations are kept as plain text)."""
    out: list[Annotation] = []
    problems: list[str] = []

    def sub(m: re.Match[str]) -> str:
        surface = m.group("text")
        if m.group("paren") is not None:
            entity, _, value = m.group("paren").partition(":")
            if entity.strip():
                out.append(Annotation(surface, entity.strip(), value.strip() or None))
            else:
                problems.append(f"empty entity name in {m.group()!r}")
        else:
            raw = m.group("json") or m.group("list")
            try:
                specs = json.loads(raw)
            except json.JSONDecodeError as exc:
                problems.append(f"unreadable entity annotation {m.group()!r}: {exc.msg}")
                return surface
            for spec in specs if isinstance(specs, list) else [specs]:
                if not isinstance(spec, dict) or not isinstance(spec.get("entity"), str):
                    problems.append(f"entity annotation without `entity`: {m.group()!r}")
                    continue
                value = spec.get("value")
                out.append(Annotation(surface, spec["entity"], None if value is None else str(value),
                                      spec.get("role"), spec.get("group")))
        return surface

    plain = _ANNOTATION.sub(sub, text)
    return plain, out, problems


# ----------------------------------------------------------------------------- the project model


@dataclass
class _Intent:
    name: str  # Rasa's name (faq/ask_x)
    file: str
    line: int
    examples: list[_Example] = field(default_factory=list)


@dataclass
class _Story:
    kind: str  # rule | story
    name: str
    file: str
    line: int
    steps: list[dict]
    condition: list | None = None
    extra: list[str] = field(default_factory=list)  # keys that make it stateful


@dataclass
class RasaProject:
    """Everything read from a Rasa project, each item with its file and line."""

    root: Path
    language: str | None = None
    intents: dict[str, _Intent] = field(default_factory=dict)
    synonyms: dict[str, list[_Example]] = field(default_factory=lambda: defaultdict(list))  # canonical → forms
    synonym_lines: dict[str, _Located] = field(default_factory=dict)
    lookups: dict[str, list[_Example]] = field(default_factory=lambda: defaultdict(list))
    regexes: dict[str, list[_Example]] = field(default_factory=lambda: defaultdict(list))
    responses: dict[str, tuple[list, _Located]] = field(default_factory=dict)
    stories: list[_Story] = field(default_factory=list)
    heldout: list[tuple[str, str, _Located]] = field(default_factory=list)  # (text, rasa intent, where)
    domain_intents: dict[str, _Located] = field(default_factory=dict)
    entities_declared: dict[str, _Located] = field(default_factory=dict)


class _Reader:
    def __init__(self, root: Path, report: ImportReport) -> None:
        self.root = root
        self.report = report
        self.project = RasaProject(root)
        self.problems: list[str] = []

    def display(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    # ---- files

    def read(self) -> RasaProject:
        root = self.root
        config = root / "config.yml"
        if config.is_file():
            self._config(config)
        domain_files = [root / "domain.yml"] if (root / "domain.yml").is_file() else []
        if (root / "domain").is_dir():
            domain_files += sorted((root / "domain").rglob("*.yml"))
        for path in domain_files:
            self._yaml_file(path, is_domain=True)
        data = root / "data"
        if not data.is_dir() and not domain_files:
            raise ImportError_([f"{root}:0: not a Rasa project (no data/ folder and no domain.yml)"])
        files = sorted(p for p in data.rglob("*") if p.is_file()) if data.is_dir() else []
        for path in files:
            if path.suffix in (".yml", ".yaml"):
                self._yaml_file(path)
            elif path.suffix == ".md":
                self._markdown(path, heldout=False)
            elif path.suffix == ".json":
                self._nlu_json(path, heldout=False)
            elif path.suffix != ".txt":  # .txt lookup tables are read where a table refers to them
                self.report.add("dropped", self.display(path), 1, "file type not read by the importer")
        tests = root / "tests"
        for path in sorted(tests.rglob("*")) if tests.is_dir() else []:
            if path.suffix in (".yml", ".yaml"):
                self._yaml_file(path, heldout=True)
            elif path.suffix == ".md":
                self._markdown(path, heldout=True)
        if self.problems:
            raise ImportError_(self.problems)
        return self.project

    def _config(self, path: Path) -> None:
        data = _load_yaml(path, self.display(path)) or {}
        if isinstance(data, dict):
            if isinstance(data.get("language"), str):
                self.project.language = data["language"]
                self.report.add("mapped", self.display(path), _line(data, "language"),
                                f"language {data['language']!r} → domain language")
            for key in ("pipeline", "policies"):
                if key in data:
                    self.report.add("dropped", self.display(path), _line(data, key),
                                    f"`{key}`: Lingxi trains its own pipeline (encoders + intent head + "
                                    "calibrated decision) and dialogue policy")

    def _yaml_file(self, path: Path, is_domain: bool = False, heldout: bool = False) -> None:
        display = self.display(path)
        try:
            data = _load_yaml(path, display)
        except ImportError_ as exc:
            self.problems.extend(exc.problems)
            return
        if data is None:
            return
        if not isinstance(data, dict):
            self.problems.append(f"{display}:1: top level must be a mapping")
            return
        for key, value in data.items():
            line = _line(data, key)
            if key == "version":
                continue
            if key == "nlu":
                self._nlu(value, display, heldout)
            elif key in ("responses", "templates"):
                self._responses(value, display)
            elif key in ("rules", "stories"):
                if heldout:
                    self.report.add("dropped", display, line, f"test {key} ({len(value or [])}): end-to-end "
                                    "conversation tests are not converted (write them as tests/*.yml)")
                else:
                    self._stories(key[:-1] if key == "rules" else "story", value, display)
            elif is_domain and key == "intents":
                self._domain_intents(value, display)
            elif is_domain and key == "entities":
                for i, item in enumerate(value or []):
                    name = next(iter(item)) if isinstance(item, dict) else str(item)
                    self.project.entities_declared[name] = _Located(display, value.item_lines[i])
            elif is_domain and key in ("slots", "forms", "actions"):
                for i, name in enumerate(value or []):
                    where = value.value_lines.get(str(name), (line,))[0] if isinstance(value, _LDict) else \
                        value.item_lines[i]
                    if isinstance(name, dict):  # Rasa 3: `- action_x: {send_domain: true}`
                        name = next(iter(name), "")
                    what = {"slots": "slot", "forms": "form", "actions": "custom action"}[key]
                    reason = {"slot": "Lingxi flows keep their own slots; set them in flows/*.yml",
                              "form": "no automatic form → flow mapping; rebuild it as a flow in flows/*.yml",
                              "custom action": "runs on a Rasa action server; call it from a flow action "
                                               "(HTTP) instead"}[what]
                    if what == "custom action" and str(name).startswith("utter_"):
                        continue
                    self.report.add("dropped", display, where, f"{what} {name!r}: {reason}")
            else:
                self.report.add("dropped", display, line, f"`{key}` is not imported")

    # ---- NLU (YAML)

    def _examples(self, block: Any, item: _LDict, display: str) -> list[_Example]:
        """Rasa's ``examples: |`` block (one ``- text`` a line) or a list of strings / {text}."""
        start, style = item.value_lines.get("examples", (item.line, None))
        out: list[_Example] = []
        if isinstance(block, str):
            first = start + 1 if style in ("|", ">") else start
            for offset, raw in enumerate(block.split("\n")):
                stripped = raw.strip()
                if not stripped:
                    continue
                if not stripped.startswith("- "):
                    if stripped == "-":
                        continue
                    self.report.add("dropped", display, first + offset,
                                    f"example line does not start with `- `: {stripped!r}")
                    continue
                out.append(_Example(display, first + offset, stripped[2:].strip()))
        elif isinstance(block, list):
            for i, entry in enumerate(block):
                text = entry.get("text") if isinstance(entry, dict) else entry
                if isinstance(entry, dict) and "metadata" in entry:
                    self.report.add("dropped", display, block.item_lines[i], "example metadata is not imported")
                if isinstance(text, str) and text.strip():
                    out.append(_Example(display, block.item_lines[i], text.strip()))
        else:
            self.problems.append(f"{display}:{start}: `examples` must be a block of `- text` lines")
        return out

    def _nlu(self, items: Any, display: str, heldout: bool) -> None:
        if not isinstance(items, list):
            self.problems.append(f"{display}:1: `nlu` must be a list")
            return
        for i, item in enumerate(items):
            line = items.item_lines[i]
            if not isinstance(item, dict):
                self.problems.append(f"{display}:{line}: nlu item must be a mapping")
                continue
            for extra in sorted(set(item) - {"intent", "synonym", "lookup", "regex", "examples", "metadata"}):
                self.report.add("dropped", display, _line(item, extra), f"nlu item key `{extra}` is not imported")
            if "metadata" in item:
                self.report.add("dropped", display, _line(item, "metadata"), "example metadata is not imported")
            if "examples" not in item:
                self.problems.append(f"{display}:{line}: nlu item without `examples`")
                continue
            examples = self._examples(item["examples"], item, display)
            if "intent" in item:
                name = str(item["intent"])
                if heldout:
                    for ex in examples:
                        self.project.heldout.append((ex.text, name, ex))
                    continue
                self._add_intent(name, display, line, examples)
            elif heldout:
                kind = next(k for k in ("synonym", "lookup", "regex", "examples") if k in item)
                self.report.add("dropped", display, line, f"{kind} {item.get(kind)!r} in a test file: held-out "
                                "data never feeds the model")
            elif "synonym" in item:
                self.project.synonyms[str(item["synonym"])].extend(examples)
                self.project.synonym_lines.setdefault(str(item["synonym"]), _Located(display, line))
            elif "lookup" in item:
                self.project.lookups[str(item["lookup"])].extend(examples)
            elif "regex" in item:
                self.project.regexes[str(item["regex"])].extend(examples)
            else:
                self.problems.append(f"{display}:{line}: nlu item needs one of intent, synonym, lookup, regex")

    def _add_intent(self, name: str, display: str, line: int, examples: list[_Example]) -> None:
        intent = self.project.intents.setdefault(name, _Intent(name, display, line))
        for ex in examples:
            plain, annotations, problems = parse_annotated(ex.text)
            for problem in problems:
                self.report.add("dropped", ex.file, ex.line, problem)
            ex.text, ex.annotations = plain, annotations
            intent.examples.append(ex)

    # ---- domain

    def _domain_intents(self, value: Any, display: str) -> None:
        for i, item in enumerate(value or []):
            name = next(iter(item)) if isinstance(item, dict) else str(item)
            line = value.item_lines[i]
            self.project.domain_intents[str(name)] = _Located(display, line)
            if isinstance(item, dict) and isinstance(item[name], dict) and item[name]:
                self.report.add("dropped", display, line, f"intent {name!r}: `{', '.join(item[name])}` "
                                "(entity use per intent) is not imported")

    def _responses(self, value: Any, display: str) -> None:
        if not isinstance(value, dict):
            self.problems.append(f"{display}:{_line(value)}: `responses` must be a mapping")
            return
        for name, variants in value.items():
            line = _line(value, name)
            if not isinstance(variants, list):
                self.problems.append(f"{display}:{line}: response {name!r} must be a list of variants")
                continue
            self.project.responses[str(name)] = (variants, _Located(display, line))

    # ---- rules and stories (YAML)

    def _stories(self, kind: str, items: Any, display: str) -> None:
        for i, item in enumerate(items or []):
            line = items.item_lines[i]
            if not isinstance(item, dict) or not isinstance(item.get("steps"), list):
                self.report.add("dropped", display, line, f"{kind} without `steps`")
                continue
            extra = [k for k in item if k not in ("rule", "story", "steps", "condition", "metadata")]
            if item.get("wait_for_user_input") is False:
                extra.append("wait_for_user_input: false")
            if item.get("conversation_start"):
                extra.append("conversation_start")
            self.project.stories.append(_Story(kind, str(item.get(kind, f"{kind} {i + 1}")), display, line,
                                               list(item["steps"]), item.get("condition"), extra))

    # ---- Rasa 1.x Markdown and JSON

    _MD_HEADER = re.compile(r"^##\s*(?P<kind>intent|synonym|regex|lookup)\s*:\s*(?P<name>.+?)\s*$")

    def _markdown(self, path: Path, heldout: bool) -> None:
        display = self.display(path)
        text = path.read_text("utf-8", errors="replace")
        if re.search(r"^##\s*(intent|synonym|regex|lookup)\s*:", text, re.M):
            self._nlu_markdown(text, display, heldout)
        elif re.search(r"^\*\s", text, re.M):
            if heldout:
                self.report.add("dropped", display, 1, "test stories are not converted")
            else:
                self._stories_markdown(text, display)
        else:
            self.report.add("dropped", display, 1, "Markdown file is neither NLU data nor stories")

    def _nlu_markdown(self, text: str, display: str, heldout: bool) -> None:
        kind = name = None
        header_line = 1
        block: list[_Example] = []

        def flush() -> None:
            if kind is None:
                return
            if heldout and kind != "intent":
                self.report.add("dropped", display, header_line, f"{kind} {name!r} in a test file: held-out data "
                                "never feeds the model")
            elif kind == "intent":
                if heldout:
                    self.project.heldout.extend((ex.text, name, ex) for ex in block)
                else:
                    self._add_intent(name, display, header_line, list(block))
            elif kind == "lookup" and len(block) == 1 and "- " not in block[0].text and block[0].text.endswith(".txt"):
                self._lookup_file(name, block[0], display)
            else:
                if kind == "synonym":
                    self.project.synonym_lines.setdefault(name, _Located(display, header_line))
                {"synonym": self.project.synonyms, "regex": self.project.regexes,
                 "lookup": self.project.lookups}[kind][name].extend(block)

        for lineno, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("<!--"):
                continue
            m = self._MD_HEADER.match(stripped)
            if m:
                flush()
                kind, name, header_line, block = m.group("kind"), m.group("name"), lineno, []
            elif stripped.startswith("#"):
                flush()
                kind = None
                self.report.add("dropped", display, lineno, f"unknown section {stripped!r}")
            elif kind is None:
                self.report.add("dropped", display, lineno, f"text outside a section: {stripped!r}")
            elif stripped[:2] in ("- ", "* ", "+ "):
                block.append(_Example(display, lineno, stripped[2:].strip()))
            elif kind == "lookup":
                block.append(_Example(display, lineno, stripped))  # a lookup file path
            else:
                self.report.add("dropped", display, lineno, f"line is not a `- example`: {stripped!r}")
        flush()

    def _lookup_file(self, name: str, ref: _Example, display: str) -> None:
        path = (self.root / ref.text) if not Path(ref.text).is_absolute() else Path(ref.text)
        if not path.is_file():
            self.report.add("dropped", display, ref.line, f"lookup table file {ref.text!r} not found")
            return
        for lineno, raw in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1):
            if raw.strip():
                self.project.lookups[name].append(_Example(ref.text, lineno, raw.strip()))

    _MD_INTENT = re.compile(r"^\*\s*(?P<intent>[^{\s]+)\s*(?P<ents>\{.*\})?\s*$")

    def _stories_markdown(self, text: str, display: str) -> None:
        story: _Story | None = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("<!--"):
                continue
            if stripped.startswith("##"):
                story = _Story("story", stripped.lstrip("#").strip(), display, lineno, [])
                self.project.stories.append(story)
            elif story is None:
                self.report.add("dropped", display, lineno, f"line outside a story: {stripped!r}")
            elif stripped.startswith(">"):
                story.extra.append(f"checkpoint {stripped[1:].strip()}")
            elif stripped.startswith("*"):
                m = self._MD_INTENT.match(stripped)
                if not m:
                    story.extra.append(f"unreadable user turn {stripped!r}")
                    continue
                step: dict = {"intent": m.group("intent")}
                if m.group("ents"):
                    step["entities"] = [m.group("ents")]
                story.steps.append(step)
            elif stripped.startswith("-"):
                action = stripped[1:].strip()
                if "{" in action:  # slot{...} or form{...} events
                    story.steps.append({"slot_was_set": [action]})
                else:
                    story.steps.append({"action": action})
            else:
                story.extra.append(f"unreadable line {stripped!r}")

    def _nlu_json(self, path: Path, heldout: bool) -> None:
        display = self.display(path)
        raw = path.read_text("utf-8", errors="replace")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            self.problems.append(f"{display}:{exc.lineno}: invalid JSON: {exc.msg}")
            return
        nlu = data.get("rasa_nlu_data") if isinstance(data, dict) else None
        if not isinstance(nlu, dict):
            self.report.add("dropped", display, 1, "JSON file without `rasa_nlu_data`")
            return

        def line_of(text: str) -> int:
            at = raw.find(json.dumps(text, ensure_ascii=False)[1:-1])
            return raw.count("\n", 0, at) + 1 if at >= 0 else 1

        for ex in nlu.get("common_examples", []) + nlu.get("intent_examples", []):
            text, intent = ex.get("text"), ex.get("intent")
            if not isinstance(text, str) or not isinstance(intent, str):
                self.report.add("dropped", display, line_of(str(text)), "example without text or intent")
                continue
            where = _Example(display, line_of(text), text)
            for ent in ex.get("entities", []):
                start, end = ent.get("start"), ent.get("end")
                if isinstance(start, int) and isinstance(end, int) and isinstance(ent.get("entity"), str):
                    value = ent.get("value")
                    surface = text[start:end]
                    where.annotations.append(Annotation(surface, ent["entity"],
                                                        None if value in (None, surface) else str(value)))
            if heldout:
                self.project.heldout.append((text, intent, where))
            else:
                intent_obj = self.project.intents.setdefault(intent, _Intent(intent, display, where.line))
                intent_obj.examples.append(where)
        for syn in nlu.get("entity_synonyms", []):
            for form in syn.get("synonyms", []):
                self.project.synonyms[str(syn.get("value"))].append(_Example(display, line_of(form), form))
        for rx in nlu.get("regex_features", []):
            pattern = str(rx.get("pattern", ""))
            self.project.regexes[str(rx.get("name"))].append(_Example(display, line_of(pattern), pattern))
        for table in nlu.get("lookup_tables", []):
            elements = table.get("elements")
            if isinstance(elements, list):
                for el in elements:
                    self.project.lookups[str(table.get("name"))].append(_Example(display, line_of(el), el))
            elif isinstance(elements, str):
                self._lookup_file(str(table.get("name")), _Example(display, line_of(elements), elements), display)


def read_rasa_project(root: str | Path, report: ImportReport) -> RasaProject:
    return _Reader(Path(root), report).read()


# ----------------------------------------------------------------------------- mapping

_VALID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def lingxi_intent_name(rasa_name: str) -> str:
    """``faq/ask_x`` → ``faq.ask_x``; other characters Lingxi names do not allow become ``_``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", rasa_name.replace("/", "."))
    if not name or not name[0].isalpha():
        name = f"i_{name}"
    return "oos_intent" if name == "oos" else name


def _response_text(name: str, project: RasaProject, report: ImportReport, used: set[str]) -> str | None:
    """The first text variant of a response; what it loses is reported once per response."""
    found = project.responses.get(name)
    if not found:
        return None
    variants, where = found
    texts = [v for v in variants if isinstance(v, dict) and isinstance(v.get("text"), str)]
    texts.sort(key=lambda v: "condition" in v or "channel" in v)  # an unconditional variant first (stable)
    if not texts:
        if name not in used:
            report.add("dropped", where.file, where.line, f"response {name!r} has no text variant "
                       "(images/custom payloads only)")
            used.add(name)
        return None
    if name not in used:
        used.add(name)
        first = texts[0]
        if len(variants) > 1:
            report.add("approximated", where.file, where.line, f"response {name!r}: {len(variants)} variants, "
                       "one is kept (the first without a condition or channel; Rasa picks at random)")
        lost = sorted(k for v in variants if isinstance(v, dict) for k in v if k != "text")
        if lost:
            report.add("dropped", where.file, where.line, f"response {name!r}: {', '.join(sorted(set(lost)))} "
                       "not imported (Lingxi intent responses are text)")
        if re.search(r"(?<!\{)\{[A-Za-z_][\w-]*\}(?!\})", first["text"]):
            report.add("approximated", where.file, where.line, f"response {name!r} uses slot placeholders "
                       "({slot}); they are kept as literal text")
    return texts[0]["text"].strip()


def _simple_story(story: _Story) -> tuple[str, list[str]] | str:
    """(intent, utter actions) when the rule/story is exactly one user intent then ``utter_*`` actions;
    otherwise the reason it needs dialogue state."""
    if story.condition:
        return "has a condition (slots or active loop)"
    if story.extra:
        return f"uses {', '.join(story.extra)}"
    steps = story.steps
    if not steps or not isinstance(steps[0], dict) or "intent" not in steps[0]:
        return "does not start with a user intent"
    first = steps[0]
    if set(first) - {"intent", "user"}:
        return "its user turn requires entities"
    actions = []
    for step in steps[1:]:
        if not isinstance(step, dict):
            return "has an unreadable step"
        if "intent" in step or "user" in step or "or" in step:
            return "has more than one user turn"
        if "action" not in step:
            return f"uses {next(iter(step), 'an unknown step')}"
        action = str(step["action"])
        if action == "action_listen":
            continue
        if not action.startswith("utter_"):
            return f"runs {action!r} (a custom or built-in action)"
        actions.append(action)
    if not actions:
        return "has no bot response"
    return str(first["intent"]), actions


def _entity_pattern(values: list[str]) -> str:
    alternatives = sorted({v.strip() for v in values if v.strip()}, key=lambda v: (-len(v), v))
    body = "|".join(re.escape(v) for v in alternatives)
    return f"(?i)(?<![0-9A-Za-z])(?:{body})(?![0-9A-Za-z])"


@dataclass
class RasaImport:
    out: Path
    report: ImportReport
    intents: int
    examples: int
    heldout: int


def import_rasa(source: str | Path, out: str | Path, name: str | None = None) -> RasaImport:
    """Read the Rasa project at ``source`` and write a Lingxi domain folder at ``out``."""
    from lingxi.nlu.normalize import Normalizer

    source, out = Path(source).resolve(), Path(out)
    if not source.is_dir():
        raise ImportError_([f"{source}:0: folder does not exist"])
    report = ImportReport(source.name, "Rasa")
    project = read_rasa_project(source, report)
    normalize = Normalizer()

    # intents, names and duplicate texts
    names: dict[str, str] = {}
    taken: set[str] = set()
    for rasa_name in project.intents:
        lx = lingxi_intent_name(rasa_name)
        while lx in taken:
            lx += "_"
        taken.add(lx)
        names[rasa_name] = lx
    seen: dict[str, tuple[str, str, int]] = {}
    kept: dict[str, list[str]] = {}
    for rasa_name, intent in project.intents.items():
        texts: list[str] = []
        for ex in intent.examples:
            key = normalize(ex.text)
            if not key.strip():
                report.add("dropped", ex.file, ex.line, f"empty example in intent {rasa_name!r}")
                continue
            if key in seen:
                other, file, line = seen[key]
                if other != rasa_name:
                    report.add("dropped", ex.file, ex.line, f"{ex.text!r} ({rasa_name}) is also an example of "
                               f"{other!r} at {file}:{line}; kept only there (one text, one intent)")
                else:
                    report.add("dropped", ex.file, ex.line, f"{ex.text!r}: duplicate in {rasa_name!r}")
                continue
            seen[key] = (rasa_name, ex.file, ex.line)
            texts.append(ex.text)
        kept[rasa_name] = texts

    # responses: sound rules/stories first, then the naming convention
    used: set[str] = set()
    story_responses: dict[str, tuple[list[str], _Story]] = {}
    for story in project.stories:
        simple = _simple_story(story)
        if isinstance(simple, str):
            report.add("dropped", story.file, story.line, f"{story.kind} {story.name!r} {simple}: needs dialogue "
                       "state; rebuild it as a flow in flows/*.yml if it matters")
            continue
        intent, actions = simple
        if intent not in project.intents:
            report.add("dropped", story.file, story.line, f"{story.kind} {story.name!r}: intent {intent!r} has no "
                       "examples")
            continue
        if intent in story_responses:
            if story_responses[intent][0] != actions:
                prev = story_responses[intent][1]
                report.add("dropped", story.file, story.line, f"{story.kind} {story.name!r}: {intent!r} already "
                           f"answered by {prev.kind} {prev.name!r} at {prev.file}:{prev.line}")
            continue
        missing = [a for a in actions if a not in project.responses]
        if missing:
            report.add("dropped", story.file, story.line, f"{story.kind} {story.name!r}: response(s) "
                       f"{', '.join(missing)} not defined")
            continue
        story_responses[intent] = (actions, story)

    intents_out: list[dict] = []
    n_examples = 0
    retrieval_groups: set[str] = set()
    for rasa_name, intent in project.intents.items():
        lx = names[rasa_name]
        texts = kept[rasa_name]
        if len(texts) < 2:
            report.add("dropped", intent.file, intent.line, f"intent {rasa_name!r} has {len(texts)} usable "
                       "example(s); Lingxi needs at least 2")
            continue
        spec: dict[str, Any] = {"name": lx}
        if lx != rasa_name:
            report.add("approximated", intent.file, intent.line, f"intent {rasa_name!r} renamed {lx!r}")
        group, slash, _ = rasa_name.partition("/")
        if slash:
            spec["category"] = group
            retrieval_groups.add(group)
        response = None
        if rasa_name in story_responses:
            actions, story = story_responses[rasa_name]
            parts = [t for t in (_response_text(a, project, report, used) for a in actions) if t]
            if parts:
                response = "\n\n".join(parts)
                report.add("mapped", story.file, story.line, f"{story.kind} {story.name!r} → response of "
                           f"{lx!r} ({' + '.join(actions)})")
        if response is None:
            conventional = f"utter_{rasa_name}"
            response = _response_text(conventional, project, report, used)
            if response is not None:
                where = project.responses[conventional][1]
                kind = "mapped" if slash else "approximated"
                why = ("retrieval response" if slash else
                       "by name only: no rule or story answers this intent with it alone")
                report.add(kind, where.file, where.line, f"response {conventional!r} → response of {lx!r} ({why})")
        if response:
            spec["response"] = response
        spec["examples"] = texts
        n_examples += len(texts)
        report.add("mapped", intent.file, intent.line, f"intent {rasa_name!r} → {lx!r} ({len(texts)} examples)")
        intents_out.append(spec)
    for group in sorted(retrieval_groups):
        response = project.responses.get(f"utter_{group}")
        if response:
            used.add(f"utter_{group}")
    for rasa_name, where in project.domain_intents.items():
        if rasa_name not in project.intents:
            report.add("dropped", where.file, where.line, f"intent {rasa_name!r} is declared but has no examples"
                       + (" (Lingxi's rejected messages play this role)" if rasa_name == "nlu_fallback" else ""))
    if not intents_out:
        raise ImportError_([f"{source}:0: no intent with at least 2 examples"])

    # entities
    values: dict[str, dict[str, _Example]] = defaultdict(dict)
    annotated_synonyms: dict[str, set[str]] = defaultdict(set)
    value_maps: dict[str, dict[str, str]] = defaultdict(dict)  # entity -> surface (lower) -> canonical
    for intent in project.intents.values():
        for ex in intent.examples:
            for ann in ex.annotations:
                values[ann.entity].setdefault(ann.text, ex)
                if ann.value and ann.value != ann.text:
                    annotated_synonyms[ann.entity].add(ann.value)
                    value_maps[ann.entity].setdefault(ann.text.lower(), ann.value)
                if ann.role or ann.group:
                    report.add("dropped", ex.file, ex.line, f"entity {ann.entity!r}: role/group not imported")
    canonical_of: dict[str, str] = {}
    for canonical, forms in project.synonyms.items():
        for form in forms:
            canonical_of[form.text.lower()] = canonical
    entities_out: list[dict] = []
    for entity in sorted(values):
        builtin = DUCKLING_TO_BUILTIN.get(entity) or (entity if entity in BUILTIN_ENTITIES else None)
        first = next(iter(values[entity].values()))
        if builtin:
            report.add("approximated", first.file, first.line, f"entity {entity!r} annotations left to Lingxi's "
                       f"built-in {builtin!r} extractor")
            continue
        surface = set(values[entity])
        syn_forms: set[str] = set()
        mapping = value_maps[entity]
        for canonical, forms in project.synonyms.items():
            if canonical in surface or canonical in annotated_synonyms[entity] or \
                    any(f.text in surface for f in forms):
                syn_forms |= {f.text for f in forms} | {canonical}
                for form in forms:
                    if form.text != canonical:
                        mapping.setdefault(form.text.lower(), canonical)
        lookup = {ex.text for ex in project.lookups.get(entity, [])}
        pattern_values = sorted(surface | syn_forms | lookup)
        spec = {"name": entity, "pattern": _entity_pattern(pattern_values),
                "description": f"imported from Rasa: {len(surface)} annotated values, "
                               f"{len(syn_forms)} synonym forms, {len(lookup)} lookup entries"}
        mapping = {k: v for k, v in sorted(mapping.items()) if k != v.lower()}
        if mapping:
            spec["values"] = mapping
        entities_out.append(spec)
        report.add("mapped", first.file, first.line, f"entity {entity!r} → dictionary regex over "
                   f"{len(pattern_values)} values")
    for entity in sorted(set(project.entities_declared) - set(values)):
        where = project.entities_declared[entity]
        builtin = DUCKLING_TO_BUILTIN.get(entity)
        if builtin:
            report.add("mapped", where.file, where.line, f"entity {entity!r} → Lingxi's built-in {builtin!r}")
        elif entity in project.lookups:
            continue
        else:
            report.add("dropped", where.file, where.line, f"entity {entity!r} has no annotated example, lookup "
                       "or synonym to learn it from")
    mapped_entities = {e["name"]: e for e in entities_out}
    for canonical, forms in project.synonyms.items():
        if not forms:
            continue
        loc = project.synonym_lines.get(canonical, forms[0])
        where = (loc.file, loc.line)
        owners = sorted(name for name, e in mapped_entities.items() if canonical in (e.get("values") or {}).values())
        if owners:
            report.add("mapped", *where, f"synonym {canonical!r} ({len(forms)} forms) → value of entity "
                       f"{', '.join(owners)}")
        else:
            report.add("dropped", *where, f"synonym {canonical!r}: no annotated entity uses it or its forms")
    for table, entries in project.lookups.items():
        if not entries:
            continue
        where = entries[0]
        if table in values:
            report.add("mapped", where.file, where.line, f"lookup table {table!r} ({len(entries)} entries) → "
                       f"entity {table!r}")
        else:  # in Rasa a lookup table without an entity of its name is only a featurizer input
            report.add("dropped", where.file, where.line, f"lookup table {table!r} ({len(entries)} entries): no "
                       "annotated entity of that name (in Rasa it only feeds the featurizer)")
    for rx_name, patterns in project.regexes.items():
        for p in patterns:
            report.add("dropped", p.file, p.line, f"regex {rx_name!r}: a Rasa regex feature (a classifier input), "
                       "not imported; add it to entities.yml if it names an entity")

    # responses nobody uses
    for rname, (_, where) in project.responses.items():
        if rname not in used:
            report.add("dropped", where.file, where.line, f"response {rname!r}: said by stories/rules/actions "
                       "that were not mapped")

    # held-out
    heldout_out: list[dict] = []
    leaked = 0
    for text, rasa_name, where in project.heldout:
        plain, _, _ = parse_annotated(text)
        lx = names.get(rasa_name)
        if lx is None or not any(i["name"] == lx for i in intents_out):
            report.add("dropped", where.file, where.line, f"held-out example {plain!r}: intent {rasa_name!r} is "
                       "not in the imported domain")
            continue
        heldout_out.append({"text": plain, "intent": lx})
        leaked += normalize(plain) in seen
    if heldout_out:
        report.add("mapped", project.heldout[0][2].file, 1, f"{len(heldout_out)} held-out NLU test examples → "
                   "eval/heldout.yml (never trained on)")

    # write
    out.mkdir(parents=True, exist_ok=True)
    domain_name = name or re.sub(r"[^A-Za-z0-9_.-]", "-", source.name) or "rasa-bot"
    _dump(out / "domain.yml", {"version": 1, "name": domain_name, "language": project.language or "en",
                               "description": f"Imported from the Rasa project {source.name}"})
    _dump(out / "intents.yml", {"intents": intents_out})
    if entities_out:
        _dump(out / "entities.yml", {"entities": entities_out})
    if heldout_out:
        (out / "eval").mkdir(exist_ok=True)
        _dump(out / "eval" / "heldout.yml", {"examples": heldout_out})
    report.summary = {"intents": len(intents_out), "training examples": n_examples,
                      "entities": len(entities_out), "held-out examples": len(heldout_out),
                      "held-out examples also in the training data (they inflate held-out accuracy)": leaked,
                      "intents with a response": sum(1 for i in intents_out if "response" in i)}
    (out / "import-report.md").write_text(report.to_markdown(), "utf-8")
    return RasaImport(out, report, len(intents_out), n_examples, len(heldout_out))


def _dump(path: Path, data: dict) -> None:
    header = "# Generated by `lingxi import rasa`; see import-report.md for what was mapped, approximated or dropped.\n"
    path.write_text(header + yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000), "utf-8")
