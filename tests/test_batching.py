"""Micro-batching and the embedding cache, with the real demo encoders (e5 ⊕ USE)."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from lingxi.nlu.batching import BatchingEncoder
from lingxi.nlu.embedding_cache import CachingEncoder
from lingxi.nlu.parse import ParseContext

TEXTS = ["我的订单什么时候发货", "怎么申请退款", "app登录不了", "密码忘了怎么办", "where is my parcel",
         "可以开发票吗", "优惠券怎么用", "账号被冻结了", "转人工", "快递到哪了", "退货地址是哪里", "我要投诉",
         "能便宜点吗", "发错货了", "修改收货地址", "会员有什么权益"]


def _concurrently(fn, args: list) -> list:
    """Call ``fn`` on every arg from its own thread, all released at the same moment."""
    barrier = threading.Barrier(len(args))
    out: list = [None] * len(args)

    def run(i: int) -> None:
        barrier.wait()
        out[i] = fn(args[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_concurrent_calls_share_batches_and_get_their_own_rows(demo_encoder):
    batches: list[int] = []
    enc = BatchingEncoder(demo_encoder, max_batch=8, max_wait_ms=2.0, on_batch=lambda n, s: batches.append(n))
    try:
        got = _concurrently(lambda t: enc.encode([t], "query"), TEXTS)
    finally:
        enc.close()
    expected = demo_encoder.encode(TEXTS, "query")
    for i, row in enumerate(got):
        assert row.shape == (1, demo_encoder.dim)
        np.testing.assert_allclose(row[0], expected[i], atol=1e-4)  # each caller got its own text's row
    assert sum(batches) == len(TEXTS)
    assert max(batches) <= 8
    assert len(batches) < len(TEXTS), f"no coalescing happened: {batches}"


def test_an_idle_batcher_adds_no_wait(demo_encoder):
    enc = BatchingEncoder(demo_encoder, max_batch=32, max_wait_ms=400.0)
    try:
        enc.encode(["热身"], "query")
        t0 = time.perf_counter()
        enc.encode(["我的订单什么时候发货"], "query")
        elapsed = time.perf_counter() - t0
    finally:
        enc.close()
    assert elapsed < 0.2, f"a lone request waited {elapsed * 1000:.0f} ms (max_wait is 400 ms)"


def test_queries_and_passages_in_one_batch_are_encoded_by_kind(demo_encoder):
    enc = BatchingEncoder(demo_encoder, max_batch=16)
    jobs = [(t, "query" if i % 2 else "passage") for i, t in enumerate(TEXTS[:8])]
    try:
        got = _concurrently(lambda job: enc.encode([job[0]], job[1]), jobs)
    finally:
        enc.close()
    for (text, kind), row in zip(jobs, got, strict=True):
        np.testing.assert_allclose(row[0], demo_encoder.encode([text], kind)[0], atol=1e-4)


class _Failing:
    """An encoder that breaks on one text, to check that errors reach exactly the callers concerned."""

    name, dim = "failing", 4

    def encode(self, texts, kind="query"):
        if "boom" in texts:
            raise RuntimeError("engine failure")
        return np.ones((len(texts), 4), dtype=np.float32)


def test_an_encoder_error_reaches_every_caller_of_its_batch_and_the_batcher_survives():
    enc = BatchingEncoder(_Failing(), max_batch=4)

    def call(text):
        try:
            return enc.encode([text])
        except RuntimeError as exc:
            return exc

    try:
        results = _concurrently(call, ["a", "boom", "b", "c"])
        assert any(isinstance(r, RuntimeError) for r in results)
        assert enc.encode(["after"]).shape == (1, 4)  # the worker thread is still alive
    finally:
        enc.close()
    with pytest.raises(RuntimeError, match="closed"):
        enc.encode(["x"])


def test_bad_arguments_are_refused(demo_encoder):
    with pytest.raises(ValueError):
        BatchingEncoder(demo_encoder, max_batch=0)
    with pytest.raises(ValueError):
        BatchingEncoder(demo_encoder, max_wait_ms=-1)
    enc = BatchingEncoder(demo_encoder)
    with pytest.raises(ValueError):
        enc.encode(["x"], "document")  # type: ignore[arg-type]
    assert enc.encode([], "query").shape == (0, demo_encoder.dim)


def test_cache_answers_repeats_from_memory_and_evicts_the_least_recent(demo_encoder):
    lookups: list[tuple[int, int]] = []
    cache = CachingEncoder(demo_encoder, size=2, on_lookup=lambda h, m: lookups.append((h, m)))
    first = cache.encode(["退款", "发货"], "query")
    np.testing.assert_allclose(first, demo_encoder.encode(["退款", "发货"], "query"), atol=1e-5)
    again = cache.encode(["发货", "退款"], "query")  # both hits, order follows the call
    np.testing.assert_array_equal(again, first[::-1])
    assert (cache.hits, cache.misses) == (2, 2)
    cache.encode(["退款"], "passage")  # another kind is another entry: evicts 发货 (least recent)
    cache.encode(["发货"], "query")
    assert lookups == [(0, 2), (2, 0), (0, 1), (0, 1)]
    assert cache.entries == 2
    assert cache.hit_rate == pytest.approx(2 / 6)
    out = cache.encode(["发货"], "query")
    out[0, 0] += 1.0  # a caller changing its copy...
    assert cache.encode(["发货"], "query")[0, 0] == pytest.approx(out[0, 0] - 1.0)  # ...leaves the cache intact


def test_cache_of_size_zero_is_a_pass_through(demo_encoder):
    cache = CachingEncoder(demo_encoder, size=0)
    cache.encode(["退款"]), cache.encode(["退款"])
    assert (cache.hits, cache.entries) == (0, 0)
    assert CachingEncoder(BatchingEncoder(demo_encoder), 8).thread_safe
    assert not CachingEncoder(demo_encoder, 8).thread_safe


def test_pipeline_with_the_serving_encoder_parses_like_the_plain_one(trained_demo, demo_encoder, demo_pipeline):
    from lingxi.serving.loading import pipeline_from_bundle, serving_encoder

    batches: list[int] = []
    enc = serving_encoder(demo_encoder, batch_max=8, batch_wait_ms=2.0, cache_size=64,
                          on_batch=lambda n, s: batches.append(n))
    pipeline = pipeline_from_bundle(trained_demo.bundle, enc)
    texts = TEXTS + TEXTS[:4]  # four repeats: served from the cache
    got = _concurrently(lambda t: pipeline.parse(t, ParseContext()), texts)
    for text, result in zip(texts, got, strict=True):
        plain = demo_pipeline.parse(text, ParseContext())
        assert (result.decision, result.intent.name) == (plain.decision, plain.intent.name), text
        assert result.intent.confidence == pytest.approx(plain.intent.confidence, abs=2e-3)
    hits_before = enc.hits
    for text in TEXTS[:4]:
        pipeline.parse(text, ParseContext())
    assert enc.hits == hits_before + 4  # seen before: answered from the cache, no batch
    assert sum(batches) == enc.misses
    enc.inner.close()


def test_event_loop_callers_share_batches_through_aencode(demo_encoder):
    """``aencode`` callers on one loop are coalesced like threads and each gets its own row."""
    import asyncio

    batches: list[int] = []
    enc = BatchingEncoder(demo_encoder, max_batch=8, max_wait_ms=2.0, on_batch=lambda n, s: batches.append(n))

    async def all_at_once():
        return await asyncio.gather(*(enc.aencode([t], "query") for t in TEXTS))

    try:
        got = asyncio.run(all_at_once())
    finally:
        enc.close()
    expected = demo_encoder.encode(TEXTS, "query")
    for i, row in enumerate(got):
        np.testing.assert_allclose(row[0], expected[i], atol=1e-4)
    assert sum(batches) == len(TEXTS)
    assert len(batches) < len(TEXTS), f"no coalescing happened: {batches}"


def test_aencode_raises_the_encoder_error_and_survives_a_cancelled_caller():
    import asyncio

    enc = BatchingEncoder(_Failing(), max_batch=4)

    async def run():
        with pytest.raises(RuntimeError, match="engine failure"):
            await enc.aencode(["boom"])
        gone = asyncio.ensure_future(enc.aencode(["a"]))
        await asyncio.sleep(0)
        gone.cancel()  # a client that went away while its batch was queued
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await enc.aencode(["after"])

    try:
        assert asyncio.run(run()).shape == (1, 4)
    finally:
        enc.close()


def test_async_pipeline_parses_like_the_sync_one_and_the_cache_serves_it(trained_demo, demo_encoder, demo_pipeline):
    import asyncio

    from lingxi.serving.loading import pipeline_from_bundle, serving_encoder

    enc = serving_encoder(demo_encoder, batch_max=8, batch_wait_ms=2.0, cache_size=64)
    pipeline = pipeline_from_bundle(trained_demo.bundle, enc)
    texts = TEXTS + ["/order_status"]  # and a button payload, which is never encoded

    async def all_at_once():
        return await asyncio.gather(*(pipeline.aparse(t, ParseContext()) for t in texts))

    async def repeats():
        return [await pipeline.aparse(t, ParseContext()) for t in TEXTS[:4]]

    try:
        got = asyncio.run(all_at_once())
        misses = enc.misses
        again = asyncio.run(repeats())
    finally:
        enc.inner.close()
    for text, result in zip(texts, got, strict=True):
        plain = demo_pipeline.parse(text, ParseContext())
        assert (result.decision, result.intent.name, result.match.match_type) == \
            (plain.decision, plain.intent.name, plain.match.match_type), text
        assert result.intent.confidence == pytest.approx(plain.intent.confidence, abs=2e-3)
        assert [e.value for e in result.entities] == [e.value for e in plain.entities]
    assert misses == len(TEXTS)  # every text encoded once, the button payload not at all
    assert (enc.misses, enc.hits) == (misses, 4)  # seen before: answered from the cache
    assert [r.intent.name for r in again] == [r.intent.name for r in got[:4]]
    plain_encoder_pipeline = pipeline_from_bundle(trained_demo.bundle, demo_encoder)  # no aencode: a worker thread
    assert asyncio.run(plain_encoder_pipeline.aparse("怎么申请退款", ParseContext())).intent.name == \
        demo_pipeline.parse("怎么申请退款", ParseContext()).intent.name


def test_hot_reload_keeps_working_with_the_batching_encoder(trained_demo, demo_encoder, tmp_path):
    """A reload swaps the pipeline while requests are in flight; the wrapped encoder is reused."""
    from lingxi.serving.loading import ModelHolder, serving_encoder

    models = tmp_path / "models"
    src = trained_demo.path
    shutil.copytree(src, models / "demo-shop" / src.name)
    wrapped: list = []

    def wrap(encoder):
        wrapped.append(serving_encoder(encoder, batch_max=8, cache_size=32))
        return wrapped[-1]

    swaps: list = []
    holder = ModelHolder(models, "demo-shop", wrap_encoder=wrap, on_swap=swaps.append)
    holder._encoders[repr(trained_demo.bundle.encoders)] = wrap(demo_encoder)  # the session's weights
    first = holder.load_latest()
    assert first is not None and swaps == [first]

    stop = threading.Event()
    errors: list[BaseException] = []
    served: list[str] = []

    def traffic() -> None:
        while not stop.is_set():
            try:
                served.append(holder.current.pipeline.parse("怎么申请退款", ParseContext()).decision)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    newer = models / "demo-shop" / (src.name + "-z")  # sorts after the first: the newest bundle
    shutil.copytree(src, newer)
    second = holder.load_latest()
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[:3]
    assert second is not None and second.path == newer and swaps == [first, second]
    assert second.pipeline is not first.pipeline
    assert second.pipeline.encoder is first.pipeline.encoder is wrapped[0]  # same batcher and cache
    assert len(wrapped) == 1 and served and set(served) == {served[0]}
    wrapped[0].inner.close()


class _SlowReplica:
    """A replica that takes ``per_text`` seconds per text and records which thread ran each batch, when."""

    name, dim = "slow", 3

    def __init__(self, tag: int, per_text: float = 0.03) -> None:
        self.tag, self.per_text = tag, per_text
        self.calls: list[tuple[str, float, float, int]] = []  # (thread, start, end, texts)

    def encode(self, texts, kind="query"):
        start = time.perf_counter()
        time.sleep(self.per_text * len(texts))
        self.calls.append((threading.current_thread().name, start, time.perf_counter(), len(texts)))
        return np.array([[self.tag, len(t), 0.0] for t in texts], dtype=np.float32)


def test_replicas_encode_concurrently_each_on_its_own_thread():
    replicas = [_SlowReplica(0), _SlowReplica(1)]
    enc = BatchingEncoder(replicas, max_batch=32, max_wait_ms=0.0)
    texts = ["x" * (i + 1) for i in range(12)]
    try:
        got = _concurrently(lambda t: enc.encode([t]), texts)
    finally:
        enc.close()
    for text, row in zip(texts, got, strict=True):
        assert row.shape == (1, 3) and row[0, 1] == len(text)  # every caller got its own text's row
    assert all(r.calls for r in replicas), "one replica never ran"
    for r in replicas:
        assert len({thread for thread, *_ in r.calls}) == 1  # a replica is only called from its own thread
    a, b = ([(s, e) for _, s, e, _ in r.calls] for r in replicas)
    assert any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b), "the replicas never encoded at the same time"
    assert sum(n for r in replicas for *_, n in r.calls) == len(texts)


def test_replicas_must_be_the_same_encoder(demo_encoder):
    with pytest.raises(ValueError, match="same encoder"):
        BatchingEncoder([demo_encoder, _SlowReplica(0)])
    with pytest.raises(ValueError, match="at least one"):
        BatchingEncoder([])


def test_encoder_replicas_setting(monkeypatch):
    from lingxi.serving.settings import SettingsError, load_settings

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert load_settings(workers=1).encoder_replicas == 2  # one engine per core
    assert load_settings(workers=2).encoder_replicas == 1  # two processes share the two cores
    monkeypatch.setenv("LINGXI_ENCODE_REPLICAS", "3")
    assert load_settings().encoder_replicas == 3
    monkeypatch.setenv("LINGXI_ENCODE_REPLICAS", "-1")
    with pytest.raises(SettingsError, match="encode_replicas"):
        load_settings()


def test_a_free_worker_leaves_the_busy_ones_their_share_of_the_queue():
    """Two messages queued while both engines are busy: the first engine to free up takes one, not
    both (a CPU batch costs the sum of its texts, so taking both would answer the first one late)."""
    replicas = [_SlowReplica(0, per_text=0.05), _SlowReplica(1, per_text=0.05)]
    enc = BatchingEncoder(replicas, max_batch=32, max_wait_ms=0.0)
    try:
        short = threading.Thread(target=enc.encode, args=(["a"],))  # one engine: 50 ms
        long = threading.Thread(target=enc.encode, args=(["b", "b", "b", "b"],))  # the other: 200 ms
        short.start()
        long.start()
        time.sleep(0.02)  # both engines busy now
        got = _concurrently(lambda t: enc.encode([t]), ["c", "d"])
        short.join()
        long.join()
    finally:
        enc.close()
    assert [row[0, 1] for row in got] == [1.0, 1.0]
    sizes = sorted(n for r in replicas for *_, n in r.calls)
    assert sizes == [1, 1, 1, 4], f"queued messages were batched together: {sizes}"


def test_gil_switch_interval_setting_reaches_the_worker_process(monkeypatch, tmp_path):
    import json
    import sys

    from lingxi.serving import server
    from lingxi.serving.settings import SettingsError, load_settings

    monkeypatch.chdir(tmp_path)
    assert load_settings().gil_switch_interval_ms == 0.5
    monkeypatch.setenv("LINGXI_GIL_SWITCH_INTERVAL_MS", "0")
    with pytest.raises(SettingsError, match="gil_switch_interval_ms"):
        load_settings()
    monkeypatch.setenv("LINGXI_GIL_SWITCH_INTERVAL_MS", "2")
    monkeypatch.setenv(server.WORKER_ENV, json.dumps({"config": None, "overrides": {"home": str(tmp_path)}}))
    before = sys.getswitchinterval()
    try:
        server.worker_app()
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)
