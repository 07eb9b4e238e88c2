"""Figures for reports and MLflow runs (matplotlib, headless). Labels are intent names (ASCII)."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np


def confusion_png(gold: Sequence[str], predicted: Sequence[str], max_labels: int = 60, top_pairs: int = 30) -> bytes:
    """A confusion-matrix heatmap; above ``max_labels`` labels, a bar chart of the most-confused pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted(set(gold) | set(predicted))
    if len(labels) <= max_labels:
        index = {label: i for i, label in enumerate(labels)}
        matrix = np.zeros((len(labels), len(labels)), dtype=int)
        for g, p in zip(gold, predicted, strict=True):
            matrix[index[g], index[p]] += 1
        size = max(6.0, 0.22 * len(labels))
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(np.log1p(matrix), cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title("confusion matrix (log scale)")
    else:
        pairs = Counter((g, p) for g, p in zip(gold, predicted, strict=True) if g != p).most_common(top_pairs)
        fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * len(pairs))))
        ax.barh([f"{g} → {p}" for (g, p), _ in pairs][::-1], [n for _, n in pairs][::-1])
        ax.set_xlabel("errors")
        ax.set_title(f"most confused pairs (top {len(pairs)})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
