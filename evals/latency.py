"""``lingxi eval latency``: how long one message takes through the served NLU pipeline, stage by stage.

The newest model of the configured bot (trained from the domain first if there is none) parses
the domain's held-out and out-of-scope utterances one at a time in this process, as a server
worker does: per message wall time, the pipeline's own per-stage timings (rules, encode, classify,
entities), p50/p95/p99 and single-thread throughput, plus batch-encoding throughput (what offline
jobs get). ``--http`` adds the HTTP round trip of ``lingxi serve`` (:mod:`lingxi.evals.bench_parse`).
The machine's CPU count and load average are recorded: timings on shared cores are noisy.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import plots
from .benchutil import latency_summary
from .report import latency_page, write_report
from .runs import ERRORS, PREDICTIONS, REPORT, provenance, write_figures, write_jsonl, write_results

STAGES = ("rules", "encode", "classify", "entities")


def run_latency_eval(out_dir: str | Path, domain: str | None = None, models_dir: str | None = None,
                     config: str | None = None, requests: int = 400, batch_size: int = 32, warmup: int = 20,
                     http: bool = False, report: bool = True, tracking_uri: str | None = None) -> dict:
    from lingxi.datasets.domain import demo_domain_path, load_eval_set
    from lingxi.nlu.parse import ParseContext
    from lingxi.serving.dialogue_cli import load_or_train_model

    if requests < 1 or batch_size < 1:
        raise ValueError("--requests and --batch-size must be positive")
    domain_dir = Path(domain) if domain else demo_domain_path()
    heldout, oos = load_eval_set(domain_dir)
    texts = [e.text for e in heldout] + list(oos)
    if not texts:
        raise ValueError(f"{domain_dir}/eval: no utterances to time (eval/heldout.yml, eval/oos.yml)")
    loaded = load_or_train_model(domain_dir, models_dir, config)
    pipeline, bundle = loaded.pipeline, loaded.bundle
    load_avg = round(os.getloadavg()[0], 2)
    stream = (texts * (requests // len(texts) + 1))[:requests]
    for t in stream[:warmup]:
        pipeline.parse(t, ParseContext())
    total_ms: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    rows: list[dict] = []
    started = time.perf_counter()
    for i, text in enumerate(stream):
        t0 = time.perf_counter()
        result = pipeline.parse(text, ParseContext())
        ms = (time.perf_counter() - t0) * 1000
        total_ms.append(ms)
        for s in STAGES:
            stages[s].append(float(result.timing_ms.get(s, 0.0)))
        rows.append({"id": i, "text": text, "ms": round(ms, 3), **{s: result.timing_ms.get(s) for s in STAGES}})
    elapsed = time.perf_counter() - started
    normalized = [pipeline.normalizer(t) for t in texts]
    batches = [normalized[i:i + batch_size] for i in range(0, len(normalized), batch_size)]
    t0 = time.perf_counter()
    for batch in batches:
        pipeline.encoder.encode(batch, "query")
    batch_s = time.perf_counter() - t0
    summary = latency_summary(total_ms)
    arr = np.asarray(total_ms)
    results = {
        **provenance("latency"),
        "dataset": f"{domain_dir.name} eval/ utterances",
        "source": str(domain_dir),
        "dataset_fingerprint": hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:16],
        "split": "eval/ held-out + out-of-scope utterances, cycled to --requests",
        "seed": None,
        "model": {"version": bundle.version, "bot": bundle.bot, "bundle": f"{bundle.bot}@{bundle.version}",
                  "encoder": getattr(pipeline.encoder, "name", None)},
        "n": len(total_ms),
        "p50_ms": summary["p50_ms"],
        "p95_ms": round(float(np.percentile(arr, 95)), 3),
        "p99_ms": summary["p99_ms"],
        "mean_ms": summary["mean_ms"],
        "throughput_per_s": round(len(total_ms) / elapsed, 1),
        "batch_size": batch_size,
        "batch_throughput_per_s": round(len(normalized) / batch_s, 1) if batch_s > 0 else None,
        "stages": {s: {"p50_ms": round(float(np.median(v)), 3), "p99_ms": round(float(np.percentile(v, 99)), 3)}
                   for s, v in stages.items()},
        "cpu_count": os.cpu_count(),
        "load_avg_1m": load_avg,
        "files": {"errors": ERRORS, "predictions": PREDICTIONS, "report": REPORT if report else None},
    }
    if http:
        from .bench_parse import main as bench_parse

        http_out = Path(out_dir) / "http.json"
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        bench_parse(["--requests", str(requests), "--out", str(http_out)])
        results["http"] = json.loads(http_out.read_text("utf-8"))
    out = Path(out_dir)
    write_results(out, results)
    write_jsonl(out / ERRORS, [])  # latency has no wrong answers; the file exists so every run looks alike
    write_jsonl(out / PREDICTIONS, rows)
    if report:
        figures = {"latency": plots.latency_png(total_ms, {s: v["p50_ms"] for s, v in results["stages"].items()})}
        results["files"]["figures"] = write_figures(out, figures)
        write_report(out, latency_page(results, figures))
        write_results(out, results)
    if tracking_uri:
        from .tracking import log_eval_run

        log_eval_run(out, results, tracking_uri)
    return results


def cmd_eval_latency(args) -> int:
    from lingxi.datasets.domain import DomainError
    from lingxi.serving.dialogue_cli import SetupError

    from .tracking import tracking_uri_from

    try:
        r = run_latency_eval(args.out, args.domain, args.models_dir, getattr(args, "config", None), args.requests,
                             args.batch_size, http=args.http, report=not args.no_report,
                             tracking_uri=tracking_uri_from(args))
    except SetupError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    except DomainError as exc:
        for p in exc.problems:
            print(str(p), file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{r['n']} messages: p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
          f"{r['throughput_per_s']:.0f}/s on one thread; batch encode {r['batch_throughput_per_s']:.0f}/s "
          f"(load avg {r['load_avg_1m']}, model {r['model']['bundle']})")
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def add_latency_parser(subparsers) -> None:
    """Register ``latency`` under ``lingxi eval``."""
    from .tracking import add_tracking_options

    p = subparsers.add_parser("latency", help="per-message parse latency (p50/p95/p99), stages, throughput")
    p.add_argument("--domain", help="domain whose eval/ utterances to time (default: the built-in demo)")
    p.add_argument("--models-dir", help="where trained bundles are (default: $LINGXI_HOME/models)")
    p.add_argument("--out", required=True, help="output folder for results.json and report.html")
    p.add_argument("--requests", type=int, default=400, help="messages to time (default 400)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for the batch-encoding figure")
    p.add_argument("--http", action="store_true", help="also time /v1/parse over HTTP (starts `lingxi serve`)")
    p.add_argument("--no-report", action="store_true", help="skip report.html and the figures")
    add_tracking_options(p)
    p.set_defaults(func=cmd_eval_latency)
