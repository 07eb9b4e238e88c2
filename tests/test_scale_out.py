"""Two real replicas (``lingxi serve`` processes) sharing PostgreSQL and Redis, driven alternately.

Both replicas serve the trained demo model; conversations live in Redis
(``LINGXI_TEST_REDIS_URL``), the knowledge base, API keys and events in a fresh PostgreSQL
database on ``LINGXI_TEST_POSTGRES_URL``'s server, and the rate-limit buckets in Redis too. The
test sends the turns of each conversation to the replicas in turn (what a round-robin proxy
does), edits the knowledge base through one and searches it through the other, and revokes a key
through one replica and sees the other refuse it at once. Skipped when either URL is unset.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from lingxi.serving.keys import KeyStore

REDIS_URL = os.environ.get("LINGXI_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="LINGXI_TEST_REDIS_URL is not set (CI sets it)")
MORNING = "2026-11-24T10:00:00+08:00"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_config(home: Path, models: Path, pg_url: str, port: int) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "lingxi.toml"
    config.write_text("\n".join([
        f'home = "{home}"', f'models_dir = "{models}"', f"port = {port}",
        f'kb_url = "{pg_url}"', f'keys_url = "{pg_url}"', f'events_url = "{pg_url}"',
        f'dialogue_store = "{REDIS_URL}"', f'rate_limit_url = "{REDIS_URL}"',
        "kb_seed_demo = false", 'log_level = "WARNING"', "",
    ]), "utf-8")
    return config


@pytest.fixture
def replicas(trained_demo, lingxi_home, fresh_pg_database, tmp_path):
    """Two ``lingxi serve`` processes on loopback ports; yields their base URLs and the database URL."""
    _, pg_url = fresh_pg_database
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGXI_")}  # the config file decides
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive", HF_HUB_OFFLINE="1")
    procs, urls = [], []
    try:
        for i in range(2):
            port = free_port()
            config = replica_config(tmp_path / f"replica-{i}", lingxi_home / "models", pg_url, port)
            log = open(tmp_path / f"replica-{i}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append((subprocess.Popen([sys.executable, "-m", "lingxi.serving.cli", "--config", str(config),
                                            "serve", "--port", str(port)], env=env, stdout=log,
                                           stderr=subprocess.STDOUT), log))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 240
        for (proc, _), url in zip(procs, urls, strict=True):
            while True:
                assert proc.poll() is None, (tmp_path / f"replica-{urls.index(url)}.log").read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "replica did not become ready"
                time.sleep(0.5)
        yield urls, pg_url
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, log in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def test_two_replicas_share_conversations_knowledge_and_keys(replicas):
    urls, pg_url = replicas
    tenant = f"scale-{uuid.uuid4().hex[:6]}"
    store = KeyStore(pg_url).create_schema()
    admin_rec, admin = store.create("ops", tenant, "admin")
    _, widget = store.create("shop backend", tenant, "server")  # names conversations itself: not a site key
    clients = [httpx.Client(base_url=u, timeout=60) for u in urls]
    turn = iter(range(10_000))

    def next_replica() -> httpx.Client:
        return clients[next(turn) % 2]  # round robin, as the proxy in front would

    try:
        # conversations: every turn goes to the other replica than the one before
        for n in range(2):
            cid = f"{tenant}-conv-{n}"
            steps = [({"text": "我要退款", "visitor": {"id": f"user-{n}"}}, "refund"),
                     ({"text": "DD202311240001"}, "refund"),
                     ({"payload": "质量问题"}, "refund"),
                     ({"text": "确认"}, None)]
            for i, (body, flow) in enumerate(steps):
                r = next_replica().post(f"/v1/conversations/{cid}/messages", json={**body, "timestamp": MORNING},
                                        headers={"X-API-Key": widget})
                assert r.status_code == 200, r.text
                assert r.json()["created"] is (i == 0) and r.json()["active_flow"] == flow
            final = r.json()
            assert final["slots"]["refund_id"].startswith("RF")
            for c in clients:  # both replicas read the same tracker
                tracker = c.get(f"/v1/conversations/{cid}", params={"events": "all"},
                                headers={"X-API-Key": widget}).json()
                assert [e["event"] for e in tracker["events"]].count("user") == 4
                assert tracker["state"]["slots"]["refund_id"] == final["slots"]["refund_id"]

        # the knowledge base: written through one replica, found through the other
        a = clients[0].post("/v1/kb/articles", json={"title": "发票抬头开错了怎么办", "body": "在订单详情申请换开。"},
                            headers={"X-API-Key": admin}).json()
        a = clients[0].post(f"/v1/kb/articles/{a['id']}/status", json={"status": "in_review", "version": a["version"]},
                            headers={"X-API-Key": admin}).json()
        a = clients[0].post(f"/v1/kb/articles/{a['id']}/status", json={"status": "published", "version": a["version"]},
                            headers={"X-API-Key": admin}).json()
        assert a["status"] == "published"
        deadline = time.monotonic() + 20  # the other replica catches up within its refresh interval (5 s)
        while True:
            hits = clients[1].post("/v1/kb/search", json={"query": "发票抬头写错了"},
                                   headers={"X-API-Key": widget}).json()["results"]
            if hits and hits[0]["article_id"] == a["id"]:
                break
            assert time.monotonic() < deadline, hits
            time.sleep(0.5)

        # a key revoked through one replica is refused by the other at once
        listed = clients[1].get("/v1/keys", headers={"X-API-Key": admin}).json()
        widget_id = next(k["key_id"] for k in listed if k["name"] == "shop backend")
        assert clients[1].delete(f"/v1/keys/{widget_id}", headers={"X-API-Key": admin}).status_code == 200
        for c in clients:
            r = c.post("/v1/parse", json={"text": "我要退款"}, headers={"X-API-Key": widget})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert clients[0].post("/v1/parse", json={"text": "我要退款"},
                               headers={"X-API-Key": admin}).status_code == 200
        assert admin_rec.tenant == tenant
    finally:
        for c in clients:
            c.close()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"*{tenant}*", count=500):  # the replicas' keys for this test's tenant
            client.delete(key)
        client.srem("lingxi:conversations", *[f"{tenant}/{tenant}-conv-{n}" for n in range(2)])
        client.close()
