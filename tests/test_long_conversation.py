"""A conversation of 500+ turns answers every turn, on every tracker store.

Stores snapshot the state every ``snapshot_every`` events and drop the older tail from memory; a
reply must never be lost across that (it once was: every 18th-20th reply came back empty). The
conversation runs through the real dialogue engine, the trained demo model, the demo knowledge
base and each store (memory, SQLite, PostgreSQL and Redis when their URLs are set).
"""

from __future__ import annotations

import os
import uuid

import pytest

from lingxi.dialogue.engine import DialogueEngine, MessageIn
from lingxi.dialogue.stores import MemoryTrackerStore, RedisTrackerStore, SQLTrackerStore
from lingxi.dialogue.tenancy import tenant_scope

REDIS_URL = os.environ.get("LINGXI_TEST_REDIS_URL")
PG_URL = os.environ.get("LINGXI_TEST_POSTGRES_URL")
MORNING = 1764986400.0  # 2025-12-06 10:00 Beijing: inside business hours

# Ordinary questions a shopper asks; none of them asks for a human.
QUESTIONS = [
    "优惠券怎么用", "支持哪些支付方式", "运费怎么算", "你好", "怎么开发票", "会员有什么权益",
    "积分怎么用", "发什么快递", "退款多久到账", "谢谢", "商品是正品吗", "怎么修改收货地址",
    "How do I get an invoice?", "退货运费谁出", "忘记密码了", "质量问题", "算了",
    "客服几点上班", "能分期吗", "怎么取消订单", "取消", "你是机器人吗", "怎么换货", "好的谢谢",
]


def _store(kind: str, tmp_path):
    prefix = f"lxlong_{uuid.uuid4().hex[:8]}"
    if kind == "memory":
        return MemoryTrackerStore()
    if kind == "sqlite":
        return SQLTrackerStore(f"sqlite:///{tmp_path / 'dialogue.db'}")
    if kind == "redis":
        if not REDIS_URL:
            pytest.skip("LINGXI_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/15)")
        return RedisTrackerStore(REDIS_URL, prefix=prefix)
    if not PG_URL:
        pytest.skip("LINGXI_TEST_POSTGRES_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    return SQLTrackerStore(PG_URL, prefix=prefix)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres", "redis"])
def test_every_turn_of_a_500_turn_conversation_gets_a_reply(kind, tmp_path, demo_pipeline, demo_spec,
                                                            demo_knowledge, demo_arbitration):
    store = _store(kind, tmp_path)
    engine = DialogueEngine(demo_spec, demo_pipeline, store, knowledge=demo_knowledge, arbitration=demo_arbitration)
    cid = f"long-{uuid.uuid4().hex[:8]}"
    empty: list[tuple[int, str, str]] = []
    try:
        with tenant_scope("default"):  # the knowledge base is looked up per tenant, as in the server
            for i in range(510):
                text = QUESTIONS[i % len(QUESTIONS)]
                result = engine.handle_message(cid, MessageIn(text=text, channel="web", timestamp=MORNING + i * 20))
                if not result.messages or result.silent or result.handoff is not None:
                    empty.append((i, text, result.decision))
        tracker = engine.tracker(cid)
        stored = store.events(cid)
    finally:
        if hasattr(store, "drop"):
            store.drop()
        store.close()
    assert empty == [], f"turns without a reply: {empty[:10]}"
    assert tracker is not None and tracker.event_count == len(stored) > 510 * 2
    assert tracker.base_seq > 0, "the store never took a snapshot: the test did not exercise the tail trim"
