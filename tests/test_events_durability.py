"""Crash test: the real server is SIGKILLed while a client streams 10,000 events with retries.

Afterwards every acknowledged event is stored exactly once: acknowledged means committed (an
answer is sent only after the commit), and a retried batch comes back as duplicates.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

TOTAL = 10_000
BATCH = 100
SENDERS = 4
KILL_AFTER = (3_000, 6_500)  # acknowledged events at which the server is killed (plus a random delay)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"
        self.log = None

    def start(self) -> None:
        config = self.home / "lingxi.toml"
        config.write_text("kb_seed_demo = false\nlog_level = \"WARNING\"\n")
        env = {**os.environ, "LINGXI_HOME": str(self.home)}
        lingxi = Path(sys.executable).parent / "lingxi"
        if self.log is None:
            self.log = (self.home / "server.log").open("ab")  # closed in stop()
        self.proc = subprocess.Popen([str(lingxi), "--config", str(config), "serve", "--port", str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.home / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.log is not None:
            self.log.close()


def _event(i: int) -> dict:
    kind = ("impression", "click", "dwell", "vote", "csat")[i % 5]
    payload = {"impression": {"article_id": f"kb-{i % 37}", "rank": 1 + i % 5},
               "click": {"article_id": f"kb-{i % 37}", "rank": 1},
               "dwell": {"article_id": f"kb-{i % 37}", "dwell_ms": 1000 * (i % 60)},
               "vote": {"article_id": f"kb-{i % 37}", "resolved": i % 3 != 0},
               "csat": {"stars": 1 + i % 5, "text": "回答很及时"}}[kind]
    return {"event_id": f"ev-{i:05d}", "type": kind, "conversation_id": f"c-{i // 20}", "channel": "web",
            "payload": payload}


def test_sigkill_mid_stream_loses_and_duplicates_nothing(tmp_path):
    server = Server(tmp_path, _free_port())
    server.start()
    batches = [[_event(i) for i in range(start, min(start + BATCH, TOTAL))] for start in range(0, TOTAL, BATCH)]
    acknowledged: set[str] = set()
    statuses: dict[str, int] = {"accepted": 0, "duplicate": 0, "rejected": 0}
    lock = threading.Lock()
    retries = [0]
    next_batch = iter(range(len(batches)))

    def sender() -> None:
        with httpx.Client(timeout=5) as client:
            while True:
                with lock:
                    index = next(next_batch, None)
                if index is None:
                    return
                while True:  # retry until the server acknowledges this batch
                    try:
                        r = client.post(f"{server.url}/v1/events", json={"events": batches[index]})
                        r.raise_for_status()
                        break
                    except httpx.HTTPError:
                        with lock:
                            retries[0] += 1
                        time.sleep(0.05)
                with lock:
                    for res in r.json()["results"]:
                        statuses[res["status"]] += 1
                        if res["status"] in ("accepted", "duplicate"):
                            acknowledged.add(res["event_id"])

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(SENDERS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    db = create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        for threshold in KILL_AFTER:
            while len(acknowledged) < threshold:
                assert any(t.is_alive() for t in threads)
                time.sleep(0.002)
            time.sleep(random.uniform(0, 0.01))
            server.kill()  # requests are in flight: some batches are committed but never answered
            with lock:
                before_restart = set(acknowledged)
            with db.connect() as conn:
                stored = {r[0] for r in conn.execute(text("SELECT event_id FROM events"))}
            assert before_restart <= stored, f"{len(before_restart - stored)} acknowledged events were lost"
            server.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    finally:
        server.stop()
    with db.connect() as conn:
        rows = conn.execute(text("SELECT event_id, COUNT(*) FROM events GROUP BY event_id")).all()
    db.dispose()
    counts = dict(rows)
    assert len(acknowledged) == TOTAL and statuses["rejected"] == 0
    assert set(counts) == acknowledged and set(counts.values()) == {1}
    assert retries[0] > 0  # the kills did hit requests in flight
    print(f"\n{TOTAL} events, {len(batches)} batches, {len(KILL_AFTER)} SIGKILLs, {retries[0]} failed requests retried, "
          f"{statuses['duplicate']} events answered as duplicates on retry, {time.monotonic() - t0:.1f} s")
