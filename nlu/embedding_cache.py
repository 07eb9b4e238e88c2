"""An LRU cache of embeddings in front of an encoder: customer-service traffic repeats itself.

During a promotion or an outage many customers type the same few messages ("退款", "怎么还没发货"),
and the pipeline encodes the *normalised* text, so full-width, traditional and case variants share
one entry. :class:`CachingEncoder` implements the :class:`~lingxi.nlu.encoders.Encoder` protocol:
hits are answered from memory, misses go to the wrapped encoder (in one call), and ``hits`` /
``misses`` feed the hit-rate metric. Memory: ``size × dim × 4`` bytes (4,096 entries of the default
896-d e5 ⊕ USE embedding ≈ 15 MB).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from .encoders import Encoder, Kind

LookupObserver = Callable[[int, int], None]  # (hits, misses) of one encode call


class CachingEncoder:
    """Least-recently-used embeddings keyed by (kind, text). ``size == 0`` caches nothing."""

    def __init__(self, inner: Encoder, size: int = 4096, on_lookup: LookupObserver | None = None) -> None:
        if size < 0:
            raise ValueError("cache size must not be negative")
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.size = size
        self.on_lookup = on_lookup
        # thread-safe exactly when the wrapped encoder is: misses are passed straight through
        self.thread_safe = bool(getattr(inner, "thread_safe", False))
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    @property
    def entries(self) -> int:  # not __len__: an empty cache must still be a truthy encoder
        return len(self._rows)

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        texts = list(texts)
        if self.size == 0 or not texts:
            return self.inner.encode(texts, kind)
        found, missing = self._lookup(texts, kind)
        fresh = self.inner.encode([texts[i] for i in missing], kind) if missing else None
        return self._complete(texts, kind, found, missing, fresh)

    async def aencode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        """``encode`` for a caller on an event loop; misses go to the inner encoder's ``aencode``
        (or, when it has none, to its ``encode`` in a worker thread)."""
        texts = list(texts)
        if self.size == 0 or not texts:
            return await self._inner_aencode(texts, kind)
        found, missing = self._lookup(texts, kind)
        fresh = await self._inner_aencode([texts[i] for i in missing], kind) if missing else None
        return self._complete(texts, kind, found, missing, fresh)

    async def _inner_aencode(self, texts: list[str], kind: Kind) -> np.ndarray:
        inner_async = getattr(self.inner, "aencode", None)
        if inner_async is not None:
            return await inner_async(texts, kind)
        return await asyncio.to_thread(self.inner.encode, texts, kind)

    def _lookup(self, texts: list[str], kind: str) -> tuple[dict[int, np.ndarray], list[int]]:
        found: dict[int, np.ndarray] = {}
        with self._lock:
            for i, text in enumerate(texts):
                row = self._rows.get((kind, text))
                if row is not None:
                    self._rows.move_to_end((kind, text))
                    found[i] = row
        return found, [i for i in range(len(texts)) if i not in found]

    def _complete(self, texts: list[str], kind: str, found: dict[int, np.ndarray], missing: list[int],
                  fresh: np.ndarray | None) -> np.ndarray:
        """Store the freshly encoded rows, count the lookup, assemble the rows in input order."""
        if missing:
            assert fresh is not None
            with self._lock:
                for i, row in zip(missing, fresh, strict=True):
                    row = np.array(row, dtype=np.float32)  # own copy: the batch array is not kept alive
                    row.flags.writeable = False  # shared between callers: nobody may change it
                    found[i] = row
                    self._rows[(kind, texts[i])] = row
                    self._rows.move_to_end((kind, texts[i]))
                while len(self._rows) > self.size:
                    self._rows.popitem(last=False)
        hits = len(texts) - len(missing)
        with self._lock:
            self.hits += hits
            self.misses += len(missing)
        if self.on_lookup is not None:
            self.on_lookup(hits, len(missing))
        return np.vstack([found[i] for i in range(len(texts))])

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
