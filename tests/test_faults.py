"""Backend outages: Redis or PostgreSQL goes away mid-run and comes back; the service never restarts.

* Redis: the test starts its **own** ``redis-server`` on a free port (other tests use the shared
  one), holds conversations in it, shuts it down, and checks that ``/v1/parse`` keeps answering,
  conversation calls answer 503 ``store_unavailable`` quickly, and conversations work again once
  the same server is started again.
* PostgreSQL: a fresh database on ``LINGXI_TEST_POSTGRES_URL``'s server, reached through a small
  TCP relay owned by the test; closing the relay cuts every connection exactly like a database
  going down, reopening it is the database coming back.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from urllib.parse import urlsplit

import pytest
from litestar.testing import TestClient

from lingxi.serving.app import create_app
from lingxi.serving.keys import KeyStore
from lingxi.serving.loading import ModelHolder
from lingxi.serving.settings import ApiKey, Settings

KEY = {"X-API-Key": "faults-admin-key"}
MORNING = "2026-11-24T10:00:00+08:00"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def holder(trained_demo, demo_encoder, lingxi_home):
    h = ModelHolder(lingxi_home / "models", "demo-shop")
    h._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder
    assert h.load_latest() is not None
    return h


# ---------------------------------------------------------------------- Redis


class OwnRedis:
    """A throw-away redis-server on a free port (no persistence)."""

    def __init__(self, workdir) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                              text=True).stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_down_mid_run_503s_conversations_only_and_recovers_by_itself(holder, tmp_path):
    redis = OwnRedis(tmp_path)
    redis.start()
    settings = Settings(home=str(tmp_path), api_keys=[ApiKey(name="ops", role="admin", key=KEY["X-API-Key"])],
                        kb_seed_demo=False, dialogue_store=redis.url, rate_limit_url=redis.url,
                        backend_timeout_s=1.0)
    try:
        with TestClient(create_app(settings, holder)) as c:
            def message(cid: str, text: str = "我要退款"):
                return c.post(f"/v1/conversations/{cid}/messages", json={"text": text, "timestamp": MORNING},
                              headers=KEY)

            assert message("r-1").status_code == 200
            assert message("r-1", "订单号是20231124001").json()["created"] is False

            redis.stop()
            started = time.monotonic()
            for r in (message("r-1"), message("r-2"),
                      c.get("/v1/conversations/r-1", headers=KEY),
                      c.post("/v1/conversations", json={"conversation_id": "r-3"}, headers=KEY)):
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "store_unavailable" and r.headers["retry-after"]
            assert time.monotonic() - started < 12  # four calls, each bounded by the 1 s timeouts
            parsed = c.post("/v1/parse", json={"text": "我要退款"}, headers=KEY)  # limiter falls back too
            assert parsed.status_code == 200 and parsed.json()["intent"]["name"] == "refund_apply"
            assert c.get("/healthz").status_code == 200
            assert c.post("/v1/kb/search", json={"query": "退款"}, headers=KEY).status_code == 200

            redis.start()  # the same server comes back (empty: it kept nothing on disk)
            deadline = time.monotonic() + 10
            r = message("r-4")
            while r.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.2)
                r = message("r-4")
            assert r.status_code == 200 and r.json()["created"] is True
            assert message("r-4", "订单号是20231124001").json()["created"] is False
            assert c.get("/v1/conversations/r-4", headers=KEY).json()["event_count"] > 0
    finally:
        redis.stop()


# ---------------------------------------------------------------------- PostgreSQL


class Relay:
    """A TCP relay to PostgreSQL; ``close()`` drops the listener and every open connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_postgres_down_mid_run_503s_what_needs_it_and_recovers_by_itself(holder, tmp_path, fresh_pg_database):
    name, direct = fresh_pg_database
    parts = urlsplit(direct)
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5432))
    relay.open()
    user = f"{parts.username}@" if parts.username else ""
    url = f"{parts.scheme}://{user}127.0.0.1:{relay.port}/{name}"
    db_key = KeyStore(url).create_schema().create("widget", "default", "admin")[1]
    settings = Settings(home=str(tmp_path), kb_seed_demo=False, dialogue_store=url, keys_url=url, kb_url=url,
                        backend_timeout_s=1.0, rate_limit_per_s=0)
    headers = {"X-API-Key": db_key}
    try:
        with TestClient(create_app(settings, holder)) as c:
            def message(cid: str):
                return c.post(f"/v1/conversations/{cid}/messages", json={"text": "我要退款", "timestamp": MORNING},
                              headers=headers)

            assert message("p-1").status_code == 200
            made = c.post("/v1/kb/articles", json={"title": "发票怎么开", "body": "在订单详情申请。"}, headers=headers)
            assert made.status_code == 201, made.text

            relay.close()  # PostgreSQL is gone: conversations, KB writes and key admin need it
            started = time.monotonic()
            for r in (message("p-1"), c.get(f"/v1/kb/articles/{made.json()['id']}", headers=headers),
                      c.get("/v1/keys", headers=headers)):
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "store_unavailable" and r.headers["retry-after"]
            assert time.monotonic() - started < 15
            # parsing needs no database, and the key checked a moment ago stays valid for the grace period
            parsed = c.post("/v1/parse", json={"text": "我要退款"}, headers=headers)
            assert parsed.status_code == 200, parsed.text
            assert c.post("/v1/parse", json={"text": "我要退款"},
                          headers={"X-API-Key": "lx_000000000000_unknown"}).status_code == 503
            assert c.post("/v1/kb/search", json={"query": "退款"}, headers=headers).status_code == 200

            relay.open()  # back: the pools reconnect on their own
            deadline = time.monotonic() + 15
            r = message("p-1")
            while r.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.3)
                r = message("p-1")
            assert r.status_code == 200 and r.json()["created"] is False  # the conversation was kept
            assert c.get(f"/v1/kb/articles/{made.json()['id']}", headers=headers).status_code == 200
            assert c.get("/v1/keys", headers=headers).status_code == 200
    finally:
        relay.close()
