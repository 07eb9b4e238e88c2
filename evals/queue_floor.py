"""The latency floor of ideal queueing for the load benchmark's half-load point.

    python -m lingxi.evals.queue_floor [--rates 50,60,67,70] [--servers 2] [--overhead-ms 2.5] [--out FILE]

Why: ``bench_load`` reports the half-load p99 ÷ the single-client p50 (issue 8 asks for ≤ 3). Part of
that ratio is plain queueing, which no implementation can remove: with Poisson arrivals some messages
find both engines busy. This script measures what one message costs the served model's encoders
(each demo text encoded alone, in this process, one engine thread, as the server's engines run),
then simulates ``--servers`` FIFO engines fed by Poisson arrivals at each rate, each message taking
its own text's measured time, plus a fixed ``--overhead-ms`` that does not queue (HTTP and the
pipeline on the event loop). The p99 ÷ p50 it prints is what a server with no contention at all
(no shared cores, no GIL, no load generator on the same machine) would show; the gap between it and
``bench_load``'s figure is contention.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def service_times(encoder, texts: list[str], rounds: int = 2) -> np.ndarray:
    """Seconds to encode each text alone (the fastest of ``rounds`` tries, after a warm-up)."""
    for t in texts[:20]:
        encoder.encode([t], "query")
    best = np.full(len(texts), np.inf)
    for _ in range(rounds):
        for i, t in enumerate(texts):
            t0 = time.perf_counter()
            encoder.encode([t], "query")
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def simulate_fifo(service: np.ndarray, rate: float, servers: int, n: int = 200_000, seed: int = 0) -> np.ndarray:
    """Response times (s) of ``n`` Poisson arrivals at ``rate``/s to ``servers`` FIFO engines, each
    message's service time drawn from ``service``."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    costs = rng.choice(service, n)
    free = np.zeros(servers)
    out = np.empty(n)
    for i in range(n):
        k = int(np.argmin(free))
        start = max(arrivals[i], free[k])
        free[k] = start + costs[i]
        out[i] = free[k] - arrivals[i]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="50,60,67,70", help="arrivals per second to simulate")
    ap.add_argument("--servers", type=int, default=2, help="encoder engines (the server's default on 2 cores)")
    ap.add_argument("--overhead-ms", type=float, default=2.5,
                    help="per-request time outside the encoder that does not queue (HTTP, pipeline)")
    ap.add_argument("--out", help="write the figures to this JSON file")
    args = ap.parse_args(argv)

    from lingxi.datasets.domain import demo_domain_path, load_eval_set
    from lingxi.nlu.encoders import build_encoders
    from lingxi.serving.settings import load_settings
    from lingxi.training.bundle import latest_bundle_path, load_bundle

    settings = load_settings()
    path = latest_bundle_path(settings.models_path, settings.bot)
    if path is None:
        raise SystemExit(f"no trained model in {settings.models_path}: run `lingxi train` first")
    bundle = load_bundle(path)
    heldout, oos = load_eval_set(demo_domain_path())
    texts = [e.text for e in heldout] + list(oos)
    service = service_times(build_encoders(bundle.encoders), texts)
    overhead = args.overhead_ms / 1000.0
    alone = {"p50": round(1000 * float(np.percentile(service, 50)), 2),
             "p99": round(1000 * float(np.percentile(service, 99)), 2), "mean": round(1000 * float(service.mean()), 2)}
    single_p50 = alone["p50"] / 1000.0 + overhead
    print(f"one message alone ({len(texts)} demo texts): p50 {alone['p50']:.1f} ms, p99 {alone['p99']:.1f} ms, "
          f"mean {alone['mean']:.1f} ms; + {args.overhead_ms} ms outside the encoder")
    rows = []
    for rate in (float(r) for r in args.rates.split(",")):
        resp = simulate_fifo(service, rate, args.servers) + overhead
        p99 = float(np.percentile(resp, 99))
        rows.append({"rate": rate, "utilisation": round(rate * float(service.mean()) / args.servers, 3),
                     "p50_ms": round(1000 * float(np.percentile(resp, 50)), 2), "p99_ms": round(1000 * p99, 2),
                     "p99_over_single_p50": round(p99 / single_p50, 2)})
        r = rows[-1]
        print(f"{rate:6.1f} msg/s (utilisation {r['utilisation']:.2f}): p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms = {r['p99_over_single_p50']:.2f} × the single-message p50")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"model": f"{bundle.bot}@{bundle.version}", "servers": args.servers,
                       "overhead_ms": args.overhead_ms, "single_p50_ms": round(1000 * single_p50, 2),
                       "service_ms": alone,
                       "rates": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
