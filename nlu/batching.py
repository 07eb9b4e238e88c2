"""Micro-batching: concurrent ``encode`` calls are coalesced into batches run by one worker thread.

:class:`BatchingEncoder` wraps any :class:`~lingxi.nlu.encoders.Encoder` and implements the same
protocol, so the NLU pipeline does not change. Many request threads call ``encode`` at once; each
call is queued and waits, while a single worker thread takes everything queued (up to
``max_batch`` texts), encodes it with one call into the wrapped encoder and hands every caller its
rows. Why one thread: the C/numpy engines are not re-entrant, one batch streams the weights once for
all its texts, and the thread releases the GIL inside the engine, so request threads keep parsing
on the other core meanwhile.

Waiting policy: a call that finds the worker idle runs at once (no added latency for a lone
request). Only when requests arrived while the previous batch was running — the service is under
load — does the worker linger up to ``max_wait_ms`` for the batch to fill.
"""

from __future__ import annotations

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


class BatchingEncoder:
    """An :class:`Encoder` whose concurrent callers share batches; safe to call from many threads."""

    thread_safe = True  # callers must not serialise around it (that would defeat the batching)

    def __init__(self, inner: Encoder, max_batch: int = 32, max_wait_ms: float = 2.0,
                 on_batch: BatchObserver | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._queued_texts = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ callers
    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        _check_kind(kind)
        job = _Job(list(texts), kind)
        if not job.texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._cond:
            if self._closed:
                raise RuntimeError("encoder batcher is closed")
            if self._thread is None:  # started on first use: constructing one costs nothing
                self._thread = threading.Thread(target=self._loop, name="encoder-batcher", daemon=True)
                self._thread.start()
            self._queue.append(job)
            self._queued_texts += len(job.texts)
            self._cond.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def close(self) -> None:
        """Finish what is queued, then stop the worker thread. Later calls raise ``RuntimeError``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    # ------------------------------------------------------------------ the worker thread
    def _loop(self) -> None:
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
                batch = self._take()
            self._run(batch)

    def _take(self) -> list[_Job]:
        """Queued jobs in arrival order, up to ``max_batch`` texts (always at least one job)."""
        batch = [self._queue.popleft()]
        size = len(batch[0].texts)
        while self._queue and size + len(self._queue[0].texts) <= self.max_batch:
            job = self._queue.popleft()
            size += len(job.texts)
            batch.append(job)
        self._queued_texts -= size
        return batch

    def _run(self, batch: list[_Job]) -> None:
        t0 = time.perf_counter()
        size = 0
        for kind in dict.fromkeys(job.kind for job in batch):  # one inner call per kind, in order
            jobs = [job for job in batch if job.kind == kind]
            texts = [t for job in jobs for t in job.texts]
            size += len(texts)
            try:
                rows = self.inner.encode(texts, kind)  # type: ignore[arg-type]
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
        if self.on_batch is not None:
            with contextlib.suppress(Exception):  # a metrics hook must never stop the encoder
                self.on_batch(size, time.perf_counter() - t0)
