"""Limits on a real server: per-key rate limiting (429 + Retry-After), body size and depth, slow-drip
bodies, CORS for the widget, and redaction of personal data and secrets.

The app is ``create_app`` with the trained demo model, served by uvicorn on a loopback port (so
slow bodies and connection handling are real); the shared Redis limiter runs against
``LINGXI_TEST_REDIS_URL`` (skipped when unset).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import uuid

import httpx
import pytest
import uvicorn

from lingxi.nlu.redact import install_log_redaction, redact, scrub_secrets
from lingxi.serving.app import create_app
from lingxi.serving.limits import LocalBuckets, RateLimiter
from lingxi.serving.loading import ModelHolder
from lingxi.serving.settings import ApiKey, Settings

REDIS_URL = os.environ.get("LINGXI_TEST_REDIS_URL")
RATE, BURST = 4.0, 5
KEYS = {"a": "limits-key-a", "b": "limits-key-b"}


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


@pytest.fixture(scope="module")
def server(holder, tmp_path_factory):
    """A real uvicorn server on loopback running the real app."""
    home = tmp_path_factory.mktemp("limits-home")
    keys = [ApiKey(name=f"key-{n}", role="admin", key=k) for n, k in KEYS.items()]
    settings = Settings(home=str(home), api_keys=keys, kb_seed_demo=False, rate_limit_per_s=RATE,
                        rate_limit_burst=BURST, body_timeout_s=1.5, cors_origins=["https://shop.example"],
                        dialogue_store="memory")
    port = free_port()
    config = uvicorn.Config(create_app(settings, holder), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", port
    srv.should_exit = True
    thread.join(30)


def H(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def test_a_burst_gets_429_with_retry_after_and_other_keys_are_unaffected(server):
    base, _ = server
    with httpx.Client(base_url=base, timeout=30) as c:
        statuses, retry_after = [], None
        for _ in range(BURST + 5):
            r = c.get("/v1/model", headers=H("a"))
            statuses.append(r.status_code)
            if r.status_code == 429:
                err = r.json()["error"]
                assert err["code"] == "rate_limited" and err["details"]["limit_per_s"] == RATE
                retry_after = int(r.headers["retry-after"])
        assert statuses[:BURST] == [200] * BURST  # the burst allowance
        assert statuses.count(429) >= 3 and retry_after is not None and 1 <= retry_after <= 2
        assert c.get("/v1/model", headers=H("b")).status_code == 200  # buckets are per key
        assert c.get("/healthz").status_code == 200  # unauthenticated health checks are never limited
        time.sleep(retry_after)
        assert c.get("/v1/model", headers=H("a")).status_code == 200  # refilled: the key works again


def test_local_buckets_refill_at_the_configured_rate():
    buckets = LocalBuckets(rate=2.0, burst=3)
    assert [buckets.take("k", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", now=100.0) == pytest.approx(0.5)  # one token takes 1/rate seconds
    assert buckets.take("k", now=100.6) == 0.0
    assert buckets.take("other", now=100.6) == 0.0


@pytest.mark.skipif(not REDIS_URL, reason="LINGXI_TEST_REDIS_URL not set (CI sets it)")
def test_replicas_share_one_bucket_in_redis():
    prefix = f"lingxi-test-ratelimit-{uuid.uuid4().hex[:8]}"

    async def run() -> list[float]:
        one = RateLimiter(1.0, 6, REDIS_URL, prefix=prefix)
        two = RateLimiter(1.0, 6, REDIS_URL, prefix=prefix)
        try:
            return [await (one if i % 2 else two).take("tenant:key") for i in range(10)]
        finally:
            await one.aclose()
            await two.aclose()

    waits = asyncio.run(run())
    assert sum(w == 0 for w in waits) in (6, 7)  # one bucket of 6 for both replicas (+1 refilled at most)
    assert all(w > 0 for w in waits[7:]) and max(waits) <= 5.0


def test_an_unreachable_limiter_redis_falls_back_to_per_process_buckets():
    async def run() -> list[float]:
        limiter = RateLimiter(1.0, 2, f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.3)
        try:
            return [await limiter.take("k") for _ in range(4)]
        finally:
            await limiter.aclose()

    started = time.monotonic()
    waits = asyncio.run(run())
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0 and waits[3] > 0
    assert time.monotonic() - started < 3  # one failed attempt, then no waiting on Redis


def test_oversized_and_deeply_nested_bodies_are_refused_with_codes(server):
    base, _ = server
    with httpx.Client(base_url=base, timeout=30) as c:
        big = c.post("/v1/parse", content=b'{"text": "' + b"a" * 70_000 + b'"}',
                     headers={**H("b"), "content-type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
        deep = b'{"text": "hi", "slots": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
        r = c.post("/v1/conversations/deep-1/messages", content=deep,
                   headers={**H("b"), "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_deeply_nested"
        nested: object = "leaf"
        for _ in range(12):
            nested = {"k": nested}
        r = c.post("/v1/conversations/deep-2/messages", json={"text": "hi", "slots": {"x": nested}}, headers=H("b"))
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_deeply_nested"
        r = c.post("/v1/conversations/deep-2/messages", json={"text": "hi", "slots": {"x": {"a": [1, {"b": 2}]}}},
                   headers=H("b"))
        assert r.status_code == 200, r.text


def test_a_slow_drip_body_is_cut_off(server):
    _, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/parse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-API-Key: " + KEYS["b"].encode() + b"\r\nContent-Length: 400\r\n\r\n")
        started = time.monotonic()
        received = b""
        s.settimeout(0.4)
        for byte in b'{"text": "' + b"a" * 300:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break  # the server closed the connection
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            received += chunk
            if not chunk or b"\r\n\r\n" in received:
                break
            if time.monotonic() - started > 8:
                break
        elapsed = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:300]
    assert json.loads(body[: body.rindex(b"}") + 1])["error"]["code"] == "body_timeout"
    assert elapsed < 4.0  # body_timeout_s = 1.5, not the 120 s the drip would take


def test_cors_admits_the_widget_origin_only(server):
    base, _ = server
    with httpx.Client(base_url=base, timeout=30) as c:
        pre = c.options("/v1/parse", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "x-api-key,content-type"})
        assert pre.status_code in (200, 204)
        assert pre.headers["access-control-allow-origin"] == "https://shop.example"
        assert "x-api-key" in pre.headers["access-control-allow-headers"].lower()
        r = c.post("/v1/parse", json={"text": "我要退款"}, headers={**H("b"), "Origin": "https://shop.example"})
        assert r.headers["access-control-allow-origin"] == "https://shop.example"
        other = c.post("/v1/parse", json={"text": "我要退款"}, headers={**H("b"), "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_errors_carry_no_stack_trace_and_logs_carry_no_key(server, caplog):
    base, _ = server
    with caplog.at_level(logging.DEBUG), httpx.Client(base_url=base, timeout=30) as c:
        for r in (c.post("/v1/parse", content=b"{not json", headers={**H("b"), "content-type": "application/json"}),
                  c.post("/v1/parse", json={"text": ""}, headers=H("b")),
                  c.get("/v1/model", headers={"X-API-Key": "wrong-" + KEYS["a"]}),
                  c.get("/v1/kb/articles/nope", headers=H("b"))):
            assert 400 <= r.status_code < 500
            assert set(r.json()) == {"error"} and "Traceback" not in r.text and 'File "' not in r.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert KEYS["a"] not in logged and KEYS["b"] not in logged


@pytest.mark.parametrize("text,expected", [
    ("我的手机是13812345678，邮箱 Zhang.San@example.com", "我的手机是[phone]，邮箱 [email]"),
    ("+86 138-1234-5678 或 0571-88886666", "[phone] 或 [phone]"),
    ("全角号码１３８１２３４５６７８可以吗", "全角号码[phone]可以吗"),
    ("call +44 20 7946 0958 please", "call [phone] please"),
    ("订单号2023112412345678，金额199元", "订单号2023112412345678，金额199元"),  # not a phone number
    ("app登录不了", "app登录不了"),
])
def test_redact_masks_phones_and_emails_only(text, expected):
    assert redact(text) == expected


def test_secrets_are_scrubbed_and_logs_redacted_when_asked(caplog):
    assert scrub_secrets("postgresql+psycopg://app:s3cr3t@db:5432/x failed") == \
        "postgresql+psycopg://app:***@db:5432/x failed"
    assert scrub_secrets("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"
    previous = logging.getLogRecordFactory()
    try:
        install_log_redaction(pii=True)
        with caplog.at_level(logging.INFO):
            logging.getLogger("lingxi.test").info("visitor %s wrote from %s via %s", "13812345678", "a@b.cn",
                                                  "postgresql://u:hunter2@h/db")
        message = caplog.records[-1].getMessage()
        assert message == "visitor [phone] wrote from [email] via postgresql://u:***@h/db"
    finally:
        logging.setLogRecordFactory(previous)
