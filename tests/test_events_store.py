"""The event store on SQLite and PostgreSQL: per-event validation, idempotent retries, flags, reading."""

from __future__ import annotations

import threading
import time

import pytest

from lingxi.training.events import Click, EventStore, Parse, StoredEvent, default_url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = EventStore.open(default_url(tmp_path))
        yield s
        s.dispose()
        return
    s = EventStore.open(request.getfixturevalue("pg_schema_url"))
    try:
        yield s
    finally:
        s.dispose()


def click(eid: str, article: str = "kb-1", **extra) -> dict:
    return {"event_id": eid, "type": "click", "payload": {"article_id": article, "rank": 1}, **extra}


def test_bad_events_are_rejected_one_by_one_and_the_rest_is_stored(store):
    now = time.time()
    batch = [
        click("ok-1", conversation_id="c-1"),
        {"type": "click", "payload": {"article_id": "kb-1"}},  # no id
        {"event_id": "", "type": "click", "payload": {"article_id": "kb-1"}},
        {"event_id": "has space", "type": "click", "payload": {"article_id": "kb-1"}},
        {"event_id": "t-1", "type": "telepathy", "payload": {}},
        {"event_id": "t-2", "payload": {}},  # no type
        click("future", ts=now + 3 * 3600),
        click("ancient", ts=3.0),
        {"event_id": "big", "type": "csat", "payload": {"text": "好" * 5000}},
        {"event_id": "stars", "type": "csat", "payload": {"stars": 9}},
        {"event_id": "empty-csat", "type": "csat", "payload": {}},
        {"event_id": "vote", "type": "vote", "payload": {"article_id": "kb-1"}},  # no `resolved`
        {"event_id": "extra", "type": "vote", "payload": {"article_id": "kb-1", "resolved": True, "x": 1}},
        {"event_id": "tenant", "type": "vote", "tenant": "other", "payload": {"article_id": "kb-1", "resolved": True}},
        ["not", "an", "object"],
        {"event_id": "ok-2", "type": "csat", "ts": "2026-01-05T08:00:00+08:00", "payload": {"stars": 4, "text": "还行"}},
    ]
    report = store.ingest(batch, "t")
    codes = [r.code for r in report.results]
    assert codes == [None, "missing_id", "missing_id", "invalid_id", "unknown_type", "unknown_type",
                     "future_timestamp", "invalid_timestamp", "payload_too_large", "invalid_event", "invalid_event",
                     "invalid_event", "invalid_event", "invalid_event", "invalid_event", None]
    assert all(r.reason for r in report.results if r.status == "rejected")
    assert (report.accepted, report.duplicates, report.rejected) == (2, 0, 14)
    stored = {e.event_id: e for e in store.query("t")}
    assert set(stored) == {"ok-1", "ok-2"}
    assert stored["ok-2"].payload.stars == 4 and stored["ok-2"].ts == pytest.approx(1767571200.0)


def test_retries_never_double_count_and_tenants_are_separate(store):
    batch = [click(f"e-{i}") for i in range(50)]
    first = store.ingest(batch, "t")
    again = store.ingest(batch + [click("e-50"), click("e-50")], "t")
    assert first.accepted == 50
    assert again.duplicates == 51 and again.accepted == 1
    assert [r.status for r in again.results[-2:]] == ["accepted", "duplicate"]
    assert store.count("t") == 51
    assert store.ingest([click("e-1")], "other").accepted == 1  # ids are unique per tenant
    assert store.count("other") == 1 and store.count() == 52


def test_concurrent_writers_with_overlapping_ids_store_each_event_once(store):
    ids = [f"c-{i}" for i in range(300)]
    errors: list[Exception] = []

    def writer(offset: int) -> None:
        try:
            for start in range(offset, 300, 60):
                store.ingest([click(i) for i in ids[start:start + 90]], "t")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    events = store.query("t")
    assert sorted(e.event_id for e in events) == sorted(ids)
    seqs = [e.seq for e in store.read(0, 1000)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 300


def test_feedback_about_unknown_articles_and_conversations_is_stored_and_flagged(store):
    store.ingest([{"event_id": "p-1", "type": "parse", "conversation_id": "c-known",
                   "payload": {"text": "退款多久到账", "decision": "answer", "intent": "refund_time", "confidence": 0.9}}],
                 "t")
    report = store.ingest([click("f-1", "kb-1", conversation_id="c-known"),
                           click("f-2", "kb-gone", conversation_id="c-known"),
                           click("f-3", "kb-1", conversation_id="c-nobody"),
                           click("f-4", "kb-1", conversation_id="c-dialogue")], "t",
                          known_articles=lambda ids: ids & {"kb-1"},
                          known_conversations=lambda _t, ids: ids & {"c-dialogue"})
    assert [r.flags for r in report.results] == [[], ["unknown_article"], ["unknown_conversation"], []]
    assert report.accepted == 4
    flagged = store.query("t", flagged=True)
    assert {e.event_id: e.flags for e in flagged} == {"f-2": ("unknown_article",), "f-3": ("unknown_conversation",)}


def test_reading_by_cursor_and_by_filters(store):
    base = 1_780_000_000.0
    store.ingest([{**click(f"a-{i}"), "ts": base + i, "channel": "web" if i % 2 else "app", "bot": "shop"}
                  for i in range(10)], "t")
    store.ingest([{"event_id": "p", "type": "parse", "ts": base + 5, "payload": {"text": "hi", "decision": "reject"}}],
                 "t")
    first = store.read(0, 4)
    assert [e.event_id for e in first] == ["a-0", "a-1", "a-2", "a-3"]
    rest = list(store.iter_after(first[-1].seq, batch=3))
    assert len(rest) == 7 and rest[-1].seq == store.high_water()
    assert all(isinstance(e, StoredEvent) and isinstance(e.payload, Click) for e in rest[:-1])
    assert isinstance(rest[-1].payload, Parse)
    window = store.query("t", types=["click"], since=base + 2, until=base + 6, channel="web")
    assert [e.event_id for e in window] == ["a-3", "a-5"]
    assert store.count("t", types=["parse"]) == 1 and store.count("t", bot="shop") == 10
    store.set_cursor("consumer", 7)
    assert store.cursor("consumer") == 7 and store.cursor("never") == 0


def test_redaction_masks_customer_text_but_never_ids(tmp_path):
    from lingxi.nlu.redact import redact
    from lingxi.training.events import EventStore, default_url

    store = EventStore(default_url(tmp_path), redact=redact).create_schema()
    report = store.ingest([
        {"event_id": "e1", "type": "parse", "payload": {"text": "我的手机13812345678，邮箱 a.b@example.com", "decision": "answer"}},
        {"event_id": "e2", "type": "vote", "payload": {"article_id": "kb-13812345678", "resolved": False,
                                                        "query": "打13812345678没人接"}},
    ], tenant="default")
    assert report.accepted == 2
    stored = {e.event_id: e for e in store.read(0)}
    assert stored["e1"].payload.text == "我的手机[phone]，邮箱 [email]"
    assert stored["e2"].payload.article_id == "kb-13812345678"  # ids are not customer text
    assert stored["e2"].payload.query == "打[phone]没人接"
