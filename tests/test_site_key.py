"""The public site key is not a master key: the attacks of issue 18 reproduced and refused.

Real litestar app, real trained demo model, real SQLite conversation store."""

from __future__ import annotations

import json

import pytest
from litestar.testing import TestClient

from lingxi.datasets.dialogue_files import load_dialogue
from lingxi.datasets.domain import demo_domain_path, load_domain
from lingxi.dialogue import demo_backend
from lingxi.dialogue.actions import ActionClient
from lingxi.dialogue.stores import SQLTrackerStore
from lingxi.serving.conversations import app_with_dialogue, build_dialogue_service
from lingxi.serving.identity import mint_identity_token
from lingxi.serving.loading import ModelHolder
from lingxi.serving.settings import ApiKey, Settings

SECRET = "shop-identity-secret-0123456789"
SITE, SERVER, EDITOR = {"X-API-Key": "site-key"}, {"X-API-Key": "server-key"}, {"X-API-Key": "editor-key"}
VICTIM_PHONE = "13800138000"


@pytest.fixture(scope="module")
def holder(trained_demo, demo_encoder, lingxi_home, demo_arbitration):
    h = ModelHolder(lingxi_home / "models", "demo-shop")
    h._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder
    assert h.load_latest() is not None
    return h


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("site-key-home")


@pytest.fixture
def client(holder, home, tmp_path):
    domain = load_domain(demo_domain_path())
    spec = load_dialogue(demo_domain_path(), set(domain.intent_names), {r.id for r in domain.rules})
    keys = [ApiKey(name="widget", role="read", key="site-key"), ApiKey(name="shop", role="server", key="server-key"),
            ApiKey(name="ops", role="editor", key="editor-key")]
    settings = Settings(home=str(home), api_keys=keys, identity_secrets={"default": SECRET})
    app = app_with_dialogue(settings, holder)
    store = SQLTrackerStore(f"sqlite:///{tmp_path / 'dialogue.db'}")
    app.state.dialogue = build_dialogue_service(
        settings, holder, kbs=lambda: getattr(app.state, "kbs", None), spec=spec, store=store,
        actions=ActionClient("http://shop.test", transport=demo_backend.transport()))
    with TestClient(app) as c:
        yield c
    store.close()


def open_as(c, headers, visitor=None):
    r = c.post("/v1/conversations", headers=headers, json={"visitor": visitor} if visitor else {})
    assert r.status_code == 201, r.text
    return r.json()


def say(c, opened, text, headers=SITE):
    token = opened.get("conversation_token")
    h = {**headers, **({"X-Conversation-Token": token} if token else {})}
    r = c.post(f"/v1/conversations/{opened['conversation_id']}/messages", headers=h, json={"text": text})
    assert r.status_code == 200, r.text
    return r.json()


def read_own(c, opened):
    r = c.get(f"/v1/conversations/{opened['conversation_id']}?events=all",
              headers={**SITE, "X-Conversation-Token": opened["conversation_token"]})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_claimed_phone_does_not_link_to_the_owners_history(client):
    victim = open_as(client, SITE, {"phone": VICTIM_PHONE})
    say(client, victim, "我的订单号是 E20261124001 地址是北京市朝阳区建国路88号")
    attacker = open_as(client, SITE, {"phone": f"+86 {VICTIM_PHONE[:3]}-{VICTIM_PHONE[3:7]}-{VICTIM_PHONE[7:]}"})
    say(client, attacker, "你好")
    seen = json.dumps(attacker) + json.dumps(read_own(client, attacker), ensure_ascii=False)
    assert victim["conversation_id"] not in seen and "建国路" not in seen
    assert not [e for e in read_own(client, attacker)["events"] if e["event"] == "visitor"]
    mine, theirs = read_own(client, attacker)["state"]["visitor_id"], read_own(client, victim)["state"]["visitor_id"]
    assert mine and theirs and mine != theirs  # a fresh visitor, not the victim's record
    # a server-side key vouches for what it sends: the same claim from the shop's backend does link
    shop = open_as(client, SERVER, {"phone": VICTIM_PHONE})
    assert shop.get("conversation_token") is None
    events = client.get(f"/v1/conversations/{shop['conversation_id']}?events=all", headers=SERVER).json()["events"]
    assert not [e for e in events if e["event"] == "visitor"]  # claims were scoped per conversation: nothing to find


def test_a_site_key_cannot_read_or_write_another_conversation_or_a_visitor(client):
    victim = open_as(client, SITE)
    say(client, victim, "运费怎么算")
    attacker = open_as(client, SITE)
    cid = victim["conversation_id"]
    for token in (None, attacker["conversation_token"], "forged"):
        h = {**SITE, **({"X-Conversation-Token": token} if token else {})}
        for r in (client.get(f"/v1/conversations/{cid}?events=all", headers=h),
                  client.post(f"/v1/conversations/{cid}/messages", headers=h, json={"text": "我的地址是？"}),
                  client.post(f"/v1/conversations/{cid}/events", headers=h, json={"kind": "page_view", "page": "/x"})):
            assert r.status_code == 403 and r.json()["error"]["code"] == "conversation_forbidden", r.text
    # an unknown id answers the same: ids cannot be probed
    r = client.get("/v1/conversations/c-nobody?events=all", headers=SITE)
    assert r.status_code == 403 and r.json()["error"]["code"] == "conversation_forbidden"
    # re-opening the victim's id with a site key does not hand out a token for it
    r = client.post("/v1/conversations", headers=SITE, json={"conversation_id": cid})
    assert r.status_code == 409
    vid = read_own(client, victim)["state"].get("visitor_id") or "v-any"
    r = client.get(f"/v1/visitors/{vid}", headers=SITE)
    assert r.status_code == 403
    # operators and the shop's backend still read everything of their tenant
    assert client.get(f"/v1/conversations/{cid}?events=all", headers=EDITOR).status_code == 200
    assert client.post(f"/v1/conversations/{cid}/messages", headers=SERVER, json={"text": "好的"}).status_code == 200
    # the Rasa REST channel names conversations by the sender's word: server keys only
    r = client.post("/webhooks/rest/webhook?token=site-key", json={"sender": cid, "message": "你好"})
    assert r.status_code == 403
    assert client.post("/webhooks/rest/webhook?token=server-key", json={"sender": "rasa-1", "message": "你好"}
                       ).status_code == 200


def test_an_identity_token_from_the_shop_links_the_returning_customer(client):
    token = mint_identity_token(SECRET, "user-42")
    first = open_as(client, SITE, {"identity_token": token})
    say(client, first, "运费怎么算")
    second = open_as(client, SITE, {"identity_token": mint_identity_token(SECRET, "user-42"), "phone": VICTIM_PHONE})
    recognised = [e for e in read_own(client, second)["events"] if e["event"] == "visitor"]
    assert recognised and recognised[0]["history"][0]["conversation_id"] == first["conversation_id"]
    # forged, tampered and expired tokens are refused, not silently trusted
    for bad in (mint_identity_token("another-secret-0123456789", "user-42"), token[:-2] + "xx",
                mint_identity_token(SECRET, "user-42", ttl_s=-10), "lx1.garbage", "x" * 2000):
        r = client.post("/v1/conversations", headers=SITE, json={"visitor": {"identity_token": bad}})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_identity_token", r.text
    # a server key may link the same account directly with the verified identity kind
    shop = open_as(client, SERVER, {"identities": [{"kind": "shop_user", "value": "user-42"}]})
    events = client.get(f"/v1/conversations/{shop['conversation_id']}?events=all", headers=SERVER).json()["events"]
    assert [e for e in events if e["event"] == "visitor"]


def test_bad_integers_long_csv_fields_and_operator_only_details(client):
    for param in ("min_count", "offset"):
        r = client.get("/v1/misunderstood", params={param: "9223372036854775808"}, headers=EDITOR)
        assert r.status_code == 400, r.text
    assert client.get("/v1/misunderstood", params={"min_count": 2**63 - 1}, headers=EDITOR).status_code == 200
    for bad in ({"since": "nan"}, {"until": "1e999"}, {"since": "-inf"}):
        r = client.get("/v1/insights/rates", params={"by": "channel", **bad}, headers=EDITOR)
        assert 400 <= r.status_code < 500, (bad, r.text)
    long_body = "退款说明" * 50_000  # 200,000 characters: over the csv module's default field limit
    r = client.post("/v1/kb/import?format=csv&dry_run=true", content=f"title,body\n长文章,{long_body}\n".encode(),
                    headers=EDITOR)
    assert r.status_code in (200, 422) and (r.status_code == 200 or r.json().get("errors")), r.text[:300]
    # server-wide details are for operator roles: a public site key sees neither metrics nor paths
    assert client.get("/metrics", headers=SITE).status_code == 403
    assert client.get("/v1/models", headers=SITE).status_code == 403
    assert client.get("/v1/model", headers=SITE).json()["path"] == ""
    assert client.get("/v1/model", headers=EDITOR).json()["path"]


def test_failed_authentication_is_rate_limited_per_address(client):
    codes = [client.get("/v1/model", headers={"X-API-Key": f"guess-{n}"}).status_code for n in range(130)]
    assert codes[0] == 401 and 429 in codes  # burst 100, 50 a second


PII = ["13800138000", "+86 139 1234 5678", "137-1234-5678", "010-62345678", "一三六零零一三六零零零",
       "zhang.san@example.com", "http://refund-cn.example/pay", "11010519491231002X", "6222 0212 3456 7894"]


def test_with_redact_pii_no_store_outside_transcripts_keeps_personal_data(holder, tmp_path):
    import sqlite3

    keys = [ApiKey(name="widget", role="read", key="site-key"), ApiKey(name="ops", role="editor", key="editor-key")]
    settings = Settings(home=str(tmp_path), api_keys=keys, redact_pii=True, rate_limit_per_s=0)
    app = app_with_dialogue(settings, holder)
    with TestClient(app) as c:
        opened = open_as(c, SITE, {"phone": PII[0], "email": PII[5]})
        for value in PII:
            say(c, opened, f"我的联系方式是 {value} 帮我查一下退款")
            r = c.post("/v1/kb/search", json={"query": f"退款 {value}"}, headers=SITE)
            assert r.status_code == 200, r.text
        c.app.state.event_writer.flush()
        c.app.state.kb.feedback.flush_queries()
        assert c.get("/v1/misunderstood", params={"status": "all"}, headers=EDITOR).status_code == 200
        gaps = c.get("/v1/insights/gaps", params={"min_count": 1}, headers=EDITOR)
        frequent = c.get("/v1/insights/frequent", params={"kind": "question"}, headers=EDITOR)
        answers = gaps.text + frequent.text
    leaks = []
    for db in tmp_path.rglob("*.db"):
        if db.name == "dialogue.db":  # the transcripts keep what the handoff needs
            continue
        conn = sqlite3.connect(db)
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            dump = json.dumps(conn.execute(f'SELECT * FROM "{table}"').fetchall(), ensure_ascii=False, default=str)
            leaks += [f"{db.name}:{table}:{v}" for v in PII if v in dump or v.replace(" ", "") in dump]
        conn.close()
    leaks += [f"insights:{v}" for v in PII if v in answers]
    assert not leaks, leaks
