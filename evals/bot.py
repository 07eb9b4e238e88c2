"""``lingxi eval bot``: the end-to-end customer-service benchmark, scored on what customers got.

Labelled conversations (``datasets/bot_cases.py``; the demo's in ``datasets/demo_bot/``) are played
through a dialogue engine — the CLI builds the one the server builds: the served model, the
tenant's knowledge base and index, the answer arbitration, a real tracker store — and every turn
that carries an expectation is judged on the turn's result, as a chat frontend would receive it.

When the bot asks a clarifying question that offers an expected answer, the simulated customer
clicks it and the turn is judged on the bot's next reply (one more turn to resolution).

Per case: **resolved** (every expectation held), **wrong answer** (the bot answered with an intent
or an article that was not expected, or answered an out-of-scope request), and whether a judged
turn clarified, fell back or handed off. Reported overall and per category, with the turn-level
pass rate (the long conversation is one case of hundreds of turns), the out-of-scope requests
given no article, English cases answered in English, empty replies, and per-turn latency.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from lingxi.datasets.bot_cases import CATEGORIES, Case, Expect, TurnSpec

from .report import Page, pct, provenance_table, write_report
from .runs import ERRORS, PREDICTIONS, REPORT, provenance, write_jsonl, write_results

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_FLOW_NOTE = re.compile(r"(?:start flow|flow|stacked on|resume flow) (\w+)")
ANSWER_DECISIONS = {"answer", "flow", "welcome", "rule", "knowledge"}
STEP_S = 20.0  # seconds between a script's turns when they carry no timestamp


@dataclass
class Observed:
    """What one turn's result showed the customer, in benchmark terms."""

    decision: str
    intents: set[str] = field(default_factory=set)
    articles: set[str] = field(default_factory=set)
    suggested: set[str] = field(default_factory=set)
    flows: set[str] = field(default_factory=set)
    slots: dict[str, Any] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)  # clarification option (intent or article id) → payload
    handoff: bool = False
    leave_message: bool = False
    skill_group: str | None = None
    priority: str | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return bool(self.intents or self.articles)

    def summary(self) -> str:
        parts = [self.decision]
        if self.intents:
            parts.append("intent=" + ",".join(sorted(self.intents)))
        if self.articles:
            parts.append("article=" + ",".join(sorted(self.articles)))
        if self.options:
            parts.append("options=" + ",".join(self.options))
        if self.suggested:
            parts.append("suggested=" + ",".join(sorted(self.suggested)))
        if self.flows:
            parts.append("flow=" + ",".join(sorted(self.flows)))
        if self.handoff or self.leave_message:
            parts.append(f"handoff={self.skill_group}/{self.priority}" + (" (message)" if self.leave_message else ""))
        return " ".join(parts)


def observe(result: Any) -> Observed:
    """Read a :class:`~lingxi.dialogue.turn.TurnResult` (object or its JSON form) as an :class:`Observed`."""
    r = result if isinstance(result, dict) else _builtins(result)
    obs = Observed(decision=r.get("decision") or "none", slots=dict(r.get("slots") or {}))
    if obs.decision in ANSWER_DECISIONS - {"knowledge"} and r.get("intent"):
        obs.intents.add(r["intent"])
    for m in r.get("messages") or []:
        if m.get("text"):
            obs.texts.append(m["text"])
        obs.texts.extend(b["title"] for b in m.get("buttons") or [])
        article = m.get("article")
        if article and m.get("kind") != "clarify":
            obs.articles.add(article["id"])
        for a in m.get("articles") or []:
            obs.suggested.add(a["id"])
        if m.get("kind") == "clarify":
            for b in m.get("buttons") or []:
                payload = b["payload"]
                value = payload.removeprefix("/article:") if payload.startswith("/article:") else payload.lstrip("/")
                obs.options[value] = payload
    if r.get("active_flow"):
        obs.flows.add(r["active_flow"])
    for step in r.get("trace") or []:
        if step.get("stage") == "flow":
            obs.flows.update(m.group(1) for m in _FLOW_NOTE.finditer(step.get("detail") or ""))
    handoff = r.get("handoff")
    if handoff:
        obs.skill_group, obs.priority = handoff.get("skill_group"), handoff.get("priority")
        if handoff.get("mode") == "message":
            obs.leave_message = True
        else:
            obs.handoff = True
    if obs.decision == "leave_message" or r.get("active_flow") == "leave_message":
        obs.leave_message = True
    return obs


def _builtins(result: Any) -> dict:
    return msgspec.to_builtins(result)


def language_ok(texts: Sequence[str], language: str) -> bool:
    """Every text in ``language``: English texts carry no Han characters; Chinese texts do."""
    if language == "en":
        return all(not _HAN.search(t) for t in texts)
    return all(_HAN.search(t) or not re.search(r"[A-Za-z]{3,}", t) for t in texts)


def check(expect: Expect, obs: Observed, own_article: Mapping[str, str] | None = None) -> list[str]:
    """What does not hold (empty: the expectation held). An expected intent also holds when the
    bot showed that intent's own article (``own_article``)."""
    problems = []
    own = own_article or {}
    if expect.intents and not expect.intents & obs.intents and not {own.get(i) for i in expect.intents} & obs.articles:
        problems.append(f"expected intent {sorted(expect.intents)}, got {obs.summary()}")
    if expect.articles and not expect.articles & obs.articles:
        problems.append(f"expected article {sorted(expect.articles)}, got {obs.summary()}")
    if expect.flow and expect.flow not in obs.flows:
        problems.append(f"expected flow {expect.flow}, got {obs.summary()}")
    if expect.slot and obs.slots.get(expect.slot) in (None, ""):
        problems.append(f"expected slot {expect.slot} filled, slots {sorted(obs.slots)}")
    if expect.clarify and not set(expect.clarify) & set(obs.options):
        problems.append(f"expected a clarification offering {expect.clarify}, got {obs.summary()}")
    if expect.handoff and not obs.handoff:
        problems.append(f"expected a handoff, got {obs.summary()}")
    if expect.leave_message and not obs.leave_message:
        problems.append(f"expected the offer to leave a message, got {obs.summary()}")
    if expect.skill_group and (obs.handoff or obs.leave_message) and obs.skill_group != expect.skill_group:
        problems.append(f"expected skill group {expect.skill_group}, got {obs.skill_group}")
    if expect.priority and (obs.handoff or obs.leave_message) and obs.priority != expect.priority:
        problems.append(f"expected priority {expect.priority}, got {obs.priority}")
    if expect.out_of_scope and (obs.answered or obs.suggested or obs.decision == "clarify"):
        problems.append(f"expected no answer and no article for an out-of-scope request, got {obs.summary()}")
    if expect.language and not language_ok(obs.texts, expect.language):
        problems.append(f"expected every text in {expect.language}: {obs.texts[:3]}")
    return problems


def is_wrong(expect: Expect, obs: Observed, own_article: Mapping[str, str] | None = None) -> bool:
    """The bot answered something other than what was expected (never counted for a clarification,
    a fallback or a handoff: those are unresolved, not wrong)."""
    if expect.out_of_scope:
        return obs.answered
    if not (expect.intents or expect.articles):
        return False
    if not obs.answered:
        return False
    own = own_article or {}
    shown = obs.articles | {own[i] for i in obs.intents if i in own}
    return not (expect.intents & obs.intents or expect.articles & shown
                or {own.get(i) for i in expect.intents} & obs.articles)


def _clickable(expect: Expect, obs: Observed, own_article: Mapping[str, str]) -> str | None:
    """The option a customer looking for the expected answer clicks: it, or an intent whose own
    article is the expected one (its answer carries that article's card)."""
    if obs.decision != "clarify" or not obs.options:
        return None
    for wanted in [*sorted(expect.intents), *sorted(expect.articles)]:
        if wanted in obs.options:
            return obs.options[wanted]
    for option, payload in obs.options.items():
        if own_article.get(option) in expect.articles:
            return payload
    return None


def _timestamp(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


Send = Callable[[str, TurnSpec, float | None, str | None], Any]  # (conversation id, turn, ts, payload override) → result


def play_case(case: Case, send: Send, cid: str, own_article: Mapping[str, str] | None = None,
              release: Callable[[str, float | None], object] | None = None) -> dict:
    """Play one case; the record of what happened, judged. ``release``: hands the conversation back
    to the bot after a handoff the case did not expect (as an agent would), so one early mistake in a
    long conversation is counted once instead of silencing every turn after it."""
    base = _timestamp(case.defaults.timestamp)
    turns_out = []
    resolved = True
    wrong = clarified = fell_back = handed_off = False
    sent = 0
    empty = 0
    routing = {"group": [0, 0], "priority": [0, 0]}  # [right, expected] over turns that name them
    latencies: list[float] = []
    d = case.defaults
    for i, spec in enumerate(case.turns):
        turn = msgspec.structs.replace(spec, channel=spec.channel or d.channel, language=spec.language or d.language,
                                       tags=spec.tags if spec.tags is not None else list(d.tags))
        ts = _timestamp(turn.timestamp) or (base + i * STEP_S if base is not None else None)
        started = time.perf_counter()
        result = send(cid, turn, ts, None)
        latencies.append((time.perf_counter() - started) * 1000)
        sent += 1
        obs = observe(result)
        if not obs.texts and not obs.handoff:
            empty += 1
        record = {"turn": i + 1, "line": case.turn_lines[i] if i < len(case.turn_lines) else case.line,
                  "said": turn.say or turn.payload, "got": obs.summary()}
        expect = turn.expect
        if expect is not None:
            clicked = _clickable(expect, obs, own_article or {})
            if clicked is not None:
                clarified = True
                started = time.perf_counter()
                result = send(cid, TurnSpec(payload=clicked, channel=turn.channel, tags=turn.tags),
                              (ts + 5) if ts is not None else None, clicked)
                latencies.append((time.perf_counter() - started) * 1000)
                sent += 1
                obs = observe(result)
                record["clicked"] = clicked
                record["got"] = obs.summary()
            problems = check(expect, obs, own_article)
            handed = bool(obs.handoff or obs.leave_message)
            for key, want, got in (("group", expect.skill_group, obs.skill_group),
                                   ("priority", expect.priority, obs.priority)):
                if want:
                    routing[key][1] += 1
                    routing[key][0] += int(handed and got == want)
            record["expected"] = _expectation(expect)
            record["problems"] = problems
            record["passed"] = not problems
            if obs.decision == "clarify" and not expect.clarify:
                clarified = True
            if obs.decision == "fallback":
                fell_back = True
            if obs.handoff or obs.leave_message:
                handed_off = True
            if is_wrong(expect, obs, own_article):
                wrong = True
                record["wrong"] = True
            if obs.handoff and not expect.handoff and release is not None:
                release(cid, (ts + 10) if ts is not None else None)
                record["released"] = True
            if problems:
                resolved = False
                record["trace"] = [f"{s.get('stage')}:{s.get('outcome')} {s.get('detail', '')}"
                                   for s in (result if isinstance(result, dict) else _builtins(result)).get("trace", [])]
        turns_out.append(record)
    judged = [t for t in turns_out if "passed" in t]
    return {"id": case.id, "category": case.category, "file": case.file, "line": case.line, "resolved": resolved,
            "wrong": wrong, "clarified": clarified, "fell_back": fell_back, "handed_off": handed_off,
            "turns_sent": sent, "judged_turns": len(judged), "passed_turns": sum(t["passed"] for t in judged),
            "empty_replies": empty, "latency_ms": latencies, "turns": turns_out, "routing": routing,
            "out_of_scope_turns": sum(1 for t, spec in zip(turns_out, case.turns, strict=False)
                                      if spec.expect is not None and spec.expect.out_of_scope),
            "out_of_scope_clean": sum(1 for t, spec in zip(turns_out, case.turns, strict=False)
                                      if spec.expect is not None and spec.expect.out_of_scope and t["passed"]),
            "english": any(spec.expect is not None and spec.expect.language == "en" for spec in case.turns),
            "english_ok": all(not any("expected every text in en" in p for p in t.get("problems", []))
                              for t in turns_out)}


def _expectation(expect: Expect) -> dict:
    return msgspec.to_builtins(expect)


def _rates(cases: Sequence[dict]) -> dict[str, float | int | None]:
    n = len(cases)
    if not n:
        return {"cases": 0}
    resolved = [c for c in cases if c["resolved"]]
    judged = sum(c["judged_turns"] for c in cases)
    oos = sum(c["out_of_scope_turns"] for c in cases)
    english = [c for c in cases if c["english"]]
    return {
        "cases": n,
        "correct_resolution_rate": len(resolved) / n,
        "wrong_answer_rate": sum(c["wrong"] for c in cases) / n,
        "clarify_rate": sum(c["clarified"] for c in cases) / n,
        "fallback_rate": sum(c["fell_back"] for c in cases) / n,
        "handoff_rate": sum(c["handed_off"] for c in cases) / n,
        "mean_turns_to_resolution": statistics.fmean(c["turns_sent"] for c in resolved) if resolved else None,
        "turn_pass_rate": sum(c["passed_turns"] for c in cases) / judged if judged else None,
        "judged_turns": judged,
        "out_of_scope_no_article_rate": sum(c["out_of_scope_clean"] for c in cases) / oos if oos else None,
        "english_cases": len(english),
        "english_answered_in_english_rate": sum(c["english_ok"] for c in english) / len(english) if english else None,
        "empty_replies": sum(c["empty_replies"] for c in cases),
        # the handoff's suggested group and priority, on the turns that expect one (a turn that did
        # not hand off counts as wrong)
        "routing_turns": sum(c["routing"]["group"][1] for c in cases),
        "routing_group_accuracy": _share(cases, "group"),
        "routing_priority_accuracy": _share(cases, "priority"),
    }


def _share(cases: Sequence[dict], key: str) -> float | None:
    expected = sum(c["routing"][key][1] for c in cases)
    return sum(c["routing"][key][0] for c in cases) / expected if expected else None


def run_bot_benchmark(cases: Sequence[Case], send: Send, out_dir: str | Path, *, dataset: str, model: dict,
                      setup: dict | None = None, report: bool = True, own_article: Mapping[str, str] | None = None,
                      progress: Callable[[int, int], None] | None = None,
                      release: Callable[[str, float | None], object] | None = None) -> dict:
    """Play every case with ``send`` and write the run folder (results.json, errors.jsonl,
    predictions.jsonl, report.html). ``own_article``: each intent's own article (for the clicks);
    ``release``: see :func:`play_case`."""
    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:8]
    records = []
    for k, case in enumerate(cases):
        records.append(play_case(case, send, f"bench-{run_id}-{case.id}"[:128], own_article, release))
        if progress is not None:
            progress(k + 1, len(cases))
    latencies = sorted(v for r in records for v in r["latency_ms"])
    per_category = {cat: _rates([r for r in records if r["category"] == cat]) for cat in CATEGORIES
                    if any(r["category"] == cat for r in records)}
    results = {
        **provenance("bot"),
        "dataset": dataset,
        "split": "all cases (nothing is fitted on them)",
        "seed": None,
        "model": model,
        "setup": setup or {},
        **_rates(records),
        "per_category": per_category,
        "turn_latency_ms": {"p50": _quantile(latencies, 0.5), "p99": _quantile(latencies, 0.99),
                            "turns": len(latencies)},
        "files": {"errors": ERRORS, "predictions": PREDICTIONS, "report": REPORT if report else None},
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(out_dir)
    write_results(out, results)
    errors = [{"id": r["id"], "category": r["category"], "file": r["file"], "line": t["line"], "turn": t["turn"],
               "said": t["said"], "expected": t.get("expected"), "got": t["got"], "problems": t["problems"],
               "wrong": t.get("wrong", False), "trace": t.get("trace", [])}
              for r in records for t in r["turns"] if t.get("problems")]
    write_jsonl(out / ERRORS, errors)
    write_jsonl(out / PREDICTIONS, ({k: v for k, v in r.items() if k != "latency_ms"} for r in records))
    if report:
        write_report(out, bot_page(results, errors))
    return results


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


def bot_page(results: dict, errors: Sequence[dict]) -> Page:
    page = Page("Lingxi eval · bot", f"{results.get('dataset')} · model {(results.get('model') or {}).get('version')}")
    page.cards([
        ("correct resolution", pct(results.get("correct_resolution_rate")), f"{results['cases']} cases"),
        ("wrong answers", pct(results.get("wrong_answer_rate")), "of all cases"),
        ("out of scope given no article", pct(results.get("out_of_scope_no_article_rate")), ""),
        ("handoff routing: group / priority right", f"{pct(results.get('routing_group_accuracy'))} / "
         f"{pct(results.get('routing_priority_accuracy'))}", f"{results.get('routing_turns', 0)} turns"),
        ("English answered in English", pct(results.get("english_answered_in_english_rate")),
         f"{results.get('english_cases')} cases"),
        ("turns passed", pct(results.get("turn_pass_rate")), f"{results.get('judged_turns')} judged turns"),
        ("turn latency p50 / p99", f"{results['turn_latency_ms']['p50']} / {results['turn_latency_ms']['p99']} ms", ""),
    ])
    page.heading("Per category")
    cols = ["correct_resolution_rate", "wrong_answer_rate", "clarify_rate", "fallback_rate", "handoff_rate"]
    page.table(["category", "cases", "resolved", "wrong", "clarify", "fallback", "handoff", "mean turns"],
               [(cat, r["cases"], *(pct(r.get(c)) for c in cols),
                 f"{r['mean_turns_to_resolution']:.2f}" if r.get("mean_turns_to_resolution") else "–")
                for cat, r in results["per_category"].items()])
    if errors:
        page.heading(f"Failed turns ({len(errors)})")
        page.table(["case", "file:line", "said", "expected", "got", "problems"],
                   [(e["id"] + (" ✗" if e["wrong"] else ""), f"{e['file']}:{e['line']}", e["said"],
                     json.dumps(e["expected"], ensure_ascii=False), e["got"], "; ".join(e["problems"])) for e in errors[:400]])
    provenance_table(page, results)
    return page
