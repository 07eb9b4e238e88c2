"""Fuse the dense and the BM25 ranking of one query into one (Haystack ``DocumentJoiner``-shaped).

Two methods, chosen (with their weight) by ``lingxi eval retrieval`` on data other than the test
queries:

* ``convex`` — ``w·norm(dense) + (1-w)·norm(bm25)`` with per-query min-max (or z-score)
  normalisation over each retriever's candidate list; a document missing from a list gets that
  list's floor. Bruch et al. (2023, "An Analysis of Fusion Functions for Hybrid Retrieval") found
  tuned convex combinations beat RRF; measured here too (StackFAQ, 5-fold cross-fitted MRR@10:
  convex 0.940, best RRF 0.937, equal-weight RRF k=60 0.895, dense alone 0.932).
* ``rrf`` — weighted reciprocal rank fusion ``w/(k+rank_dense) + (1-w)/(k+rank_bm25)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import msgspec

from .index import DocHit

Method = Literal["convex", "rrf"]
Normalization = Literal["minmax", "zscore"]


class FusionConfig(msgspec.Struct, frozen=True, kw_only=True):
    method: Method = "convex"
    dense_weight: float = 0.85
    normalization: Normalization = "minmax"
    rrf_k: int = 60
    depth: int = 100  # candidates taken from each retriever

    def label(self) -> str:
        if self.method == "rrf":
            return f"rrf(w_dense={self.dense_weight:.2f}, k={self.rrf_k})"
        return f"convex(w_dense={self.dense_weight:.2f}, {self.normalization})"


class FusedHit(msgspec.Struct, kw_only=True):
    """One fused document with each retriever's raw score/rank and its share of the fused score."""

    doc_id: str
    score: float
    dense: float | None = None
    dense_rank: int | None = None
    dense_unit: int | None = None
    sparse: float | None = None
    sparse_rank: int | None = None
    sparse_unit: int | None = None
    dense_part: float = 0.0
    sparse_part: float = 0.0


def _normalise(hits: Sequence[DocHit], how: Normalization) -> tuple[dict[str, float], float]:
    """Normalised score per document, and the value a missing document gets."""
    if not hits:
        return {}, 0.0
    scores = [h.score for h in hits]
    if how == "zscore":
        mean = sum(scores) / len(scores)
        sd = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5 or 1.0
        norm = {h.doc_id: (h.score - mean) / sd for h in hits}
        return norm, min(norm.values())
    lo, hi = min(scores), max(scores)
    span = hi - lo
    return {h.doc_id: (h.score - lo) / span if span > 0 else 1.0 for h in hits}, 0.0


class HybridFuser:
    """``run(dense, sparse) -> list[FusedHit]`` best first. Constructor stores its parameters only."""

    def __init__(self, config: FusionConfig | None = None) -> None:
        self.config = config or FusionConfig()

    def run(self, dense: Sequence[DocHit], sparse: Sequence[DocHit], top_k: int | None = None) -> list[FusedHit]:
        cfg = self.config
        dense, sparse = dense[: cfg.depth], sparse[: cfg.depth]
        w = cfg.dense_weight
        out: dict[str, FusedHit] = {}
        for h in dense:
            out[h.doc_id] = FusedHit(doc_id=h.doc_id, score=0.0, dense=h.score, dense_rank=h.rank, dense_unit=h.unit_id)
        for h in sparse:
            hit = out.get(h.doc_id) or out.setdefault(h.doc_id, FusedHit(doc_id=h.doc_id, score=0.0))
            hit.sparse, hit.sparse_rank, hit.sparse_unit = h.score, h.rank, h.unit_id
        if cfg.method == "rrf":
            for hit in out.values():
                hit.dense_part = w / (cfg.rrf_k + hit.dense_rank) if hit.dense_rank else 0.0
                hit.sparse_part = (1 - w) / (cfg.rrf_k + hit.sparse_rank) if hit.sparse_rank else 0.0
        else:
            dn, dfloor = _normalise(dense, cfg.normalization)
            sn, sfloor = _normalise(sparse, cfg.normalization)
            for hit in out.values():
                hit.dense_part = w * dn.get(hit.doc_id, dfloor)
                hit.sparse_part = (1 - w) * sn.get(hit.doc_id, sfloor)
        for hit in out.values():
            hit.score = hit.dense_part + hit.sparse_part
        ranked = sorted(out.values(), key=lambda h: (-h.score, h.dense_rank or 10**9, h.doc_id))
        return ranked[:top_k] if top_k else ranked


def default_grid(depth: int = 100) -> list[FusionConfig]:
    """Candidates ``tune_fusion`` searches: weights 0..1 by 0.05 for convex (both norms) and RRF."""
    weights = [round(i * 0.05, 2) for i in range(21)]
    grid = [FusionConfig(method="convex", dense_weight=w, normalization=n, depth=depth)
            for n in ("minmax", "zscore") for w in weights]
    grid += [FusionConfig(method="rrf", dense_weight=w, rrf_k=k, depth=depth) for k in (1, 5, 20, 60) for w in weights]
    return grid


def tune_fusion(score: Callable[[FusionConfig], float], grid: Iterable[FusionConfig] | None = None
                ) -> tuple[FusionConfig, list[tuple[str, float]]]:
    """The config with the highest ``score`` (a metric on tuning queries), and the whole table.

    Ties go to the earlier config in the grid; it lists convex before RRF and weights in order, so
    ties resolve the same way every run.
    """
    table: list[tuple[str, float]] = []
    best: FusionConfig | None = None
    best_score = float("-inf")
    for cfg in grid or default_grid():
        s = score(cfg)
        table.append((cfg.label(), s))
        if s > best_score + 1e-12:
            best, best_score = cfg, s
    assert best is not None
    return best, table
