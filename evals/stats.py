"""Paired comparisons of two models on the same examples: McNemar and paired bootstrap.

Used by the promotion gate (challenger vs champion) and by run comparison. Paired tests matter:
two models scored on the same 300 utterances differ far less by chance than two independent
samples would, so an unpaired interval would hide real regressions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest


@dataclass(frozen=True)
class McNemar:
    only_a: int  # rows A got right and B got wrong
    only_b: int
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact (binomial) McNemar test on the discordant pairs."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)
    return McNemar(only_a, only_b, p)


@dataclass(frozen=True)
class Delta:
    metric: str
    a: float
    b: float
    delta: float  # b - a
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(
    metric: str,
    fn: Callable[[np.ndarray], tuple[float, float]],
    n: int,
    rounds: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Delta:
    """CI of ``b - a`` where ``fn(index) -> (a, b)`` computes the metric of both on a resample."""
    rng = np.random.default_rng(seed)
    full = np.arange(n)
    a, b = fn(full)
    deltas = np.empty(rounds)
    for r in range(rounds):
        sa, sb = fn(rng.integers(0, n, n))
        deltas[r] = sb - sa
    lo, hi = np.nanquantile(deltas, [alpha / 2, 1 - alpha / 2])
    return Delta(metric, float(a), float(b), float(b - a), float(lo), float(hi))


def rate_on(mask: np.ndarray, hits: np.ndarray) -> Callable[[np.ndarray], float]:
    """Metric helper: share of ``hits`` among rows where ``mask`` holds, for a resample index."""
    def f(idx: np.ndarray) -> float:
        m = mask[idx]
        return float(hits[idx][m].mean()) if m.any() else float("nan")
    return f
