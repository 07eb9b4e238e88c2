"""Prometheus metrics, request ids and JSON logs, through the real app and its test client."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid

import pytest
from litestar.testing import TestClient

from lingxi.serving.app import create_app, encoder_wrapper
from lingxi.serving.loading import ModelHolder
from lingxi.serving.observability import JsonFormatter, RequestIdFilter
from lingxi.serving.settings import Settings


@pytest.fixture(scope="module")
def client(trained_demo, demo_encoder, lingxi_home):
    settings = Settings(home=str(lingxi_home), dialogue_store="memory", encode_batch_max=8, embedding_cache_size=256)
    holder = ModelHolder(lingxi_home / "models", "demo-shop", wrap_encoder=encoder_wrapper(settings))
    served = holder.wrap_encoder(demo_encoder)  # batcher and cache as create_app wires them, the session's weights
    holder._encoders[repr(trained_demo.bundle.encoders)] = served
    with TestClient(create_app(settings, holder)) as c:
        yield c
    served.inner.close()


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(client) -> dict[tuple[str, frozenset], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for line in r.text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
            out[(m["name"], labels)] = float(m["value"])
    return out


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_parse_is_counted_by_route_decision_batch_and_cache(client):
    before = scrape(client)
    text = f"我的订单什么时候发货 {uuid.uuid4().hex[:6]}"  # new to the cache
    decisions = [client.post("/v1/parse", json={"text": text}).json()["decision"] for _ in range(3)]
    after = scrape(client)
    route = {"method": "POST", "route": "/v1/parse", "status": "200"}
    assert value(after, "lingxi_http_request_duration_seconds_count", **route) \
        - value(before, "lingxi_http_request_duration_seconds_count", **route) == 3
    assert value(after, "lingxi_parse_decisions_total", decision=decisions[0]) \
        - value(before, "lingxi_parse_decisions_total", decision=decisions[0]) == 3
    assert value(after, "lingxi_embedding_cache_lookups_total", result="miss") \
        - value(before, "lingxi_embedding_cache_lookups_total", result="miss") == 1
    assert value(after, "lingxi_embedding_cache_lookups_total", result="hit") \
        - value(before, "lingxi_embedding_cache_lookups_total", result="hit") == 2
    assert value(after, "lingxi_encoder_batch_size_count") - value(before, "lingxi_encoder_batch_size_count") == 1
    assert 0 < value(after, "lingxi_embedding_cache_hit_ratio") <= 1


def test_the_served_model_version_is_a_metric(client):
    model = client.get("/v1/model").json()
    samples = scrape(client)
    assert value(samples, "lingxi_model_info", bot="demo-shop", version=model["version"], source="local") == 1


def test_turns_fallbacks_and_handoffs_are_counted(client):
    before = scrape(client)
    cid = f"obs-{uuid.uuid4().hex[:8]}"
    decisions = []
    for i in range(4):  # gibberish until the demo policy gives up and hands over (in service hours: live)
        r = client.post(f"/v1/conversations/{cid}/messages",
                        json={"text": "qzx vbn wrt plk", "timestamp": f"2026-11-24T10:00:{10 * i:02d}+08:00"})
        assert r.status_code == 200, r.text
        decisions.append(r.json()["decision"])
    after = scrape(client)
    assert "fallback" in decisions and "handoff" in decisions, decisions
    for d in set(decisions):
        assert value(after, "lingxi_dialogue_turns_total", decision=d) \
            - value(before, "lingxi_dialogue_turns_total", decision=d) == decisions.count(d)
    assert value(after, "lingxi_fallbacks_total") - value(before, "lingxi_fallbacks_total") \
        == decisions.count("fallback")
    key = {"reason": "repeated_fallback", "mode": "live"}
    assert value(after, "lingxi_handoffs_total", **key) - value(before, "lingxi_handoffs_total", **key) == 1


def test_errors_are_timed_under_their_route_and_status(client):
    before = scrape(client)
    assert client.post("/v1/parse", json={"text": " "}).status_code == 422
    after = scrape(client)
    labels = {"method": "POST", "route": "/v1/parse", "status": "422"}
    assert value(after, "lingxi_http_request_duration_seconds_count", **labels) \
        - value(before, "lingxi_http_request_duration_seconds_count", **labels) == 1


@pytest.mark.parametrize("given", ["req-42.a:b_c", "A" * 128])
def test_a_sane_request_id_comes_back(client, given):
    r = client.post("/v1/parse", json={"text": "你好"}, headers={"X-Request-ID": given})
    assert r.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["", "has space", "A" * 129, "new\\nline", "引号"])
def test_an_insane_request_id_is_replaced(client, given):
    r = client.get("/healthz", headers={"X-Request-ID": given.encode("utf-8")})
    rid = r.headers["x-request-id"]
    assert rid != given and re.fullmatch(r"[0-9a-f]{32}", rid)


def test_every_response_has_a_fresh_request_id_even_unrouted_ones(client):
    ids = {client.get(path).headers["x-request-id"] for path in ("/healthz", "/healthz", "/no/such/route")}
    assert len(ids) == 3
    r = client.get("/no/such/route", headers={"X-Request-ID": "trace-404"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "trace-404"


def test_access_log_lines_are_json_with_the_request_id(client):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    access = logging.getLogger("lingxi.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    try:
        client.post("/v1/parse", json={"text": "怎么退款"}, headers={"X-Request-ID": "log-check-1"})
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [x for x in lines if x.get("request_id") == "log-check-1"]
    assert len(mine) == 1, lines
    assert mine[0]["route"] == "/v1/parse" and mine[0]["status"] == 200 and mine[0]["duration_ms"] > 0
    assert mine[0]["level"] == "INFO" and mine[0]["logger"] == "lingxi.access"


def test_json_formatter_summarises_exceptions_on_one_line():
    try:
        raise KeyError("secret_table")
    except KeyError:
        record = logging.LogRecord("lingxi.serving", logging.ERROR, __file__, 1, "failed %s", ("x",),
                                   exc_info=__import__("sys").exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    body = json.loads(line)
    assert body["msg"] == "failed x" and body["error"].startswith("KeyError") and "test_observability" in body["where"]
    assert "Traceback" not in line
