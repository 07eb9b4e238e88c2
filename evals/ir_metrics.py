"""Ranking metrics for one query (binary relevance), averaged by the caller.

``recall@k`` is the BEIR definition: the share of a query's relevant documents found in the top k
(with one relevant document it equals hit@k). ``hit@k`` (at least one relevant in the top k) is
reported beside it because the BQ view has several relevant documents per query.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CUTOFFS = (1, 5, 10)
METRIC_KEYS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "hit@1", "hit@5", "hit@10")


def query_metrics(ranked: Sequence[str], relevant: set[str] | frozenset[str]) -> dict[str, float]:
    if not relevant:
        raise ValueError("a query needs at least one relevant document")
    flags = [d in relevant for d in ranked[:10]]
    out: dict[str, float] = {}
    for k in CUTOFFS:
        found = sum(flags[:k])
        out[f"recall@{k}"] = found / len(relevant)
        out[f"hit@{k}"] = 1.0 if found else 0.0
    first = next((i for i, f in enumerate(flags) if f), None)
    out["mrr@10"] = 0.0 if first is None else 1.0 / (first + 1)
    dcg = sum(1.0 / math.log2(i + 2) for i, f in enumerate(flags) if f)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    out["ndcg@10"] = dcg / ideal
    return out


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {k: 0.0 for k in METRIC_KEYS}
    return {k: sum(r[k] for r in rows) / len(rows) for k in METRIC_KEYS}


def metrics_from_ranks(ranks: Sequence[int], n_relevant: int) -> dict[str, float]:
    """:func:`query_metrics` from the 1-based ranks of a query's relevant documents in its top 10
    (what ``per_query.jsonl`` stores), so runs can be re-scored without their rankings."""
    if n_relevant < 1:
        raise ValueError("a query needs at least one relevant document")
    top = sorted(r for r in ranks if 1 <= r <= 10)
    out: dict[str, float] = {}
    for k in CUTOFFS:
        found = sum(1 for r in top if r <= k)
        out[f"recall@{k}"] = found / n_relevant
        out[f"hit@{k}"] = 1.0 if found else 0.0
    out["mrr@10"] = 1.0 / top[0] if top else 0.0
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(n_relevant, 10)))
    out["ndcg@10"] = sum(1.0 / math.log2(r + 1) for r in top) / ideal
    return out


def recall_curve(ranks: Sequence[Sequence[int]], n_relevant: Sequence[int], depth: int = 10) -> list[float]:
    """Mean recall@k for k = 1..depth over queries."""
    if not ranks:
        return [0.0] * depth
    return [sum(sum(1 for r in rs if r <= k) / n for rs, n in zip(ranks, n_relevant, strict=True)) / len(ranks)
            for k in range(1, depth + 1)]

