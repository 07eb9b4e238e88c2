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
