"""``lingxi eval conversations``: the conversation tests of a domain as an eval run with a report.

The same replay as ``lingxi test conversations`` (:func:`lingxi.dialogue.testing.run_tests`, newest
model, the domain's flows), written as a run folder: ``results.json`` (conversations and turns
passed, per conversation), ``errors.jsonl`` (each failed turn with file:line, what was said, the
problems and what the bot did), ``predictions.jsonl`` (every turn, for comparing two runs) and
``report.html``. Exit status 0 when all pass, 1 when some fail, 2 when the files are broken.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from . import plots
from .report import conversations_page, write_report
from .runs import ERRORS, PREDICTIONS, REPORT, provenance, write_figures, write_jsonl, write_results


def _fingerprint(files: list[str]) -> str:
    digest = hashlib.sha256()
    for f in sorted(set(files)):
        digest.update(f.encode())
        digest.update(Path(f).read_bytes() if Path(f).is_file() else b"")
    return digest.hexdigest()[:16]


def run_conversations_eval(out_dir: str | Path, path: str | None = None, domain: str | None = None,
                           models_dir: str | None = None, config: str | None = None, report: bool = True,
                           tracking_uri: str | None = None) -> dict:
    """Replay the tests and write the run folder; raises ``SetupError`` on broken files."""
    from lingxi.serving.dialogue_cli import prepare_conversation_run, replay_served

    started = time.perf_counter()
    run = prepare_conversation_run(path, domain, models_dir, config)
    reports = replay_served(run, config)
    bundle = run.loaded.bundle
    turns: list[dict] = []
    failures: list[dict] = []
    per_conversation: list[dict] = []
    for r in reports:
        failed = [t for t in r.turns if t.problems]
        per_conversation.append({"name": r.name, "file": r.file, "line": r.line, "passed": r.passed,
                                 "error": r.error, "passed_turns": len(r.turns) - len(failed),
                                 "failed_turns": len(failed) + (1 if r.error else 0)})
        for t in r.turns:
            row = {"id": f"{r.name}#{t.index}", "conversation": r.name, "file": r.file, "line": t.line,
                   "turn": t.index, "said": t.said, "passed": not t.problems, "problems": t.problems,
                   "decision": t.result.decision, "intent": t.result.intent, "flow": t.result.active_flow}
            turns.append(row)
            if t.problems:
                failures.append(row)
        if r.error:
            failures.append({"id": f"{r.name}#error", "conversation": r.name, "file": r.file, "line": r.line,
                             "turn": len(r.turns) + 1, "said": "", "passed": False, "problems": [r.error],
                             "decision": None, "intent": None, "flow": None})
    n_turns = len(turns)
    results = {
        **provenance("conversations"),
        "dataset": str(run.tests_path),
        "source": str(run.domain_dir),
        "dataset_fingerprint": _fingerprint([r.file for r in reports]),
        "split": "all conversation tests (no fitting)",
        "seed": None,
        "model": {"version": bundle.version, "bot": bundle.bot, "bundle": f"{bundle.bot}@{bundle.version}"},
        "n_conversations": len(reports),
        "passed": sum(r.passed for r in reports),
        "failed": sum(not r.passed for r in reports),
        "pass_rate": sum(r.passed for r in reports) / len(reports) if reports else None,
        "n_turns": n_turns,
        "turn_pass_rate": sum(t["passed"] for t in turns) / n_turns if n_turns else None,
        "conversations": per_conversation,
        "files": {"errors": ERRORS, "predictions": PREDICTIONS, "report": REPORT if report else None},
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(out_dir)
    write_results(out, results)
    write_jsonl(out / ERRORS, failures)
    write_jsonl(out / PREDICTIONS, turns)
    if report:
        figures = {"conversations": plots.conversations_png(per_conversation)} if per_conversation else {}
        results["files"]["figures"] = write_figures(out, figures)
        write_report(out, conversations_page(results, figures, failures))
        write_results(out, results)
    if tracking_uri:
        from .tracking import log_eval_run

        log_eval_run(out, results, tracking_uri)
    return results


def cmd_eval_conversations(args) -> int:
    from lingxi.serving.dialogue_cli import SetupError

    from .tracking import tracking_uri_from

    try:
        results = run_conversations_eval(args.out, args.path, args.domain, args.models_dir,
                                         getattr(args, "config", None), report=not args.no_report,
                                         tracking_uri=tracking_uri_from(args))
    except SetupError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    print(f"{results['passed']}/{results['n_conversations']} conversations passed, "
          f"turns {results['turn_pass_rate']:.1%} ({results['n_turns']}); model {results['model']['bundle']}")
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0 if results["failed"] == 0 else 1


def add_conversations_parser(subparsers) -> None:
    """Register ``conversations`` under ``lingxi eval``."""
    from .tracking import add_tracking_options

    p = subparsers.add_parser("conversations", help="replay conversation tests; results, failures and a report")
    p.add_argument("path", nargs="?", help="a YAML file or folder of tests (default: the domain's tests/)")
    p.add_argument("--domain", help="domain folder (default: the PATH's domain, or the built-in demo)")
    p.add_argument("--models-dir", help="where trained bundles are (default: $LINGXI_HOME/models)")
    p.add_argument("--out", required=True, help="output folder for results.json, errors.jsonl, report.html")
    p.add_argument("--no-report", action="store_true", help="skip report.html and the figures")
    add_tracking_options(p)
    p.set_defaults(func=cmd_eval_conversations)
