"""Small helpers shared by the benchmark scripts (ports, latency summaries)."""

from __future__ import annotations

import socket

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latency_summary(ms: list[float]) -> dict[str, float]:
    """Median, p99 and mean in milliseconds, rounded for reports."""
    arr = np.asarray(ms)
    return {"p50_ms": round(float(np.median(arr)), 3), "p99_ms": round(float(np.percentile(arr, 99)), 3),
            "mean_ms": round(float(arr.mean()), 3), "n": int(len(arr))}
