"""Load benchmark: ``/v1/parse`` and conversation messages under concurrent clients, with ``wrk``.

    python -m lingxi.evals.bench_load [--duration 20] [--clients 1,8,16] [--workers 1]
                                      [--cache-size 0] [--batch-wait-ms MS] [--wrk-threads N] [--out FILE]

Starts ``lingxi serve`` on loopback with the newest trained model in ``$LINGXI_HOME`` (trains the
demo domain if there is none) and drives it with `wrk <https://github.com/wg/wrk>`_ (Debian package
``wrk``): sustained requests per second, p50/p90/p99 and errors at each client count, for
``POST /v1/parse`` and ``POST /v1/conversations/{id}/messages`` (one conversation per client, a new
one after ``--turns`` messages or a handoff). Then it runs 16 clients with random think times so
that the offered load is half the 16-client throughput, and reports that p99.

Next to it, in the same run: the offline batch-encode throughput of the model's own encoders (batches
of ``encode_batch_max`` texts, this process, server stopped), measured ``--offline-repeats`` times
before and after the load after a short warm-up; the best of them is the baseline (on these shared
machines single 8 s runs varied by up to 20%, and the best is the conservative denominator). It uses
as many engine replicas in parallel threads as the server does (``--replicas``, default: one per
core, like ``encode_replicas``), so server and baseline get the same cores; the one-replica figure
is reported beside it. And the memory (RSS, PSS) of every worker process.

Why wrk: it is a C event loop that needs a few percent of one core at these rates, while a Python
generator (locust) needs far more per request; on a 2-core machine the generator shares the CPU with
the server, so the lighter one disturbs the measurement least.

The cache is off by default (``--cache-size 0``) so that every request is encoded, which is what
the offline baseline measures; ``--cache-size 4096`` shows repeated traffic.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx  # noqa: E402

from lingxi.evals.benchutil import free_port, start_server  # noqa: E402

_LUA = r"""
local bodies, counter, conv, turn = {}, 0, 0, 0
local MODE, TURNS, THINK_MS, RUN = "%(mode)s", %(turns)d, %(think_ms)f, "%(run)s"
setup = function(thread) thread:set("tid", tostring(math.random(1, 1e9))) end
init = function(args)
  for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
  math.randomseed(tonumber(tid))
  counter = math.random(1, #bodies)
end
request = function()
  counter = counter + 1
  local body = bodies[(counter %% #bodies) + 1]
  local path = "/v1/parse"
  if MODE == "messages" then
    if turn >= TURNS then conv, turn = conv + 1, 0 end
    turn = turn + 1
    path = string.format("/v1/conversations/lt-%%s-%%s-%%d/messages", RUN, tid, conv)
  end
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
end
if MODE == "messages" then
  response = function(status, headers, body)
    if body and (body:find('"decision":"handoff"', 1, true) or body:find('"decision":"leave_message"', 1, true)) then
      turn = TURNS  -- the bot went silent: the next message starts a new conversation
    end
  end
end
if THINK_MS > 0 then
  delay = function() return -math.log(1 - math.random()) * THINK_MS end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "mean_us": %%.1f}\n', summary.requests, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def offline_throughput(encoders: list, texts: list[str], batch: int, seconds: float) -> float:
    """Texts per second encoding ``texts`` in batches of ``batch`` for about ``seconds``, one thread per
    encoder replica (all started together, each over the whole text list)."""
    import threading

    for encoder in encoders:
        encoder.encode(texts[:batch], "query")
    counts = [0] * len(encoders)
    start = threading.Barrier(len(encoders) + 1)

    def run(k: int) -> None:
        start.wait()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for i in range(0, len(texts), batch):
                encoders[k].encode(texts[i:i + batch], "query")
                counts[k] += len(texts[i:i + batch])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(encoders))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def run_wrk(base: str, workdir: Path, mode: str, clients: int, seconds: float, turns: int,
            think_ms: float = 0.0, threads: int | None = None) -> dict:
    """One wrk run: ``clients`` connections served by ``threads`` wrk threads (default: one per core,
    at most one per connection)."""
    script = workdir / f"{mode}-{clients}-{int(think_ms)}.lua"
    script.write_text(_LUA % {"mode": mode, "turns": turns, "think_ms": think_ms, "run": uuid.uuid4().hex[:6],
                              "bodies": workdir / f"{mode}.jsonl"}, "utf-8")
    threads = min(clients, threads or os.cpu_count() or 1)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{seconds:.0f}s",
                          "--timeout", "30s", "-s", str(script), base], capture_output=True, text=True, check=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[len("RESULT "):])
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return {"clients": clients, "wrk_threads": threads, "think_ms": round(think_ms, 1), "requests": r["requests"],
            "rps": round(r["requests"] / (r["duration_us"] / 1e6), 2), "errors": errors,
            "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "max_ms": r["max_us"] / 1000, "mean_ms": round(r["mean_us"] / 1000, 3)}


def _memory(pid: int) -> dict:
    """RSS and PSS (shared pages split between the processes that map them) in MiB."""
    def kib(path: str, key: str) -> float:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
        return float("nan")

    return {"pid": pid, "rss_mib": round(kib(f"/proc/{pid}/status", "VmRSS") / 1024, 1),
            "pss_mib": round(kib(f"/proc/{pid}/smaps_rollup", "Pss") / 1024, 1)}


def worker_memory(server_pid: int, workers: int) -> list[dict]:
    if workers == 1:
        return [_memory(server_pid)]
    children: list[int] = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    # uvicorn's parent also starts a multiprocessing resource tracker: workers are the big ones
    mem = sorted((_memory(c) for c in children), key=lambda m: -m["rss_mib"])
    return mem[:workers]


def _scrape(base: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(("lingxi_encoder_batch_size_sum", "lingxi_encoder_batch_size_count",
                            "lingxi_embedding_cache_lookups_total")):
            name, value = line.rsplit(" ", 1)
            out[name] = out.get(name, 0.0) + float(value)
    return out


def _mean_batch(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Mean encoder batch size between two scrapes."""
    n = after.get("lingxi_encoder_batch_size_count", 0.0) - before.get("lingxi_encoder_batch_size_count", 0.0)
    total = after.get("lingxi_encoder_batch_size_sum", 0.0) - before.get("lingxi_encoder_batch_size_sum", 0.0)
    return round(total / n, 2) if n else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    ap.add_argument("--clients", default="1,8,16")
    ap.add_argument("--routes", default="parse,messages")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cache-size", type=int, default=0, help="embedding cache entries in the server (0: off)")
    ap.add_argument("--batch-max", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=None,
                    help="the server's encode_batch_wait_ms (default: the server's default)")
    ap.add_argument("--half-rate", type=float, default=0.0,
                    help="offered req/s of the half-load point (default: half the 16-client throughput); "
                         "fix it to compare two builds at the same load")
    ap.add_argument("--wrk-threads", type=int, default=0,
                    help="wrk threads (default: one per core; wrk's own advice, and on 2 cores one thread per "
                         "client took CPU from the server: see evals/RESULTS.md)")
    ap.add_argument("--replicas", type=int, default=0,
                    help="encoder engines in the server and the offline baseline (0: one per core, the server default)")
    ap.add_argument("--turns", type=int, default=6, help="messages per conversation")
    ap.add_argument("--offline-seconds", type=float, default=8.0)
    ap.add_argument("--offline-repeats", type=int, default=3,
                    help="offline measurements before and after the load (the best of all is the baseline)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian package), or `make bench-load`")
    if args.offline_repeats < 1:
        raise SystemExit("--offline-repeats must be at least 1")
    clients = [int(c) for c in args.clients.split(",")]
    routes = args.routes.split(",")

    from lingxi.datasets.domain import demo_domain_path, load_eval_set
    from lingxi.nlu.encoders import build_encoders
    from lingxi.serving.settings import load_settings
    from lingxi.training.bundle import latest_bundle_path, load_bundle

    settings = load_settings()
    if args.batch_wait_ms is None:
        args.batch_wait_ms = settings.encode_batch_wait_ms
    if latest_bundle_path(settings.models_path, settings.bot) is None:
        subprocess.run([sys.executable, "-m", "lingxi.serving.cli", "train", "--no-mlflow"], check=True)
    bundle = load_bundle(latest_bundle_path(settings.models_path, settings.bot))
    heldout, oos = load_eval_set(demo_domain_path())
    texts = [e.text for e in heldout] + list(oos)

    replicas = args.replicas or load_settings(workers=args.workers).encoder_replicas  # what the server picks
    engines = replicas * args.workers  # what the server runs in all; the baseline gets as many
    encoders = [build_encoders(bundle.encoders) for _ in range(engines)]
    encoder = encoders[0]
    offline_throughput(encoders, texts, args.batch_max, 2.0)  # warm-up: first-touch of weights, lazy inits
    one_replica = offline_throughput(encoders[:1], texts, args.batch_max, args.offline_seconds)
    offline = [offline_throughput(encoders, texts, args.batch_max, args.offline_seconds)
               for _ in range(args.offline_repeats)]
    print(f"offline batch-encode throughput ({encoder.name}, batches of {args.batch_max}, {engines} engine(s) "
          f"in parallel threads, as the server runs): {', '.join(f'{x:.1f}' for x in offline)} texts/s; "
          f"one engine: {one_replica:.1f} texts/s", flush=True)

    work = Path(tempfile.mkdtemp(prefix="lingxi-load-"))
    (work / "parse.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts),
                                      "utf-8")
    (work / "messages.jsonl").write_text(
        "".join(json.dumps({"text": t, "channel": "web"}, ensure_ascii=False) + "\n" for t in texts), "utf-8")
    (work / "lingxi.toml").write_text(  # conversations and events of the benchmark go to throw-away stores
        f'dialogue_store = "sqlite:///{work / "dialogue.db"}"\nevents_url = "sqlite:///{work / "events.db"}"\n',
        "utf-8")
    port = args.port or free_port()
    env = {**os.environ, "LINGXI_EMBEDDING_CACHE_SIZE": str(args.cache_size), "LINGXI_RATE_LIMIT_PER_S": "0",
           "LINGXI_ENCODE_BATCH_MAX": str(args.batch_max), "LINGXI_ENCODE_BATCH_WAIT_MS": str(args.batch_wait_ms),
           "LINGXI_ENCODE_REPLICAS": str(replicas)}
    proc, base = start_server(["--config", str(work / "lingxi.toml"), "serve", "--port", str(port),
                               "--workers", str(args.workers)], env, str(work / "server.log"))
    results: dict[str, list[dict]] = {}
    try:
        wrk_threads = args.wrk_threads or None
        run_wrk(base, work, "parse", 8, 3, args.turns, threads=wrk_threads)  # warm-up
        for route in routes:
            results[route] = []
            for c in clients:
                before = _scrape(base)
                r = run_wrk(base, work, route, c, args.duration, args.turns, threads=wrk_threads)
                r["mean_batch_size"] = _mean_batch(before, _scrape(base))
                results[route].append(r)
                print(f"{route:9} {c:>3} clients: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f}  "
                      f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}  mean batch {r['mean_batch_size']}",
                      flush=True)
        half = None
        if "parse" in results and 16 in clients:
            full = next(r for r in results["parse"] if r["clients"] == 16)
            single = next((r for r in results["parse"] if r["clients"] == 1), full)
            target = args.half_rate or full["rps"] / 2
            think = max(0.0, 16 / target * 1000 - single["p50_ms"])  # per-client cycle = latency + think
            before = _scrape(base)
            half = run_wrk(base, work, "parse", 16, args.duration, args.turns, think_ms=think, threads=wrk_threads)
            half["mean_batch_size"] = _mean_batch(before, _scrape(base))
            half["target_rps"] = round(target, 2)
            print(f"half load: offered ≈ {target:.1f} req/s, got {half['rps']:.1f}: p50 {half['p50_ms']:.2f}  "
                  f"p99 {half['p99_ms']:.2f} ms  errors {half['errors']}", flush=True)
        server_metrics = _scrape(base)
        cache = {k.split('"')[1]: v for k, v in server_metrics.items() if k.startswith("lingxi_embedding_cache")}
        memory = worker_memory(proc.pid, args.workers)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    after = [offline_throughput(encoders, texts, args.batch_max, args.offline_seconds)
             for _ in range(args.offline_repeats)]
    offline += after
    baseline = max(offline)  # the best of every run: the conservative denominator for the ratio
    print(f"offline batch-encode throughput after the load: {', '.join(f'{x:.1f}' for x in after)} texts/s "
          f"(baseline: the best, {baseline:.1f})")

    result = {
        "model": f"{bundle.bot}@{bundle.version}", "encoder": encoder.name,
        "workers": args.workers, "encoder_replicas": replicas, "offline_one_replica": round(one_replica, 1),
        "cache_size": args.cache_size, "batch_max": args.batch_max,
        "batch_wait_ms": args.batch_wait_ms, "duration_s": args.duration,
        "offline_texts_per_s": [round(x, 1) for x in offline], "offline_baseline": round(baseline, 1),
        "load": results, "half_load": half, "memory_per_worker": memory,
        "cache_lookups": cache,
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if "parse" in results and 16 in clients:
        full = next(r for r in results["parse"] if r["clients"] == 16)
        single = next((r for r in results["parse"] if r["clients"] == 1), None)
        result["throughput_ratio_16"] = round(full["rps"] / baseline, 3)
        print(f"16 clients /v1/parse: {full['rps']:.1f} req/s = {result['throughput_ratio_16']:.2f} × offline "
              f"(target ≥ 0.8), errors {full['errors']}")
        if single and half:
            result["half_load_p99_over_single_p50"] = round(half["p99_ms"] / single["p50_ms"], 2)
            print(f"half-load p99 {half['p99_ms']:.1f} ms = {result['half_load_p99_over_single_p50']:.2f} × "
                  f"single-client p50 {single['p50_ms']:.1f} ms (target ≤ 3)")
    for m in memory:
        print(f"worker {m['pid']}: RSS {m['rss_mib']} MiB, PSS {m['pss_mib']} MiB")
    print(f"embedding cache lookups {cache or '(cache off)'}; load avg {result['load_avg_1m']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False), "utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
