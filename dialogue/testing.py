"""Conversation tests: YAML conversations replayed through the real NLU pipeline and dialogue engine.

Each turn is a customer message (``user``), a button click (``payload``), a behaviour ``event`` or
an agent's ``release``, with expectations: ``intent``, ``decision``, ``bot`` (a regex searched in
the turn's bot texts), ``not_bot``, ``buttons`` (titles that must be offered), ``article``,
``slots``, ``flow`` (the active flow after the turn, ``""`` for none), ``handoff`` (true / false /
fields), ``silent``, ``stage`` (the policy stage that decided). Conversations of one file share a
store, so a later conversation can meet the visitor of an earlier one on another channel.

The shop's backend is the deterministic demo backend over a mock HTTP transport, unless a
conversation gives canned ``backend:`` replies per action (``{status, json}`` or
``{fail: timeout}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lingxi.datasets.dialogue_files import (
    ActionSpec,
    BackendReply,
    DialogueSpec,
    LoadedTest,
    TestTurn,
    TurnExpect,
)

from . import demo_backend
from .actions import ActionClient, ActionResult
from .engine import BehaviourIn, DialogueEngine, MessageIn
from .stores import MemoryTrackerStore
from .turn import NLU, TurnResult
from .visitors import Identity

DEFAULT_START = "2026-11-24T10:00:00+08:00"  # a Tuesday, within business hours
TURN_GAP_S = 30.0


class StubActions(ActionClient):
    """Canned replies for some actions; the rest go to the demo backend over a mock transport."""

    def __init__(self, replies: dict[str, BackendReply]) -> None:
        super().__init__("http://shop.test", transport=demo_backend.transport(), max_workers=2)
        self.replies = replies

    def call(self, spec: ActionSpec, slots: dict[str, Any]) -> ActionResult:
        reply = self.replies.get(spec.name)
        if reply is None:
            return super().call(spec, slots)
        if reply.fail is not None:
            return ActionResult(False, error=reply.fail)
        if reply.status == 404:
            return ActionResult(True, 404, None)
        if not 200 <= reply.status < 300:
            return ActionResult(False, reply.status, error=f"HTTP {reply.status}")
        return ActionResult(True, reply.status, reply.json)


@dataclass
class TurnReport:
    index: int
    line: int
    said: str
    problems: list[str]
    result: TurnResult


@dataclass
class ConversationReport:
    name: str
    file: str
    line: int
    turns: list[TurnReport] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and not any(t.problems for t in self.turns)


def _said(turn: TestTurn) -> str:
    if turn.user is not None:
        return f"user: {turn.user}"
    if turn.payload is not None:
        return f"button: {turn.payload}"
    if turn.event is not None:
        extra = "".join(f" {k}={v}" for k, v in (("page", turn.event.page), ("seconds", turn.event.seconds)) if v)
        return f"event: {turn.event.kind}{extra}"
    return "agent: release" if turn.release else "chat opened"


def _bot_text(result: TurnResult) -> str:
    parts = []
    for m in result.messages:
        if m.text:
            parts.append(m.text)
        if m.article is not None:
            parts.append(f"[article {m.article.id}{' ' + m.article.title if m.article.title else ''}]")
    return "\n".join(parts)


def check(expect: TurnExpect, result: TurnResult) -> list[str]:
    """Readable differences between what a turn should do and what it did."""
    out: list[str] = []
    if expect.intent is not None and result.intent != expect.intent:
        out.append(f"intent: expected {expect.intent!r}, got {result.intent!r}")
    if expect.decision is not None:
        wanted = [expect.decision] if isinstance(expect.decision, str) else expect.decision
        if result.decision not in wanted:
            out.append(f"decision: expected {' or '.join(map(repr, wanted))}, got {result.decision!r}")
    text = _bot_text(result)
    if expect.bot is not None and not re.search(expect.bot, text):
        shown = "\n      | ".join(text.splitlines()) or "(no bot text)"
        out.append(f"bot: /{expect.bot}/ not found in:\n      | {shown}")
    if expect.not_bot is not None and re.search(expect.not_bot, text):
        out.append(f"bot: /{expect.not_bot}/ should not appear, but it does")
    if expect.buttons is not None:
        offered = [b.title for m in result.messages for b in m.buttons]
        missing = [b for b in expect.buttons if b not in offered]
        if missing:
            out.append(f"buttons: missing {missing}; offered {offered}")
    if expect.article is not None:
        ids = [m.article.id for m in result.messages if m.article is not None]
        if expect.article not in ids:
            out.append(f"article: expected {expect.article!r}, got {ids or 'none'}")
    for name, value in (expect.slots or {}).items():
        got = result.slots.get(name)
        if got != value:
            out.append(f"slots.{name}: expected {value!r}, got {got!r}")
    if expect.flow is not None and (result.active_flow or "") != expect.flow:
        out.append(f"flow: expected {expect.flow or 'none'!r}, got {result.active_flow or 'none'!r}")
    if expect.handoff is not None:
        h = result.handoff
        if expect.handoff is True and h is None:
            out.append("handoff: expected a handoff, got none")
        elif expect.handoff is False and h is not None:
            out.append(f"handoff: expected none, got {h.reason} → {h.skill_group}")
        elif isinstance(expect.handoff, dict):
            if h is None:
                out.append(f"handoff: expected {expect.handoff}, got none")
            else:
                for key, value in expect.handoff.items():
                    got = getattr(h, key, None)
                    if key == "summary":
                        if not re.search(str(value), got or ""):
                            out.append(f"handoff.summary: /{value}/ not found in {got!r}")
                    elif key == "history":
                        if len(got or []) < int(value):
                            out.append(f"handoff.history: expected ≥ {value} earlier conversations, got {len(got or [])}")
                    elif got != value:
                        out.append(f"handoff.{key}: expected {value!r}, got {got!r}")
    if expect.silent is not None and result.silent != expect.silent:
        out.append(f"silent: expected {expect.silent}, got {result.silent}")
    if expect.stage is not None:
        hits = [t.stage for t in result.trace if t.outcome == "hit"]
        if not hits or hits[-1] != expect.stage:
            out.append(f"stage: expected {expect.stage!r}, got {hits[-1] if hits else 'none'!r}")
    return out


def _ts(value: str | None, previous: float | None) -> float:
    if value:
        return datetime.fromisoformat(value).timestamp()
    return (previous or datetime.fromisoformat(DEFAULT_START).timestamp()) + TURN_GAP_S


def run_tests(tests: list[LoadedTest], nlu: NLU, spec: DialogueSpec, knowledge: Any = None,
              arbitration: Any = None) -> list[ConversationReport]:
    """Replay ``tests`` (one engine per file, in memory) with the served ``knowledge`` base and the
    fitted ``arbitration`` when given, as the server would answer."""
    reports: list[ConversationReport] = []
    engines: dict[str, DialogueEngine] = {}
    for test in tests:
        engine = engines.get(test.file)
        if engine is None:
            engine = engines[test.file] = DialogueEngine(spec, nlu, MemoryTrackerStore(), knowledge=knowledge,
                                                         arbitration=arbitration)
        conv = test.conversation
        report = ConversationReport(conv.name, test.file, test.line)
        reports.append(report)
        actions = StubActions(conv.backend)
        engine.flows.actions = actions
        cid = "test-" + re.sub(r"[^\w.:@-]", "_", conv.name)[:100]
        ts = datetime.fromisoformat(conv.at or DEFAULT_START).timestamp() - TURN_GAP_S
        channel, tags = conv.channel, list(conv.tags)
        idents = [Identity(i.kind, i.value) for i in conv.identities]
        try:
            for j, turn in enumerate(conv.turns):
                ts = _ts(turn.at, ts)
                channel = turn.channel or channel
                tags = list(turn.tags) if turn.tags is not None else tags
                if turn.identities is not None:
                    idents = [Identity(i.kind, i.value) for i in turn.identities]
                if turn.event is not None:
                    ev = turn.event
                    result = engine.handle_behaviour(cid, BehaviourIn(kind=ev.kind, page=ev.page, seconds=ev.seconds,
                                                                      data=ev.data, channel=channel, tags=tags,
                                                                      timestamp=ts))
                elif turn.release:
                    result = engine.release(cid, timestamp=ts)
                elif turn.open:
                    result = engine.open(cid, MessageIn(channel=channel, tags=tags, identities=idents, timestamp=ts))
                else:
                    result = engine.handle_message(cid, MessageIn(text=None if turn.user is None else str(turn.user), payload=turn.payload, channel=channel,
                                                                  tags=tags, identities=idents, timestamp=ts))
                report.turns.append(TurnReport(j + 1, test.turn_lines[j], _said(turn), check(turn.expect, result),
                                               result))
        except Exception as exc:  # noqa: BLE001 - a crash is a failed test with its message
            report.error = f"{type(exc).__name__}: {exc}"
        finally:
            actions.close()
    return reports


def format_report(reports: list[ConversationReport], verbose: bool = False) -> str:
    lines: list[str] = []
    for r in reports:
        if r.passed and not verbose:
            lines.append(f"PASS  {r.name}")
            continue
        lines.append(f"{'PASS' if r.passed else 'FAIL'}  {r.name}  ({r.file}:{r.line})")
        if r.error:
            lines.append(f"    error: {r.error}")
        for t in r.turns:
            if not t.problems and not verbose:
                continue
            mark = "✗" if t.problems else "✓"
            lines.append(f"  {mark} turn {t.index} (line {t.line}) {t.said}")
            lines.append(f"      got: decision={t.result.decision} intent={t.result.intent} "
                         f"flow={t.result.active_flow or '-'}")
            for text in _bot_text(t.result).splitlines() or ["(silent)"]:
                lines.append(f"      bot| {text}")
            for p in t.problems:
                lines.append(f"    {p}")
            if t.problems:
                trace = " → ".join(f"{s.stage}:{s.outcome}" + (f"({s.detail})" if s.detail else "")
                                   for s in t.result.trace)
                lines.append(f"      trace: {trace}")
    failed = sum(1 for r in reports if not r.passed)
    lines.append(f"\n{len(reports) - failed} passed, {failed} failed ({len(reports)} conversations, "
                 f"{sum(len(r.turns) for r in reports)} turns)")
    return "\n".join(lines)
