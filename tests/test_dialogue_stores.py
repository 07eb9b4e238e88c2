"""Tracker stores (memory, SQLite, Redis, PostgreSQL): log + snapshot, locks, lost-update detection, visitors.

Redis and PostgreSQL tests read LINGXI_TEST_REDIS_URL / LINGXI_TEST_POSTGRES_URL and skip when unset
(.ci/run sets both).
"""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from lingxi.dialogue.events import SlotSet, UserUttered
from lingxi.dialogue.stores import (
    ConcurrentUpdate,
    ConversationBusy,
    MemoryTrackerStore,
    RedisTrackerStore,
    SQLTrackerStore,
    build_store,
)
from lingxi.dialogue.tracker import Tracker
from lingxi.dialogue.visitors import Identity, VisitorStore

REDIS_URL = os.environ.get("LINGXI_TEST_REDIS_URL")
PG_URL = os.environ.get("LINGXI_TEST_POSTGRES_URL")


def make_store(kind: str, tmp_path, prefix: str, **kwargs):
    """A store instance; instances made with the same ``prefix`` share data (like two replicas)."""
    if kind == "memory":
        return MemoryTrackerStore(**kwargs)
    if kind == "sqlite":
        return SQLTrackerStore(f"sqlite:///{tmp_path / 'dialogue.db'}", **kwargs)
    if kind == "redis":
        if not REDIS_URL:
            pytest.skip("LINGXI_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/15)")
        return RedisTrackerStore(REDIS_URL, prefix=prefix, **kwargs)
    if not PG_URL:
        pytest.skip("LINGXI_TEST_POSTGRES_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    return SQLTrackerStore(PG_URL, prefix=prefix, **kwargs)


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def kind(request):
    return request.param


@pytest.fixture
def store_factory(kind, tmp_path):
    made = []
    prefix = f"lxtest_{uuid.uuid4().hex[:8]}"

    def factory(**kwargs):
        s = make_store(kind, tmp_path, prefix, **kwargs)
        made.append(s)
        return s

    yield factory
    if made and hasattr(made[0], "drop"):
        made[0].drop()
    for s in made:
        s.close()


def _turn(tracker: Tracker, i: int) -> None:
    tracker.append(UserUttered(ts=float(i), text=f"m{i}"))
    tracker.append(SlotSet(ts=float(i), name=f"k{i}", value=i))


def test_save_load_snapshot_and_full_log(store_factory):
    store = store_factory(snapshot_every=10, keep_turns=2)
    cid = f"c-{uuid.uuid4().hex[:8]}"
    assert store.load(cid) is None and not store.exists(cid)
    for batch in range(5):
        with store.lock(cid):
            t = store.load_or_create(cid)
            for i in range(batch * 6, batch * 6 + 6):
                _turn(t, i)
            store.save(t)
    t = store.load(cid)
    assert t.event_count == 60
    assert len(t.tail) < 20  # loaded from a snapshot, not by replaying 60 events
    assert t.state.slots == {f"k{i}": i for i in range(30)} and t.state.user_turns == 30
    assert len(store.events(cid)) == 60 and store.events(cid, 59)[0] == SlotSet(ts=29.0, name="k29", value=29)
    assert cid in list(store.keys())


def test_a_stale_tracker_cannot_overwrite_newer_events(store_factory):
    store = store_factory()
    cid = f"c-{uuid.uuid4().hex[:8]}"
    t0 = Tracker(cid)
    _turn(t0, 0)
    store.save(t0)
    a, b = store.load(cid), store.load(cid)  # two writers that skipped the lock
    _turn(a, 1)
    _turn(b, 2)
    store.save(a)
    with pytest.raises(ConcurrentUpdate):
        store.save(b)
    assert store.load(cid).state.slots == {"k0": 0, "k1": 1}


def test_lock_is_exclusive_and_times_out(store_factory):
    store = store_factory(wait_s=0.2)
    other = store_factory(wait_s=0.2) if not isinstance(store, MemoryTrackerStore) else store
    cid = f"c-{uuid.uuid4().hex[:8]}"
    held = threading.Event()
    release = threading.Event()

    def holder():
        with store.lock(cid):
            held.set()
            release.wait(10)

    th = threading.Thread(target=holder)
    th.start()
    assert held.wait(10)
    # another thread, and for shared stores another store instance
    with pytest.raises(ConversationBusy), other.lock(cid):
        pass
    release.set()
    th.join()
    with other.lock(cid):
        pass


def test_concurrent_writers_under_the_lock_lose_nothing(store_factory):
    stores = [store_factory(), store_factory()]
    if isinstance(stores[0], MemoryTrackerStore):
        stores = [stores[0], stores[0]]
    cid = f"c-{uuid.uuid4().hex[:8]}"
    n = 25
    errors = []

    def writer(w: int):
        s = stores[w]
        for i in range(n):
            try:
                with s.lock(cid):
                    t = s.load_or_create(cid)
                    t.append(UserUttered(ts=float(i), text=f"w{w}-{i}"))
                    t.append(SlotSet(ts=float(i), name=f"w{w}_{i}", value=i))
                    s.save(t)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    state = stores[0].load(cid).state
    assert len(state.slots) == 2 * n and state.user_turns == 2 * n


def test_visitors_merge_across_channels(store_factory):
    visitors = VisitorStore(store_factory())
    tag = uuid.uuid4().hex[:8]
    app, _ = visitors.resolve([Identity("app_user", f"u{tag}")], f"app-{tag}", "app", now=1.0)
    wx, _ = visitors.resolve([Identity("wechat_openid", f"o{tag}")], f"wx-{tag}", "wechat", now=2.0)
    assert app.visitor_id != wx.visitor_id
    merged, gone = visitors.resolve([Identity("wechat_openid", f"o{tag}"), Identity("app_user", f"u{tag}"),
                                     Identity("phone", "+86 138-0013-8000")], f"wx2-{tag}", "wechat", now=3.0)
    assert merged.visitor_id == app.visitor_id and gone == [wx.visitor_id]
    assert [c.conversation_id for c in merged.conversations] == [f"app-{tag}", f"wx-{tag}", f"wx2-{tag}"]
    assert visitors.get(wx.visitor_id).visitor_id == app.visitor_id  # the merged record points to the survivor
    assert visitors.find(Identity("phone", "13800138000")).visitor_id == app.visitor_id  # normalised phone


def test_build_store_by_url(tmp_path):
    assert isinstance(build_store("memory"), MemoryTrackerStore)
    s = build_store(f"sqlite:///{tmp_path / 'x' / 'd.db'}")
    assert isinstance(s, SQLTrackerStore) and (tmp_path / "x" / "d.db").exists()
    s.close()
