"""Tenant isolation over every route: a key of tenant B never sees or changes tenant A's data.

Tenant A (``shop-a``) fills every kind of object the API stores — a published article with
feedback and a search history, conversations with slots, a visitor with phone and e-mail, an
API key, learning events, a misunderstood utterance — each marked with unique "canary" strings.
Then tenant B's admin key calls **every route of the app** (the route table, checked against the
OpenAPI schema, so a new route fails this test until it is listed here) with A's ids in the path
and A-like bodies. B must get 404 (or 403 for server-wide operations) wherever it names A's
objects, no response to B may contain any of A's canaries, and afterwards A's objects must be
exactly as they were. The real app (``create_app``), the real trained demo model and real SQLite
stores throughout.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from litestar.testing import TestClient

from lingxi.serving.app import create_app
from lingxi.serving.loading import ModelHolder
from lingxi.serving.settings import ApiKey, Settings

ROLES = ("read", "server", "editor", "reviewer", "admin")
TENANTS = ("shop-a", "shop-b")


def _recent_service_morning() -> str:
    """10:00 Beijing time on the latest weekday before today: inside service hours, and inside the
    insights' default 7-day window whenever the suite runs (a fixed date falls out of it a week later)."""
    day = datetime.now(timezone(timedelta(hours=8))).date() - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return f"{day.isoformat()}T10:00:00+08:00"


MORNING = _recent_service_morning()


def key(tenant: str, role: str) -> str:
    return f"key-{tenant}-{role}"


def H(tenant: str, role: str = "admin") -> dict[str, str]:
    return {"X-API-Key": key(tenant, role)}


CANARY = {
    "title": "CANARY甲退货地址在哪里",
    "variant": "CANARY甲退货寄到哪",
    "body": "CANARY甲正文：退货请寄到杭州市西湖区。",
    "message": "CANARY甲消息 我要退款",
    "fallback": "CANARY甲 呜啦啦咕噜 xyzzy",
    "slot": "CANARY甲槽位值",
    "phone": "13912345678",
    "email": "canary-a@example.com",
    "query": "CANARY甲查询退货",
    "csat": "CANARY甲评价很差",
    "key_name": "canary-a-kiosk",
}


@pytest.fixture(scope="module")
def holder(trained_demo, demo_encoder, lingxi_home):
    h = ModelHolder(lingxi_home / "models", "demo-shop")
    h._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder
    assert h.load_latest() is not None
    return h


@pytest.fixture(scope="module")
def client(holder, tmp_path_factory):
    home = tmp_path_factory.mktemp("tenants-home")
    keys = [ApiKey(name=f"{t}-{r}", role=r, tenant=t, key=key(t, r)) for t in TENANTS for r in ROLES]
    keys.append(ApiKey(name="operator", role="admin", tenant="default", key="key-operator"))
    settings = Settings(home=str(home), api_keys=keys, kb_seed_demo=False, rate_limit_per_s=0)
    with TestClient(create_app(settings, holder)) as c:
        yield c


def ok(r, status: int = 200):
    assert r.status_code == status, r.text
    return r.json() if r.content else None


@pytest.fixture(scope="module")
def tenant_a(client) -> dict:
    """Tenant A's objects, created through the API with A's keys; returns their ids."""
    a = {}
    art = ok(client.post("/v1/kb/articles", json={"id": "art-canary", "title": CANARY["title"], "body": CANARY["body"],
                                                  "variants": [CANARY["variant"]], "category": ["售后"]},
                         headers=H("shop-a", "editor")), 201)
    art = ok(client.post(f"/v1/kb/articles/{art['id']}/status", json={"status": "in_review", "version": art["version"]},
                         headers=H("shop-a", "editor")))
    art = ok(client.post(f"/v1/kb/articles/{art['id']}/status", json={"status": "published", "version": art["version"]},
                         headers=H("shop-a", "reviewer")))
    a["article"] = art["id"]
    hits = ok(client.post("/v1/kb/search", json={"query": CANARY["query"]}, headers=H("shop-a", "read")))
    assert hits["results"] and hits["results"][0]["article_id"] == a["article"]
    ok(client.post("/v1/feedback", json={"events": [
        {"type": "impression", "article_id": a["article"], "rank": 1, "query": CANARY["query"]},
        {"type": "click", "article_id": a["article"], "rank": 1},
        {"type": "vote", "article_id": a["article"], "resolved": False}]}, headers=H("shop-a", "read")), 202)

    a["cid"] = "conv-canary-a"
    turn = ok(client.post(f"/v1/conversations/{a['cid']}/messages", headers=H("shop-a", "server"), json={
        "text": CANARY["message"], "timestamp": MORNING, "slots": {"note": CANARY["slot"]},
        "visitor": {"id": "user-a", "phone": CANARY["phone"], "email": CANARY["email"]}}))
    assert turn["created"] is True
    ok(client.post(f"/v1/conversations/{a['cid']}/messages", headers=H("shop-a", "server"),
                   json={"text": CANARY["fallback"], "timestamp": MORNING}))
    state = ok(client.get(f"/v1/conversations/{a['cid']}", headers=H("shop-a", "server")))
    a["visitor"] = state["state"]["visitor_id"]
    assert a["visitor"] and state["state"]["slots"]["note"] == CANARY["slot"]
    a["cid2"] = "conv-canary-a2"
    ok(client.post("/v1/conversations", json={"conversation_id": a["cid2"], "timestamp": MORNING},
                   headers=H("shop-a", "server")), 201)

    made = ok(client.post("/v1/keys", json={"name": CANARY["key_name"], "role": "read"}, headers=H("shop-a")), 201)
    a["key_id"], a["key"] = made["record"]["key_id"], made["key"]
    report = ok(client.post("/v1/events", headers=H("shop-a", "read"), json={"events": [
        {"event_id": "ev-canary-a", "type": "csat", "conversation_id": a["cid"],
         "payload": {"stars": 1, "text": CANARY["csat"]}}]}))
    assert report["results"][0]["status"] == "accepted", report
    entries = ok(client.get("/v1/misunderstood", params={"status": "all"}, headers=H("shop-a", "editor")))
    a["entry"] = entries["items"][0]["id"] if entries["items"] else 1
    # A's own analytics do show A's canaries: the probes below would notice them leaking
    questions = client.get("/v1/insights/frequent", params={"kind": "question"}, headers=H("shop-a", "editor"))
    assert CANARY["message"].lower() in questions.text.lower(), questions.text[:500]  # analytics lowercase text
    return a


def snapshot(client, a: dict) -> dict:
    """Everything A can read about its objects, with A's keys."""
    def get(path, role="admin", **params):
        r = client.get(path, params=params, headers=H("shop-a", role))
        return r.status_code, r.text

    return {
        "article": get(f"/v1/kb/articles/{a['article']}"),
        "versions": get(f"/v1/kb/articles/{a['article']}/versions"),
        "articles": get("/v1/kb/articles", status="published"),
        "conversation": get(f"/v1/conversations/{a['cid']}", events="all"),
        "conversation2": get(f"/v1/conversations/{a['cid2']}", events="all"),
        "visitor": get(f"/v1/visitors/{a['visitor']}"),
        "keys": get("/v1/keys"),
        "misunderstood": get("/v1/misunderstood", status="all"),
        "index_docs": json.loads(get("/v1/kb/index")[1])["docs"],
        "feedback": client.app.state.kbs.get("shop-a").feedback.stats(a["article"]),
        "key_works": client.get("/v1/session", headers={"X-API-Key": a["key"]}).status_code,
    }


def probes(a: dict) -> dict[tuple[str, str], dict]:
    """One request per route for tenant B. ``expect``: allowed statuses (default: anything but 5xx);
    phase 2 runs after phase 1 because it may create B's own objects under A's ids."""
    art, cid = a["article"], a["cid"]
    gone = {404}
    return {
        ("GET", "/healthz"): {},
        ("GET", "/readyz"): {},
        ("POST", "/v1/parse"): {"json": {"text": "我要退款", "conversation_id": cid}, "expect": {200}},
        ("POST", "/model/parse"): {"json": {"text": "我要退款"}, "expect": {200}},
        ("GET", "/v1/model"): {"expect": {200}},
        ("GET", "/v1/models"): {"expect": {403}},
        ("POST", "/v1/admin/reload"): {"expect": {403}},
        ("GET", "/metrics"): {},
        ("GET", "/v1/session"): {"expect": {200}},
        ("GET", "/widget.js"): {}, ("GET", "/demo"): {}, ("GET", "/console"): {},
        ("GET", "/web/{file_path:path}"): {"params": {"file_path": "no-such-file.js"}},
        ("GET", "/schema-assets/{file_path:path}"): {"params": {"file_path": "swagger-ui.css"}},
        ("GET", "/schema"): {}, ("GET", "/schema/swagger"): {}, ("GET", "/schema/openapi.json"): {},
        ("GET", "/schema/oauth2-redirect.html"): {},
        ("GET", "/schema/{path:str}"): {"params": {"path": "openapi.yaml"}},
        # knowledge base: A's article does not exist for B
        ("GET", "/v1/kb/articles"): {"query": {"status": "published"}, "expect": {200}},
        ("GET", "/v1/kb/articles/{article_id:str}"): {"expect": gone},
        ("PUT", "/v1/kb/articles/{article_id:str}"): {"json": {"title": "B 改写", "body": "x", "version": 3},
                                                      "expect": gone},
        ("DELETE", "/v1/kb/articles/{article_id:str}"): {"expect": gone},
        ("POST", "/v1/kb/articles/{article_id:str}/status"): {"json": {"status": "archived", "version": 3},
                                                              "expect": gone},
        ("GET", "/v1/kb/articles/{article_id:str}/versions"): {"expect": gone},
        ("GET", "/v1/kb/articles/{article_id:str}/versions/{version:int}"): {"expect": gone},
        ("GET", "/v1/kb/articles/{article_id:str}/diff"): {"query": {"from": 1, "to": 3}, "expect": gone},
        ("POST", "/v1/kb/articles/{article_id:str}/restore"): {"json": {"restore_version": 1, "version": 3},
                                                               "expect": gone},
        ("GET", "/v1/kb/export"): {"expect": {200}},
        ("POST", "/v1/kb/search"): {"json": {"query": CANARY["query"]}, "expect": {200}},
        ("GET", "/v1/kb/suggest"): {"query": {"q": "CANARY甲"}, "expect": {200}},
        ("GET", "/v1/kb/index"): {"expect": {200}},
        ("POST", "/v1/kb/index/rebuild"): {"expect": {200}},
        # conversations and visitors: A's do not exist for B
        ("GET", "/v1/conversations/{conversation_id:str}"): {"query": {"events": "all"}, "expect": gone},
        ("POST", "/v1/conversations/{conversation_id:str}/events"): {"json": {"kind": "page_view", "page": "/cart"},
                                                                     "expect": gone},
        ("POST", "/v1/conversations/{conversation_id:str}/release"): {"json": {"by": "agent-b"}, "expect": gone},
        ("GET", "/v1/visitors/{visitor_id:str}"): {"expect": gone},
        # the agent side: A's conversations are not B's to read or answer (an answer says 403)
        ("POST", "/v1/conversations/{conversation_id:str}/agent-messages"): {"json": {"text": "B"}, "expect": {403}},
        ("GET", "/v1/conversations/{conversation_id:str}/stream"): {"expect": gone},
        ("GET", "/v1/conversations/{conversation_id:str}/events"): {"query": {"wait": 0}, "expect": gone},
        ("GET", "/v1/inbox"): {"expect": {200}},
        ("GET", "/v1/inbox/{conversation_id:str}"): {"expect": gone},
        ("GET", "/v1/handoff/deliveries"): {"expect": {200}},
        ("POST", "/v1/handoff/deliveries/{event_id:str}/replay"): {"params": {"event_id": "evt_a"}, "expect": gone},
        # keys and learning: A's do not exist for B
        ("GET", "/v1/keys"): {"expect": {200}},
        ("DELETE", "/v1/keys/{key_id:str}"): {"expect": gone},
        ("GET", "/v1/misunderstood"): {"query": {"status": "all"}, "expect": {200}},
        ("GET", "/v1/misunderstood/labels"): {"expect": {200}},
        ("GET", "/v1/misunderstood/{entry_id:int}"): {"expect": gone},
        ("POST", "/v1/misunderstood/{entry_id:int}/resolve"): {"json": {"action": "ignore"}, "expect": gone},
        ("POST", "/v1/misunderstood/{entry_id:int}/reopen"): {"expect": gone},
        ("POST", "/v1/misunderstood/resolve"): {"json": {"ids": [a["entry"]], "action": "ignore"}, "expect": gone},
        # server-wide model operations belong to the operator tenant
        ("GET", "/v1/registry/versions"): {"expect": {403}},
        ("GET", "/v1/registry/log"): {"expect": {403}},
        ("GET", "/v1/registry/versions/{version:str}/gates"): {"expect": {403}},
        ("POST", "/v1/registry/promote"): {"json": {"version": "1", "reason": "b"}, "expect": {403}},
        ("POST", "/v1/registry/rollback"): {"json": {"reason": "b"}, "expect": {403}},
        # analytics over A's events: B's see only B's (none of A's questions, gaps, CSAT comments)
        ("GET", "/v1/insights/frequent"): {"query": {"kind": "question"}, "expect": {200}},
        ("GET", "/v1/insights/rates"): {"query": {"by": "channel"}, "expect": {200}},
        ("GET", "/v1/insights/articles"): {"expect": {200}},
        ("GET", "/v1/insights/gaps"): {"query": {"min_count": 1}, "expect": {200}},
        ("GET", "/v1/insights/csat"): {"expect": {200}},
        ("GET", "/v1/insights/spikes"): {"query": {"kind": "query"}, "expect": {200}},
        ("POST", "/v1/insights/spikes/alert"): {"expect": {409}},  # no webhook configured here
        # the demo shop's fake backend holds no tenant data
        ("GET", "/v1/demo-shop/orders/{order_id:str}"): {"params": {"order_id": "20231124001"}},
        ("POST", "/v1/demo-shop/refunds"): {"json": {"order_id": "20231124001"}},
        ("GET", "/webhooks/rest"): {},
        # Chatwoot's agent-bot webhook authenticates by its URL token, never by an API key
        ("POST", "/webhooks/chatwoot/{tenant:str}"): {"params": {"tenant": "shop-a"}, "expect": {401},
                                                      "json": {"event": "message_created"}},
        # phase 2: B writes under A's ids and gets objects of its own
        ("POST", "/v1/kb/articles"): {"phase": 2, "json": {"id": art, "title": "B 的文章", "body": "B"}, "expect": {201}},
        ("POST", "/v1/kb/import"): {"phase": 2, "query": {"format": "jsonl"}, "expect": {200},
                                    "content": json.dumps({"id": "art-b-import", "title": "B 导入", "body": "B"})},
        ("POST", "/v1/feedback"): {"phase": 2, "expect": {202}, "json": {"events": [
            {"type": "vote", "article_id": art, "resolved": True, "query": "B 的查询"}]}},
        ("POST", "/v1/conversations"): {"phase": 2, "json": {"conversation_id": a["cid2"]}, "expect": {201}},
        ("POST", "/v1/conversations/{conversation_id:str}/messages"): {
            "phase": 2, "json": {"text": "你好", "visitor": {"phone": CANARY["phone"]}}, "expect": {200},
            "check": lambda body: body["created"] is True},
        ("POST", "/webhooks/rest/webhook"): {"phase": 2, "json": {"sender": a["cid2"], "message": "你好"},
                                             "expect": {200}},
        ("POST", "/v1/visitors/link"): {"phase": 2, "expect": {200}, "json": {"identities": [
            {"kind": "email", "value": CANARY["email"]}, {"kind": "phone", "value": CANARY["phone"]}]},
            # B's own visitor (with B's conversation of the same id from the message above), never A's
            "check": lambda body: body["visitor_id"] != a["visitor"] and a["visitor"] not in body["merged_from"]},
        ("POST", "/v1/keys"): {"phase": 2, "json": {"name": "b-kiosk"}, "expect": {201}},
        ("POST", "/v1/events"): {"phase": 2, "expect": {200}, "json": {"events": [
            {"event_id": "ev-canary-a", "type": "csat", "conversation_id": cid, "payload": {"stars": 5}}]},
            "check": lambda body: body["results"][0]["status"] == "accepted"},  # not a "duplicate" of A's
    }


def route_table(app) -> set[tuple[str, str]]:
    out = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in handler.http_methods:
                if method not in ("OPTIONS", "HEAD"):
                    out.add((method, route.path))
    return out


def test_every_route_is_covered_and_matches_the_openapi_schema(client, tenant_a):
    routes = route_table(client.app)
    table = probes(tenant_a)
    missing = sorted(routes - set(table))
    assert not missing, f"routes without a cross-tenant probe (add them to probes()): {missing}"
    assert not set(table) - routes, f"probes for routes that no longer exist: {sorted(set(table) - routes)}"
    schema = client.get("/schema/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    served = {(m, _strip_types(p)) for m, p in routes}
    assert documented <= served, sorted(documented - served)


def _strip_types(path: str) -> str:
    import re

    return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)


def _url(path: str, values: dict) -> str:
    import re

    return re.sub(r"\{(\w+)(?::[^}]+)?\}", lambda m: str(values[m.group(1)]), path)


def test_tenant_b_can_neither_see_nor_change_tenant_a(client, tenant_a):
    a = tenant_a
    before = snapshot(client, a)
    assert before["key_works"] == 200
    secrets = [*CANARY.values(), a["key_id"], a["visitor"], a["key"], a["article"]]
    values = {"article_id": a["article"], "version": 1, "conversation_id": a["cid"], "visitor_id": a["visitor"],
              "key_id": a["key_id"], "entry_id": a["entry"]}
    table = probes(a)
    failures = []
    for phase in (1, 2):
        for (method, path), probe in sorted(table.items()):
            if probe.get("phase", 1) != phase:
                continue
            url = _url(path, {**values, **probe.get("params", {})})
            sent = json.dumps([url, probe.get("json"), probe.get("query"), probe.get("content")], ensure_ascii=False)
            r = client.request(method, url, params=probe.get("query"), json=probe.get("json"),
                               content=probe.get("content"), headers=H("shop-b"))
            where = f"{method} {path}"
            if r.status_code >= 500:
                failures.append(f"{where}: {r.status_code} {r.text[:200]}")
            if "expect" in probe and r.status_code not in probe["expect"]:
                failures.append(f"{where}: status {r.status_code}, expected {sorted(probe['expect'])}: {r.text[:200]}")
            seen = r.text.lower()  # stores may normalise (lowercase) what they keep
            leaked = [s for s in secrets if s.lower() not in sent.lower() and s.lower() in seen]
            if leaked:
                failures.append(f"{where}: tenant B saw tenant A's {leaked}")
            if "check" in probe and r.status_code < 300 and not probe["check"](r.json()):
                failures.append(f"{where}: {r.text[:300]}")
    assert not failures, "\n".join(failures)
    assert snapshot(client, a) == before  # nothing of A's changed

    # B really did get objects of its own under the same ids, invisible to A
    mine = client.get(f"/v1/conversations/{a['cid']}", params={"events": "all"}, headers=H("shop-b")).json()
    assert mine["event_count"] > 0 and CANARY["message"] not in json.dumps(mine, ensure_ascii=False)
    assert client.get("/v1/kb/articles/art-b-import", headers=H("shop-a")).status_code == 404
    assert client.get("/v1/kb/articles/art-b-import", headers=H("shop-b")).status_code == 200


def test_a_tenant_key_on_a_route_without_tenant_data_answers_normally(client, tenant_a):
    parsed = client.post("/v1/parse", json={"text": "我要退款"}, headers=H("shop-b", "read"))
    assert parsed.status_code == 200 and parsed.json()["intent"]["name"]
    assert client.get("/v1/session", headers=H("shop-b", "read")).json()["tenant"] == "shop-b"
    operator = client.get("/v1/models", headers={"X-API-Key": "key-operator"})
    assert operator.status_code == 200 and operator.json()["loaded"]["bot"] == "demo-shop"
