"""Benchmark: ``POST /v1/conversations/{id}/messages`` next to ``POST /v1/parse``, same server, same run.

    python -m lingxi.evals.bench_messages [--requests 400] [--rounds 4] [--turns 6] [--out FILE]

Starts a server subprocess on loopback (the app with the conversation routes, default SQLite
tracker store under ``$LINGXI_HOME``, the demo help centre consulted in every turn, the newest
trained demo model — trained first if missing), then with one keep-alive client sends the demo's
held-out intent, help-article and out-of-scope questions alternately, in rounds, to
``/v1/parse`` and as conversation messages (a conversation lasts ``--turns`` messages, or ends
early at a handoff so that no measured message hits a silent, parse-free conversation). Prints
p50 / p99 of both and the ratio of medians; the target is message p50 ≤ 1.3 × parse p50 (the
knowledge search and the arbitration should add little to the parse).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx  # noqa: E402

from lingxi.evals.benchutil import free_port, latency_summary  # noqa: E402


def serve(port: int) -> None:
    """The server process: the app with conversation routes (whether or not create_app has them yet)."""
    import logging

    import uvicorn

    from lingxi.serving.conversations import app_with_dialogue
    from lingxi.serving.settings import load_settings

    settings = load_settings(port=port)
    logging.basicConfig(level="WARNING")
    uvicorn.run(app_with_dialogue(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--turns", type=int, default=6, help="messages per conversation")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--with-cache", action="store_true",
                    help="keep the server's embedding cache (off by default: each text is sent to both paths, "
                         "so the second would be answered from the first's cached embedding)")
    ap.add_argument("--out", help="write the figures to this JSON file")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0

    from lingxi.datasets.domain import demo_domain_path, load_calibration_set
    from lingxi.serving.settings import load_settings
    from lingxi.training.bundle import latest_bundle_path

    settings = load_settings()
    if latest_bundle_path(settings.models_path, settings.bot) is None:
        subprocess.run([sys.executable, "-m", "lingxi.serving.cli", "train", "--no-mlflow"], check=True)
    held = load_calibration_set(demo_domain_path())
    texts = [e.text for e in held.examples] + [q.text for q in held.article_questions] + list(held.out_of_scope)
    random.Random(0).shuffle(texts)
    texts = (texts * (args.requests // len(texts) + 1))[: args.requests]

    port = args.port or free_port()
    server = subprocess.Popen([sys.executable, "-m", "lingxi.evals.bench_messages", "--serve", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, **({} if args.with_cache else {"LINGXI_EMBEDDING_CACHE_SIZE": "0"})})
    run = uuid.uuid4().hex[:8]
    decisions: Counter[str] = Counter()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(900):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None:
                    raise SystemExit("server exited: " + server.stderr.read().decode()[-3000:])
                time.sleep(0.2)
            else:
                raise SystemExit("server did not become ready")
            conv = {"n": 0, "turn": 0}

            def message(text: str) -> tuple[float, dict]:
                cid = f"bench-{run}-{conv['n']}"
                t0 = time.perf_counter()
                resp = client.post(f"/v1/conversations/{cid}/messages", json={"text": text, "channel": "web"})
                elapsed = (time.perf_counter() - t0) * 1000
                if resp.status_code != 200:
                    raise SystemExit(f"messages answered {resp.status_code}: {resp.text}")
                body = resp.json()
                conv["turn"] += 1
                if conv["turn"] >= args.turns or body["decision"] in ("handoff", "leave_message"):
                    conv["n"] += 1
                    conv["turn"] = 0
                return elapsed, body

            for t in texts[:20]:  # warm both paths
                client.post("/v1/parse", json={"text": t})
                message(t)
            parse_ms: list[float] = []
            msg_ms: list[float] = []
            per_round = max(1, len(texts) // args.rounds)
            for r in range(args.rounds):
                chunk = texts[r * per_round:(r + 1) * per_round]
                for t in chunk:
                    t0 = time.perf_counter()
                    resp = client.post("/v1/parse", json={"text": t})
                    parse_ms.append((time.perf_counter() - t0) * 1000)
                    if resp.status_code != 200:
                        raise SystemExit(f"/v1/parse answered {resp.status_code}: {resp.text}")
                for t in chunk:
                    elapsed, body = message(t)
                    msg_ms.append(elapsed)
                    decisions[body["decision"]] += 1
    finally:
        server.terminate()
        server.wait(timeout=30)
    p, m = latency_summary(parse_ms), latency_summary(msg_ms)
    result = {
        "http_parse": p,
        "http_messages": m,
        "p50_ratio": round(m["p50_ms"] / p["p50_ms"], 3),
        "target_p50_ratio": 1.3,
        "decisions": dict(decisions),
        "turns_per_conversation": args.turns,
        "embedding_cache": bool(args.with_cache),
        "tracker_store": getattr(settings, "dialogue_store", None) or os.environ.get("LINGXI_DIALOGUE_STORE")
        or "sqlite (default)",
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(f"{'':22}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'n':>6}")
    for name, s in (("HTTP /v1/parse", p), ("HTTP .../messages", m)):
        print(f"{name:22}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['mean_ms']:>9.2f}{s['n']:>6}")
    print(f"p50 ratio messages/parse: {result['p50_ratio']:.3f} (target ≤ 1.3); decisions {dict(decisions)}; "
          f"load avg {result['load_avg_1m']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
