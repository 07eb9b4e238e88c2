"""Ranking counters are a fold over the event store: incremental, exactly once across replicas, with decay;
and conversation outcomes are derived from the same log."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from lingxi.retrieval.feedback import FeedbackEvent, FeedbackStore, QualityConfig, events_t, legacy_metadata
from lingxi.retrieval.store import make_engine, sqlite_url
from lingxi.training.events import EventStore, default_url
from lingxi.training.outcomes import close_idle_conversations

MATH = QualityConfig(served_only=False)  # folding and decay on simulated feedback (trust: test_feedback_abuse.py)


DAY = 86_400.0


@pytest.fixture
def stores(tmp_path):
    events = EventStore.open(default_url(tmp_path))
    kb_engine = make_engine(sqlite_url(tmp_path / "kb.db"))
    yield events, kb_engine
    events.dispose()
    kb_engine.dispose()


def clicks_and_votes(prefix: str, article: str, n: int, ts: float | None = None, resolved: bool = True) -> list[dict]:
    out = []
    for i in range(n):
        extra = {} if ts is None else {"ts": ts}
        out += [{"event_id": f"{prefix}-i{i}", "type": "impression", "payload": {"article_id": article, "rank": 1},
                 **extra},
                {"event_id": f"{prefix}-c{i}", "type": "click", "payload": {"article_id": article, "rank": 1}, **extra},
                {"event_id": f"{prefix}-v{i}", "type": "vote", "payload": {"article_id": article, "resolved": resolved},
                 **extra}]
    return out


def test_replicas_fold_each_event_exactly_once(stores):
    events, kb_engine = stores
    a = FeedbackStore(kb_engine, MATH, events=events).create_schema().reload()
    b = FeedbackStore(kb_engine, MATH, events=events).create_schema().reload()
    events.ingest(clicks_and_votes("x", "kb-1", 10), "default")
    events.ingest(clicks_and_votes("other-tenant", "kb-1", 7), "acme")  # another tenant's KB
    assert a.advance() == 30 and b.advance() == 0
    assert a.stats("kb-1").clicks == b.stats("kb-1").clicks == 10

    events.ingest(clicks_and_votes("y", "kb-1", 40), "default")
    threads = [threading.Thread(target=s.advance) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.advance(), b.advance()
    assert a.stats("kb-1").clicks == b.stats("kb-1").clicks == 50
    assert FeedbackStore(kb_engine, MATH, events=events).reload().stats("kb-1").resolved == 50  # as stored
    events.ingest(clicks_and_votes("x", "kb-1", 10), "default")  # a client retry: all duplicates
    assert a.advance() == 0 and a.stats("kb-1").votes == 50


def test_old_feedback_fades_with_the_half_life(stores):
    events, kb_engine = stores
    now = time.time()
    events.ingest(clicks_and_votes("old", "kb-old", 30, ts=now - 180 * DAY, resolved=False)
                  + clicks_and_votes("new", "kb-new", 30, ts=now - 60, resolved=False)
                  + clicks_and_votes("filler", "kb-filler", 30, ts=now - 60), "default")
    decayed = FeedbackStore(kb_engine, QualityConfig(served_only=False, half_life_days=30), events=events).create_schema().reload()
    decayed.advance()
    assert decayed.stats("kb-old").not_resolved == decayed.stats("kb-new").not_resolved == 30  # raw counts kept
    old, new = decayed.quality("kb-old"), decayed.quality("kb-new")
    assert new.boost < -0.5 and new.boost < old.boost - 0.4 and abs(old.boost) < 0.2
    assert set(decayed.flags()) == {"kb-new"}  # six half-lives later, the old complaints no longer flag it

    with kb_engine.begin() as conn:  # a second KB database view without decay, same events
        conn.exec_driver_sql("DELETE FROM kb_feedback_counters")
        conn.exec_driver_sql("DELETE FROM kb_feedback_meta")
    flat = FeedbackStore(kb_engine, QualityConfig(served_only=False, half_life_days=0), events=events).create_schema().reload()
    flat.advance()
    assert flat.quality("kb-old").boost == pytest.approx(flat.quality("kb-new").boost)
    assert set(flat.flags()) == {"kb-old", "kb-new"}


def test_far_apart_events_do_not_overflow_the_forward_decay(stores):
    events, kb_engine = stores
    now = time.time()
    store = FeedbackStore(kb_engine, QualityConfig(served_only=False, half_life_days=1), events=events).create_schema().reload()
    events.ingest(clicks_and_votes("ancient", "kb-1", 5, ts=now - 900 * DAY, resolved=False), "default")
    store.advance()
    events.ingest(clicks_and_votes("today", "kb-1", 5, ts=now - 60), "default")
    store.advance()
    q = store.quality("kb-1")
    assert q.resolution > 0.6 and q.votes == 10  # the ancient "no" votes weigh nothing, the raw count remains


def test_legacy_feedback_rows_are_imported_once(tmp_path):
    engine = make_engine(sqlite_url(tmp_path / "kb.db"))
    legacy_metadata.create_all(engine)
    with engine.begin() as conn:
        for _ in range(4):
            conn.execute(insert(events_t).values(at=datetime.now(UTC), type="vote", article_id="kb-legacy",
                                                 resolved=0))
    store = FeedbackStore(engine, MATH).create_schema().reload()
    store.advance()
    assert store.stats("kb-legacy").not_resolved == 4
    again = FeedbackStore(engine, MATH).create_schema().reload()
    assert again.advance() == 0 and again.stats("kb-legacy").not_resolved == 4
    store.record([FeedbackEvent(type="vote", article_id="kb-legacy", resolved=True, event_id="retry-1")] * 2)
    assert store.stats("kb-legacy").resolved == 1  # the same event id twice counts once
    engine.dispose()


def _turn(cid: str, ts: float, action: str, reply_kind: str, n: int) -> list[dict]:
    return [{"event_id": f"{cid}-p{n}", "type": "parse", "conversation_id": cid, "ts": ts,
             "payload": {"text": "你好", "decision": "answer", "action": action}},
            {"event_id": f"{cid}-r{n}", "type": "reply", "conversation_id": cid, "ts": ts,
             "payload": {"text": "…", "kind": reply_kind}}]


def test_quiet_conversations_get_one_outcome(stores):
    events, _ = stores
    now = time.time()
    old = now - 3600
    events.ingest(_turn("answered", old, "answer", "text", 0)
                  + _turn("asked-back", old, "answer", "text", 0) + _turn("asked-back", old + 1, "clarify", "clarify", 1)
                  + _turn("lost", old, "fallback", "fallback", 0)
                  + _turn("still-talking", now - 60, "clarify", "clarify", 0)
                  + _turn("handed", old, "handoff", "handoff", 0)
                  + [{"event_id": "handed-out", "type": "outcome", "conversation_id": "handed", "ts": old,
                      "payload": {"outcome": "handed_off"}}], "default")
    counts = close_idle_conversations(events, idle_s=1800, now=now)
    assert counts == {"contained": 1, "abandoned": 2}
    outcomes = {e.conversation_id: e.payload.outcome for e in events.query("default", types=["outcome"])}
    assert outcomes == {"answered": "contained", "asked-back": "abandoned", "lost": "abandoned",
                        "handed": "handed_off"}
    assert close_idle_conversations(events, idle_s=1800, now=now) == {}  # once only
