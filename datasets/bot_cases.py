"""Labelled customer conversations for the end-to-end bot benchmark (``lingxi eval bot``).

The format is described in ``datasets/demo_bot/README.md``: every ``*.yml`` file of a folder has
``defaults`` and ``cases``; a case is one message (``say`` or ``payload``) with an ``expect``, or a
script of ``turns`` that each may carry one. Every problem is reported as ``file:line: message``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from .domain import DomainError, Problem, locate, read_yaml

CATEGORIES = ("article", "intent", "clarify", "out_of_scope", "multi_turn", "english", "traditional", "handoff",
              "off_hours", "long")


class _Spec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    pass


class Expect(_Spec, kw_only=True):
    intent: str | list[str] | None = None
    article: str | list[str] | None = None
    flow: str | None = None
    slot: str | None = None
    clarify: list[str] | None = None
    handoff: bool | None = None
    leave_message: bool | None = None
    skill_group: str | None = None
    priority: str | None = None
    out_of_scope: bool | None = None
    language: str | None = None

    @property
    def intents(self) -> set[str]:
        return {self.intent} if isinstance(self.intent, str) else set(self.intent or ())

    @property
    def articles(self) -> set[str]:
        return {self.article} if isinstance(self.article, str) else set(self.article or ())

    @property
    def wants_answer(self) -> bool:
        return bool(self.intents or self.articles or self.out_of_scope or self.flow)


class TurnSpec(_Spec, kw_only=True):
    say: str | None = None
    payload: str | None = None
    expect: Expect | None = None
    timestamp: str | None = None
    channel: str | None = None
    tags: list[str] | None = None
    language: str | None = None


class CaseSpec(TurnSpec, kw_only=True):
    id: str
    category: str
    turns: list[TurnSpec] | None = None


class Defaults(_Spec):
    channel: str | None = None
    timestamp: str | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    language: str | None = None


class CaseFile(_Spec):
    defaults: Defaults = msgspec.field(default_factory=Defaults)
    cases: list[CaseSpec] = msgspec.field(default_factory=list)


@dataclass
class Case:
    id: str
    category: str
    turns: list[TurnSpec]
    defaults: Defaults
    file: str
    line: int
    turn_lines: list[int] = field(default_factory=list)


def load_cases(folder: str | Path) -> list[Case]:
    """Every case of every ``*.yml`` file under ``folder`` (a file works too), checked."""
    root = Path(folder)
    files = [root] if root.is_file() else sorted(root.rglob("*.y*ml"))
    if not files:
        raise DomainError([Problem(str(root), 0, "no case files (*.yml) here")])
    cases: list[Case] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for path in files:
        display = str(path)
        try:
            spec, node = read_yaml(path, display, CaseFile)
        except DomainError as exc:
            problems.extend(exc.problems)
            continue
        for i, c in enumerate(spec.cases):
            line = locate(node, f"$.cases[{i}]")
            if c.id in seen:
                problems.append(Problem(display, line, f"case id {c.id!r} already used in {seen[c.id]}"))
                continue
            seen[c.id] = f"{display}:{line}"
            if c.category not in CATEGORIES:
                problems.append(Problem(display, line, f"case {c.id}: category must be one of {list(CATEGORIES)}"))
            if c.turns:
                if c.say or c.payload or c.expect:
                    problems.append(Problem(display, line, f"case {c.id}: give `turns` or one message, not both"))
                turns = c.turns
                lines = [locate(node, f"$.cases[{i}].turns[{j}]") for j in range(len(turns))]
            else:
                turns = [TurnSpec(say=c.say, payload=c.payload, expect=c.expect, timestamp=c.timestamp,
                                  channel=c.channel, tags=c.tags, language=c.language)]
                lines = [line]
            for t, tline in zip(turns, lines, strict=True):
                if bool(t.say) == bool(t.payload):
                    problems.append(Problem(display, tline, f"case {c.id}: a turn needs exactly one of `say`, `payload`"))
            if not any(t.expect for t in turns):
                problems.append(Problem(display, line, f"case {c.id}: no expectation"))
            cases.append(Case(c.id, c.category, turns, spec.defaults, display, line, lines))
    if problems:
        raise DomainError(problems)
    return cases


def demo_bot_path(split: str = "dev") -> Path:
    """The demo shop's benchmark: ``dev`` (guides development) or ``test`` (reported only)."""
    return Path(__file__).resolve().parent / "demo_bot" / split
