"""``lingxi test conversations [PATH]``: replay YAML test conversations through the newest model.

Hooked into the main CLI with ``add_dialogue_parser(subparsers)``; also runnable on its own as
``python -m lingxi.serving.dialogue_cli conversations [PATH]``.

Without PATH it runs the built-in demo's tests (``datasets/demo/tests/``) against the demo domain.
A PATH inside ``<domain>/tests/`` uses that domain's flows; ``--domain`` overrides. The model is
the newest trained bundle of the configured bot; with none, the domain is trained first (no
MLflow run). Exit status: 0 all passed, 1 a conversation failed, 2 bad files or no model.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path


def _domain_for(path: Path | None, explicit: str | None) -> Path:
    from lingxi.datasets.domain import demo_domain_path

    if explicit:
        return Path(explicit)
    if path is not None:
        for parent in [path, *path.resolve().parents]:
            if parent.name == "tests" and (parent.parent / "flows").is_dir():
                return parent.parent
    return demo_domain_path()


class SetupError(Exception):
    """Conversation tests could not start; ``lines`` are ``file:line: message`` for stderr."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclass
class ConversationRun:
    """Everything a replay needs: the tests, the dialogue spec and the model to replay them with."""

    tests: list
    spec: object
    loaded: object  # serving.loading.LoadedModel
    tests_path: Path
    domain_dir: Path


def prepare_conversation_run(path: str | None, domain: str | None, models_dir: str | None,
                             config: str | None) -> ConversationRun:
    """Load the domain, its flows and the tests, and the newest model (training one if there is none).

    Shared by ``lingxi test conversations`` and ``lingxi eval conversations``.
    """
    from lingxi.datasets.dialogue_files import load_conversation_tests, load_dialogue
    from lingxi.datasets.domain import DomainError, load_domain

    tests_arg = Path(path) if path else None
    domain_dir = _domain_for(tests_arg, domain)
    tests_path = tests_arg or domain_dir / "tests"
    try:
        dom = load_domain(domain_dir)
        spec = load_dialogue(domain_dir, set(dom.intent_names), {r.id for r in dom.rules})
        tests = load_conversation_tests(tests_path)
    except DomainError as exc:
        raise SetupError([f"{p.file if Path(p.file).is_absolute() or p.line == 0 else domain_dir / p.file}:"
                          f"{p.line}: {p.message}" for p in exc.problems]) from None
    return ConversationRun(tests, spec, load_or_train_model(domain_dir, models_dir, config), tests_path, domain_dir)


def load_or_train_model(domain_dir: Path, models_dir: str | None, config: str | None):
    """The newest bundle of the configured bot; with none, train ``domain_dir`` first (no MLflow run)."""
    from lingxi.datasets.domain import DomainError
    from lingxi.serving.loading import ModelHolder
    from lingxi.serving.settings import load_settings
    from lingxi.training.bundle import latest_bundle_path

    settings = load_settings(config)
    models = Path(models_dir) if models_dir else settings.models_path
    bot = settings.bot
    if latest_bundle_path(models, bot) is None:
        from lingxi.training.train import TrainConfig, train_domain

        print(f"no model for {bot!r} in {models}: training {domain_dir} first …", file=sys.stderr)
        try:
            bot = train_domain(domain_dir, models, TrainConfig(), log_to_mlflow=False).bundle.bot
        except DomainError as exc:
            raise SetupError([str(p) for p in exc.problems]) from None
    holder = ModelHolder(models, bot)
    loaded = holder.load_latest()
    if loaded is None:
        raise SetupError([f"error: {holder.last_error}"])
    return loaded


def replay_served(run: ConversationRun, config: str | None) -> list:
    """Replay the run's tests with the knowledge base and the arbitration the server would use."""
    import msgspec

    from lingxi.dialogue.tenancy import tenant_scope
    from lingxi.dialogue.testing import run_tests
    from lingxi.serving.knowledge import served_knowledge
    from lingxi.serving.loading import ModelHolder
    from lingxi.serving.settings import load_settings

    settings = msgspec.structs.replace(load_settings(config), dialogue_domain=str(run.domain_dir))
    holder = ModelHolder(run.loaded.path.parent.parent, run.loaded.bundle.bot)
    holder.current = run.loaded
    with served_knowledge(settings, holder) as (knowledge, arbitration), tenant_scope("default"):
        return run_tests(run.tests, run.loaded.pipeline, run.spec, knowledge, arbitration)


def cmd_test_conversations(args) -> int:
    from lingxi.dialogue.testing import format_report

    try:
        run = prepare_conversation_run(args.path, args.domain, args.models_dir, getattr(args, "config", None))
    except SetupError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    loaded, tests_path = run.loaded, run.tests_path
    reports = replay_served(run, getattr(args, "config", None))
    print(format_report(reports, verbose=args.verbose))
    print(f"model {loaded.bundle.bot}@{loaded.bundle.version}; tests {tests_path}")
    if args.json:
        out = [{"name": r.name, "file": r.file, "line": r.line, "passed": r.passed, "error": r.error,
                "failures": [{"turn": t.index, "line": t.line, "said": t.said, "problems": t.problems}
                             for t in r.turns if t.problems]} for r in reports]
        Path(args.json).write_text(json.dumps(out, ensure_ascii=False, indent=2), "utf-8")
    return 0 if all(r.passed for r in reports) else 1


def add_dialogue_parser(subparsers) -> None:
    """Adds ``test conversations`` to the ``lingxi`` command line."""
    p = subparsers.add_parser("test", help="behaviour tests of the bot")
    tsub = p.add_subparsers(dest="test_suite", required=True)
    c = tsub.add_parser("conversations", help="replay YAML test conversations through the newest model "
                                              "(no PATH: the built-in demo's tests)")
    c.add_argument("path", nargs="?", help="a YAML file or a folder of them (default: the demo's tests/)")
    c.add_argument("--domain", help="domain folder whose flows/ to use (default: the PATH's domain or the demo)")
    c.add_argument("--models-dir", help="where trained bundles are (default: $LINGXI_HOME/models)")
    c.add_argument("--verbose", "-v", action="store_true", help="show every turn, not only failures")
    c.add_argument("--json", help="also write the results to this JSON file")
    c.set_defaults(func=cmd_test_conversations)


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(prog="lingxi test")
    parser.add_argument("--config")
    sub = parser.add_subparsers(dest="command", required=True)
    add_dialogue_parser(sub)
    args = parser.parse_args(["test", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())


def cmd_eval_bot(args) -> int:
    """``lingxi eval bot``: the benchmark through the engine ``lingxi serve`` builds from the same settings."""
    import msgspec

    from lingxi.datasets.bot_cases import demo_bot_path, load_cases
    from lingxi.datasets.domain import DomainError
    from lingxi.dialogue.engine import MessageIn
    from lingxi.dialogue.tenancy import tenant_scope
    from lingxi.evals.bot import run_bot_benchmark
    from lingxi.retrieval.tenants import KbTenants
    from lingxi.serving.conversations import build_dialogue_service
    from lingxi.serving.kb import kb_config_from_settings
    from lingxi.serving.loading import ModelHolder
    from lingxi.serving.settings import load_settings

    named = {"demo": demo_bot_path("dev"), "demo-dev": demo_bot_path("dev"), "demo-test": demo_bot_path("test")}
    folder = named.get(args.dataset, Path(args.dataset))
    try:
        cases = load_cases(folder)
    except DomainError as exc:
        for p in exc.problems:
            print(str(p), file=sys.stderr)
        return 2
    if args.limit:
        cases = cases[: args.limit]
    settings = load_settings(getattr(args, "config", None))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = args.store or f"sqlite:///{(out / 'dialogue.db').resolve()}"
    settings = msgspec.structs.replace(settings, dialogue_store=store)
    holder = ModelHolder(Path(args.models_dir) if args.models_dir else settings.models_path, settings.bot)
    loaded = holder.load_latest()
    if loaded is None:
        print(f"error: {holder.last_error} (train one with `lingxi train`)", file=sys.stderr)
        return 2
    tenants = KbTenants(kb_config_from_settings(settings), Path(settings.home))
    try:
        with tenant_scope("default"):
            tenants.get("default")
            svc = build_dialogue_service(settings, holder, kbs=lambda: tenants)
            arbitration = svc.arbitrations.ensure() if svc.arbitrations is not None else None
            engine = svc.engine

            def send(cid, turn, ts, payload):
                return engine.handle_message(cid, MessageIn(
                    text=None if payload or turn.payload else turn.say, payload=payload or turn.payload,
                    channel=turn.channel, language=turn.language, tags=turn.tags, timestamp=ts))

            def progress(done, total):
                if done % 50 == 0 or done == total:
                    print(f"  {done}/{total} cases", file=sys.stderr)

            setup = {"store": store.split("///")[0] if store.startswith("sqlite") else store.split("://")[0],
                     "knowledge_base": str(Path(settings.home) / "kb"),
                     "arbitration": msgspec.to_builtins(arbitration.report) if arbitration else None,
                     "thresholds": {"answer": arbitration.answer_threshold, "options": arbitration.option_threshold,
                                    "margin": arbitration.margin} if arbitration else None}
            own = {n: m.article for n, m in loaded.pipeline.intents.items() if m.article}
            results = run_bot_benchmark(cases, send, out, dataset=str(folder), setup=setup, own_article=own,
                                        model={"version": loaded.bundle.version, "bot": loaded.bundle.bot},
                                        report=not args.no_report, progress=progress,
                                        release=lambda cid, ts: engine.release(cid, by="benchmark", timestamp=ts,
                                                                               note="unexpected handoff"))
            svc.close()
    finally:
        tenants.close()
    r = results
    print(f"{r['cases']} cases: correct resolution {r['correct_resolution_rate']:.1%}, wrong answers "
          f"{r['wrong_answer_rate']:.1%}, clarify {r['clarify_rate']:.1%}, fallback {r['fallback_rate']:.1%}, "
          f"handoff {r['handoff_rate']:.1%}; turns passed {r['turn_pass_rate']:.1%} of {r['judged_turns']}")
    if r.get("out_of_scope_no_article_rate") is not None:
        print(f"out of scope given no article {r['out_of_scope_no_article_rate']:.1%}; English answered in English "
              f"{(r.get('english_answered_in_english_rate') or 0):.1%} of {r['english_cases']}; "
              f"empty replies {r['empty_replies']}")
    if r.get("routing_turns"):
        print(f"handoff routing on {r['routing_turns']} turns: group right {r['routing_group_accuracy']:.1%}, "
              f"priority right {(r.get('routing_priority_accuracy') or 0):.1%}")
    print(f"wrote {out / 'results.json'}")
    return 0


def add_bot_parser(subparsers) -> None:
    """Register ``bot`` under ``lingxi eval``."""
    p = subparsers.add_parser("bot", help="end-to-end customer-service benchmark on labelled conversations")
    p.add_argument("--dataset", default="demo",
                   help="folder of case files, or demo (= demo-dev) | demo-test (default: demo)")
    p.add_argument("--out", required=True, help="output folder for results.json, errors.jsonl, report.html")
    p.add_argument("--store", help="tracker store URL (default: a fresh SQLite file in --out)")
    p.add_argument("--models-dir", help="where trained bundles are (default: $LINGXI_HOME/models)")
    p.add_argument("--limit", type=int, help="only the first N cases")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.set_defaults(func=cmd_eval_bot)
