"""Benchmark: ``/v1/parse`` over real HTTP (one client) next to the bare encoder call, same texts, same run.

    python -m lingxi.evals.bench_parse [--requests 400] [--port 8765]

Starts ``lingxi serve`` as a subprocess on loopback with the newest trained model in
``$LINGXI_HOME`` (trains the demo domain first if there is none), sends the demo's held-out
utterances one at a time with a keep-alive client, then times the bare encoder (the same
encoders the model uses, one thread) on the same texts in this process, interleaved in rounds
so that background load hits both alike. Prints median and p99 of each and their ratio; writes
the figures as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx  # noqa: E402

from lingxi.evals.benchutil import free_port, latency_summary  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=4, help="alternate server/encoder measurement this many times")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", help="write the figures to this JSON file")
    args = ap.parse_args(argv)

    from lingxi.datasets.domain import demo_domain_path, load_eval_set
    from lingxi.nlu.encoders import build_encoders
    from lingxi.serving.settings import load_settings
    from lingxi.training.bundle import latest_bundle_path, load_bundle

    settings = load_settings()
    if latest_bundle_path(settings.models_path, settings.bot) is None:
        subprocess.run([sys.executable, "-m", "lingxi.serving.cli", "train"], check=True)
    bundle = load_bundle(latest_bundle_path(settings.models_path, settings.bot))
    heldout, oos = load_eval_set(demo_domain_path())
    texts = [e.text for e in heldout] + list(oos)
    texts = (texts * (args.requests // len(texts) + 1))[: args.requests]

    port = args.port or free_port()
    server = subprocess.Popen([sys.executable, "-m", "lingxi.serving.cli", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(600):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            else:
                raise SystemExit("server did not become ready: " + server.stderr.read().decode()[-2000:])
            encoder = build_encoders(bundle.encoders)
            for t in texts[:20]:  # warm both paths
                client.post("/v1/parse", json={"text": t})
                encoder.encode([t], "query")
            http_ms: list[float] = []
            enc_ms: list[float] = []
            per_round = max(1, len(texts) // args.rounds)
            for r in range(args.rounds):
                chunk = texts[r * per_round:(r + 1) * per_round]
                for t in chunk:
                    t0 = time.perf_counter()
                    resp = client.post("/v1/parse", json={"text": t})
                    http_ms.append((time.perf_counter() - t0) * 1000)
                    if resp.status_code != 200:
                        raise SystemExit(f"/v1/parse answered {resp.status_code}: {resp.text}")
                for t in chunk:
                    t0 = time.perf_counter()
                    encoder.encode([t], "query")
                    enc_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        server.terminate()
        server.wait(timeout=30)
    parse_s, enc_s = latency_summary(http_ms), latency_summary(enc_ms)
    result = {
        "model": f"{bundle.bot}@{bundle.version}",
        "encoder": encoder.name,
        "http_parse": parse_s,
        "bare_encoder": enc_s,
        "p50_ratio": round(parse_s["p50_ms"] / enc_s["p50_ms"], 3),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(f"{'':16}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'n':>6}")
    for name, s in (("HTTP /v1/parse", parse_s), ("bare encoder", enc_s)):
        print(f"{name:16}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['mean_ms']:>9.2f}{s['n']:>6}")
    print(f"p50 ratio parse/encoder: {result['p50_ratio']:.3f}  (load avg {result['load_avg_1m']})")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
