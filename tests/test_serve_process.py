"""A real ``lingxi serve`` subprocess: SIGTERM drains requests in flight; ``--workers 2`` shares the load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from lingxi.evals.benchutil import free_port

# ≈ 600 characters: e5 needs a few hundred milliseconds for it, long enough to be caught in flight
LONG_TEXT = "我的订单已经付款三天了还没有发货，客服一直不回复，请问到底什么时候能发货？" * 16


def _start(home: Path, tmp: Path, workers: int) -> tuple[subprocess.Popen, str, Path]:
    config = tmp / "lingxi.toml"
    config.write_text(  # an empty KB and in-memory conversations: quick to start, nothing shared
        f'kb_url = "sqlite:///{tmp / "kb.db"}"\nkb_index_dir = "{tmp / "kb-index"}"\nkb_seed_demo = false\n'
        'dialogue_store = "memory"\n', "utf-8")
    port = free_port()
    env = {**os.environ, "LINGXI_HOME": str(home), "LINGXI_ENCODE_BATCH_MAX": "1",  # one text per batch:
           "LINGXI_EMBEDDING_CACHE_SIZE": "0", "LINGXI_RATE_LIMIT_PER_S": "0"}  # requests finish one by one
    log = tmp / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "lingxi.serving.cli", "--config", str(config), "serve",
                             "--port", str(port), "--workers", str(workers)],
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base, log
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail("server did not become ready: " + log.read_text()[-3000:])


def _in_flight(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("lingxi_http_requests_in_flight"))


def _drain_on_sigterm(proc: subprocess.Popen, base: str, log: Path, refuses_new: bool) -> list[dict]:
    """Four slow requests in flight, then SIGTERM: all four must get their 200; returns the JSON log.

    One worker closes its listening socket at once. With several, uvicorn's parent holds the socket
    (it forwards SIGTERM within half a second and closes it when the workers are done), so a new
    connection is not refused at once there — it is just never served by a draining worker.
    """
    results: list[tuple[int, float]] = []

    def call() -> None:
        with httpx.Client(timeout=60) as c:
            r = c.post(f"{base}/v1/parse", json={"text": LONG_TEXT})
            results.append((r.status_code, time.monotonic()))

    clients = [threading.Thread(target=call) for _ in range(4)]
    for t in clients:
        t.start()
    deadline = time.monotonic() + 20
    while _in_flight(base) < 5 and time.monotonic() < deadline:  # all four, plus the scrape itself
        time.sleep(0.01)
    signalled = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    if refuses_new:
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # a draining server takes no new connections
            httpx.post(f"{base}/v1/parse", json={"text": "你好"}, timeout=5)
    for t in clients:
        t.join(timeout=60)
    # uvicorn re-raises the signal once it has shut down cleanly, so "killed by SIGTERM" is success
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert [status for status, _ in results] == [200] * 4, log.read_text()[-3000:]
    assert any(done > signalled for _, done in results), "nothing was in flight when SIGTERM arrived"
    return [json.loads(line) for line in log.read_text("utf-8").splitlines() if line.startswith("{")]


def test_sigterm_lets_requests_in_flight_finish(trained_demo, lingxi_home, tmp_path):
    proc, base, log = _start(lingxi_home, tmp_path, workers=1)
    try:
        lines = _drain_on_sigterm(proc, base, log, refuses_new=True)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert any(x["logger"] == "lingxi.access" and x.get("request_id") for x in lines)  # JSON logs


def test_two_workers_share_one_metrics_view_and_drain_together(trained_demo, lingxi_home, tmp_path):
    """``--workers 2``: a scrape sums both workers (every request counted once); SIGTERM drains both."""
    proc, base, log = _start(lingxi_home, tmp_path, workers=2)
    try:
        n = 12
        for i in range(n):
            with httpx.Client(timeout=30) as c:  # a new connection each time: both workers get some
                assert c.post(f"{base}/v1/parse", json={"text": f"发货了吗 {i}"}).status_code == 200
        text = httpx.get(f"{base}/metrics", timeout=5).text
        count = sum(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith("lingxi_http_request_duration_seconds_count") and '"/v1/parse"' in line)
        assert count == n
        assert 'lingxi_model_info{bot="demo-shop"' in text
        lines = _drain_on_sigterm(proc, base, log, refuses_new=False)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    started = {x["msg"] for x in lines if x["msg"].startswith("Started server process")}
    assert len(started) == 2  # one server per worker process
