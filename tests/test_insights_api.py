"""/v1/insights through the real litestar app pieces: tenant isolation, roles, parameter errors, every route."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient

from lingxi.serving.auth import KeyRing
from lingxi.serving.errors import EXCEPTION_HANDLERS
from lingxi.serving.insights import insights_router
from lingxi.serving.settings import ApiKey, Settings
from lingxi.training.events import (
    Click,
    Csat,
    Event,
    EventStore,
    Impression,
    Outcome,
    Parse,
    Vote,
    default_url,
)

NOW = time.time()
HOUR = 3600.0
KEYS = {"acme-ops": ("editor", "acme"), "acme-widget": ("read", "acme"), "beta-ops": ("editor", "beta")}


def H(name: str) -> dict[str, str]:
    return {"X-API-Key": f"secret-{name}"}


class Hook(BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):  # noqa: N802
        type(self).bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def webhook_url():
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/alerts"
    server.shutdown()


def _events() -> list[Event]:
    rng = random.Random(3)
    out: list[Event] = []
    n = 0

    def add(payload, ts, tenant="acme", conversation=None, channel="web"):
        nonlocal n
        n += 1
        out.append(Event(event_id=f"e{n}", payload=payload, ts=ts, tenant=tenant, conversation_id=conversation,
                         channel=channel))

    # a week of steady hourly traffic for acme, with `refund` tripled in the last hour
    for h in range(7 * 24):
        start = NOW - (7 * 24 - h) * HOUR
        for intent, rate in (("refund", 12), ("invoice", 12), ("shipping", 12)):
            k = rate * (3 if (intent == "refund" and h == 7 * 24 - 1) else 1) + rng.randint(-2, 2)
            for _ in range(k):
                add(Parse(text=f"{intent}问题", intent=intent, decision="answer", action="answer"),
                    start + rng.random() * HOUR)
    # conversations, feedback, CSAT and unanswered questions in the last day
    day = NOW - 20 * HOUR
    add(Parse(text="怎么退款", intent="refund", decision="answer", action="answer"), day, conversation="c1")
    add(Outcome(outcome="contained"), day + 60, conversation="c1")
    add(Parse(text="转人工", intent="human", decision="answer", action="handoff"), day, conversation="c2",
        channel="app")
    add(Outcome(outcome="handed_off"), day + 60, conversation="c2", channel="app")
    for _ in range(4):
        add(Impression(article_id="kb-refund", rank=1), day)
    add(Click(article_id="kb-refund"), day)
    add(Vote(article_id="kb-refund", resolved=True), day)
    add(Csat(stars=5, text="问题解决了，很满意"), day, conversation="c1")
    add(Csat(stars=1, text="等了半天没人理"), day, conversation="c2", channel="app")
    for text in ("积分可以兑换什么", "我的积分能换礼品吗", "积分怎么用", "积分兑换商品在哪里"):
        add(Parse(text=text, decision="out_of_scope", action="fallback"), day)
    # the other tenant: little, recent, and different
    add(Parse(text="开发票", intent="beta_invoice", decision="answer"), NOW - 60, tenant="beta")
    add(Csat(stars=3, text="还行"), NOW - 60, tenant="beta")
    return out


@pytest.fixture(scope="module")
def client(tmp_path_factory, demo_encoder, webhook_url):
    store = EventStore.open(default_url(tmp_path_factory.mktemp("insights")))
    store.append(_events())
    keys = [ApiKey(name=n, role=r, tenant=t, key=f"secret-{n}") for n, (r, t) in KEYS.items()]
    settings = Settings(api_keys=keys, insights_webhook_url=webhook_url, insights_webhook_timeout_s=2.0)
    app = Litestar(route_handlers=[insights_router], exception_handlers=EXCEPTION_HANDLERS,
                   state=State({"keyring": KeyRing(keys), "events": store, "settings": settings,
                                "insights_encoder": demo_encoder}))
    with TestClient(app) as c:
        yield c
    store.dispose()


def test_frequent_intents_are_scoped_to_the_callers_tenant(client):
    acme = client.get("/v1/insights/frequent", headers=H("acme-ops")).json()
    beta = client.get("/v1/insights/frequent", headers=H("beta-ops")).json()
    assert acme["tenant"] == "acme" and beta["tenant"] == "beta"
    acme_keys = {i["key"] for g in acme["data"] for i in g["items"]}
    assert {"refund", "invoice", "shipping"} <= acme_keys and "beta_invoice" not in acme_keys
    assert [i["key"] for g in beta["data"] for i in g["items"]] == ["beta_invoice"]
    by_channel = client.get("/v1/insights/frequent?by=channel&kind=question", headers=H("acme-ops")).json()
    assert {g["group"] for g in by_channel["data"]} == {"web", "app"}


def test_roles_and_keys(client):
    assert client.get("/v1/insights/rates", headers=H("acme-widget")).json()["error"]["code"] == "forbidden"
    assert client.get("/v1/insights/rates").status_code == 401
    assert client.get("/v1/insights/rates", headers={"X-API-Key": "nope"}).status_code == 401


@pytest.mark.parametrize("query, message", [
    ("/frequent?kind=mood", "kind"),
    ("/frequent?by=week", "by"),
    ("/frequent?limit=0", "limit"),
    ("/frequent?since=yesterday", "since"),
    ("/rates?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "before"),
    ("/rates?since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z", "days"),
    ("/rates?tz_offset_minutes=5000", "tz_offset_minutes"),
    ("/spikes?kind=mood", "kind"),
    ("/spikes?bucket_minutes=1", "bucket_minutes"),
    ("/csat?keywords=bert", "keywords"),
    ("/frequent?channel=", "channel"),
])
def test_bad_parameters_are_422_with_a_stable_code(client, query, message):
    r = client.get(f"/v1/insights{query}", headers=H("acme-ops"))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_parameter" and message in r.json()["error"]["message"]


def test_type_errors_are_4xx_not_500(client):
    r = client.get("/v1/insights/frequent?limit=many", headers=H("acme-ops"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def test_rates_articles_csat_and_gaps(client):
    rates = client.get("/v1/insights/rates?by=channel", headers=H("acme-ops")).json()["data"]
    by = {r["group"]: r for r in rates}
    assert by["web"]["containment_rate"] == 1.0 and by["app"]["handoff_rate"] == 1.0
    assert by["web"]["fallbacks"] == 4
    articles = client.get("/v1/insights/articles", headers=H("acme-ops")).json()["data"]
    assert articles[0]["article_id"] == "kb-refund" and articles[0]["ctr"] == 0.25
    assert articles[0]["resolution_rate"] == 1.0
    csat = client.get("/v1/insights/csat?by=channel", headers=H("acme-ops")).json()["data"]
    assert {c["group"]: c["sentiment"]["negative"] for c in csat} == {"app": 1, "web": 0}
    assert client.get("/v1/insights/csat", headers=H("beta-ops")).json()["data"][0]["mean_stars"] == 3.0
    gaps = client.get("/v1/insights/gaps", headers=H("acme-ops")).json()["data"]
    assert gaps and gaps[0]["count"] == 4 and "积分" in gaps[0]["suggested_title"]
    assert client.get("/v1/insights/gaps", headers=H("beta-ops")).json()["data"] == []


def test_spikes_per_intent_and_insufficient_history(client):
    r = client.get("/v1/insights/spikes", headers=H("acme-ops")).json()["data"]
    assert r["report"]["status"] == "ok"
    assert [s["key"] for s in r["report"]["spikes"]] == ["refund"]
    young = client.get("/v1/insights/spikes", headers=H("beta-ops")).json()["data"]["report"]
    assert young["status"] == "insufficient_history" and young["spikes"] == []
    clusters = client.get("/v1/insights/spikes?kind=query", headers=H("acme-ops")).json()["data"]["report"]
    assert clusters["status"] == "ok" and any("refund" in s["key"] for s in clusters["spikes"])


def test_spike_alert_posts_to_the_webhook(client):
    Hook.bodies = []
    r = client.post("/v1/insights/spikes/alert", headers=H("acme-ops"))
    assert r.status_code == 200, r.text
    assert r.json()["data"]["webhook"]["delivered"] is True
    (body,) = Hook.bodies
    assert body["tenant"] == "acme" and [s["key"] for s in body["spikes"]] == ["refund"]
