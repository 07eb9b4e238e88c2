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


def cmd_test_conversations(args) -> int:
    from lingxi.dialogue.testing import format_report, run_tests

    try:
        run = prepare_conversation_run(args.path, args.domain, args.models_dir, getattr(args, "config", None))
    except SetupError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    tests, spec, loaded, tests_path = run.tests, run.spec, run.loaded, run.tests_path
    reports = run_tests(tests, loaded.pipeline, spec)
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
