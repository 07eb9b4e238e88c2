"""Disk cache of embeddings for evals: re-running a benchmark with another head costs no encoding.

Keyed by the encoder's name, the kind and a hash of the exact (normalised) texts, so a different
model, prefix or normalisation can never be served stale vectors.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lingxi.nlu.encoders import ConcatEncoder, Encoder, Kind


def default_cache_dir() -> Path:
    return Path(os.environ.get("LINGXI_HOME", ".lingxi")) / "cache" / "embeddings"


def cached_encode(encoder: Encoder, texts: Sequence[str], kind: Kind = "query",
                  cache_dir: Path | None = None) -> np.ndarray:
    cache_dir = cache_dir or default_cache_dir()
    if isinstance(encoder, ConcatEncoder) and len(encoder.encoders) > 1:
        return encoder.combine([cached_encode(e, texts, kind, cache_dir) for e in encoder.encoders])
    digest = hashlib.sha256()
    digest.update(encoder.name.encode())
    digest.update(kind.encode())
    for t in texts:
        digest.update(t.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    path = cache_dir / f"{digest.hexdigest()[:24]}.npy"
    if path.is_file():
        arr = np.load(path)
        if arr.shape == (len(texts), encoder.dim):
            return arr
    arr = encoder.encode(list(texts), kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
    return arr
