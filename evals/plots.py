"""Figures for eval reports and MLflow runs (matplotlib, headless), each returned as PNG bytes.

Every function takes plain numbers (no models, no files) so reports, MLflow logging and tests
can all draw the same figure. Labels may be Chinese: :func:`lingxi.evals.fonts.setup_matplotlib`
registers a CJK fallback font first.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from .fonts import setup_matplotlib

COLORS = {"in_scope_accuracy": "#1f77b4", "oos_recall": "#d62728", "oos_precision": "#ff7f0e",
          "oos_f1": "#9467bd", "clarify_rate": "#2ca02c", "answer_accuracy": "#17becf", "accuracy": "#1f77b4",
          "macro_f1": "#8c564b"}


def _plt():
    setup_matplotlib()
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return buf.getvalue()


def confusion_png(gold: Sequence[str], predicted: Sequence[str], max_labels: int = 60, top_pairs: int = 30,
                  display: Mapping[str, str] | None = None) -> bytes:
    """A confusion-matrix heatmap; above ``max_labels`` labels, a bar chart of the most-confused pairs.

    ``display`` maps a label to the text shown (e.g. ``login_failed`` → ``login_failed 无法登录``).
    """
    plt = _plt()
    labels_shown = display or {}

    def name(label: str) -> str:
        return labels_shown.get(label, label)

    labels = sorted(set(gold) | set(predicted))
    if len(labels) <= max_labels:
        index = {label: i for i, label in enumerate(labels)}
        matrix = np.zeros((len(labels), len(labels)), dtype=int)
        for g, p in zip(gold, predicted, strict=True):
            matrix[index[g], index[p]] += 1
        size = max(6.0, 0.22 * len(labels))
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(np.log1p(matrix), cmap="Blues")
        ax.set_xticks(range(len(labels)), [name(x) for x in labels], rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), [name(x) for x in labels], fontsize=6)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title("confusion matrix (log scale)")
    else:
        pairs = Counter((g, p) for g, p in zip(gold, predicted, strict=True) if g != p).most_common(top_pairs)
        fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * len(pairs))))
        ax.barh([f"{name(g)} → {name(p)}" for (g, p), _ in pairs][::-1], [n for _, n in pairs][::-1])
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("errors")
        ax.set_title(f"most confused pairs (top {len(pairs)} of {len(labels)} labels; gold → predicted)")
    return _png(fig)


def reliability_png(bins: Sequence[Mapping[str, float]], ece: float | None) -> bytes:
    """Reliability diagram: accuracy per confidence bin against the diagonal, bin sizes below."""
    plt = _plt()
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5.5, 6), height_ratios=[3, 1], sharex=True)
    used = [b for b in bins if b["n"]]
    centers = [(b["lo"] + b["hi"]) / 2 for b in used]
    width = (bins[0]["hi"] - bins[0]["lo"]) * 0.9 if bins else 0.05
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar(centers, [b["accuracy"] for b in used], width=width, color="#1f77b4", alpha=0.8, label="accuracy")
    ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], "o", color="#d62728", ms=3,
            label="mean confidence")
    ax.set_ylim(0, 1)
    ax.set_ylabel("top-1 accuracy (in-scope rows)")
    ax.set_title("reliability diagram" + (f" · ECE {ece:.3f}" if ece is not None else ""))
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(centers, [b["n"] for b in used], width=width, color="#7f7f7f")
    ax_n.set_xlabel("confidence of the top in-scope intent")
    ax_n.set_ylabel("rows")
    ax_n.set_xlim(0, 1)
    return _png(fig)


def confidence_hist_png(correct: Sequence[float], wrong: Sequence[float], oos: Sequence[float],
                        reject: float | None, xlabel: str = "confidence of the top in-scope intent") -> bytes:
    """The score the reject test uses, for right answers, wrong answers and out-of-scope messages."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    edges = np.linspace(0, 1, 41)
    for values, label, color in ((correct, "in-scope, top intent right", "#2ca02c"),
                                 (wrong, "in-scope, top intent wrong", "#d62728"),
                                 (oos, "out-of-scope messages", "#7f7f7f")):
        if len(values):
            ax.hist(values, bins=edges, alpha=0.55, label=f"{label} ({len(values)})", color=color,
                    density=True)
    if reject is not None:
        ax.axvline(reject, color="black", linestyle="--", label=f"reject threshold {reject:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title("confidence: right vs wrong vs out-of-scope")
    ax.legend(fontsize=8)
    return _png(fig)


SWEEP_LINES = ("in_scope_accuracy", "oos_recall", "oos_precision", "oos_f1", "clarify_rate", "answer_accuracy")


def sweep_png(sweeps: Mapping[str, Mapping[str, Sequence[Mapping[str, float | None]]]],
              chosen: Mapping[str, float]) -> bytes:
    """One row of panels per split (``{"val": {"reject": rows, ...}, "test": ...}``), one panel per
    swept parameter; the fitted operating point is marked with a dashed line and dots."""
    plt = _plt()
    splits = [s for s in sweeps if sweeps[s]]
    params = ("reject", "answer", "margin")
    fig, axes = plt.subplots(len(splits), 3, figsize=(13, 3.6 * len(splits)), squeeze=False)
    for r, split in enumerate(splits):
        for c, param in enumerate(params):
            ax = axes[r][c]
            rows = sweeps[split].get(param) or []
            xs = [row[param] for row in rows]
            for key in SWEEP_LINES:
                ys = [row.get(key) for row in rows]
                if not any(y is not None for y in ys):
                    continue
                ax.plot(xs, [np.nan if y is None else y for y in ys], label=key, color=COLORS[key], lw=1.5)
                at = next((row.get(key) for row in rows if row.get("chosen")), None)
                if at is not None:
                    ax.plot([chosen[param]], [at], "o", color=COLORS[key], ms=5)
            ax.axvline(chosen[param], color="black", linestyle="--", lw=1)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(f"{param} threshold" if param != "margin" else "margin (p1 − p2)")
            ax.set_title(f"{split}: sweep of {param} (chosen {chosen[param]:.3f})", fontsize=10)
            if c == 0:
                ax.legend(fontsize=7, loc="lower left")
    return _png(fig)


def curve_png(points: Sequence[Mapping[str, float | None]], x_key: str, x_label: str, title: str,
              keys: Sequence[str] = ("accuracy", "macro_f1", "in_scope_accuracy", "oos_recall"),
              references: Mapping[str, float] | None = None, reference_x: float | None = None) -> bytes:
    """Metric curves over training-set size (learning curve, few-shot). Published ``references`` are
    drawn as stars at ``reference_x`` (e.g. the 10-shot figures at 10), else as horizontal lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [p[x_key] for p in points]
    for key in keys:
        ys = [p.get(key) for p in points]
        if any(y is not None for y in ys):
            ax.plot(xs, [np.nan if y is None else y for y in ys], "o-", label=key, color=COLORS.get(key))
    for i, (label, value) in enumerate((references or {}).items()):
        if reference_x is None:
            ax.axhline(value, linestyle=":", color=f"C{i + 5}", label=f"published: {label} {value:.1%}")
        else:
            ax.plot([reference_x], [value], "*", ms=11, color=f"C{i + 5}", label=f"published: {label} {value:.1%}")
    ax.set_xlabel(x_label)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def recall_at_k_png(curves: Mapping[str, Sequence[float]], title: str = "Recall@k") -> bytes:
    """Recall@k for k = 1..len(curve), one line per retrieval mode."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for mode, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, "o-", label=mode, ms=3)
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def deltas_png(deltas: Sequence[Mapping[str, float]], label_a: str, label_b: str) -> bytes:
    """Forest plot of per-metric deltas (B − A) with their 95% paired-bootstrap intervals."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.5 * len(deltas) + 1)))
    names = [d["metric"] for d in deltas][::-1]
    for i, d in enumerate(deltas[::-1]):
        color = "#2ca02c" if d["ci_low"] > 0 else "#d62728" if d["ci_high"] < 0 else "#7f7f7f"
        ax.errorbar([d["delta"]], [i], xerr=[[d["delta"] - d["ci_low"]], [d["ci_high"] - d["delta"]]],
                    fmt="o", color=color, capsize=3)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(f"{label_b} − {label_a} (95% paired bootstrap CI)")
    ax.set_title("metric deltas")
    return _png(fig)


def wins_losses_png(rows: Sequence[Mapping[str, float]], top: int = 25) -> bytes:
    """Per-intent F1 change (B − A), the largest movers in both directions."""
    plt = _plt()
    moved = sorted((r for r in rows if r["delta_f1"]), key=lambda r: r["delta_f1"])
    shown = moved[:top] + [r for r in moved[-top:] if r not in moved[:top]] if len(moved) > 2 * top else moved
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.26 * len(shown) + 1)))
    ax.barh([r["intent"] for r in shown], [r["delta_f1"] for r in shown],
            color=["#2ca02c" if r["delta_f1"] > 0 else "#d62728" for r in shown])
    ax.axvline(0, color="black", lw=1)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("per-intent F1 change (B − A)")
    ax.set_title(f"per-intent wins and losses ({sum(r['delta_f1'] > 0 for r in moved)} up, "
                 f"{sum(r['delta_f1'] < 0 for r in moved)} down)")
    return _png(fig)


def latency_png(total_ms: Sequence[float], stages_p50: Mapping[str, float]) -> bytes:
    """Histogram of per-message latency (p50/p99 marked) and the median time per pipeline stage."""
    plt = _plt()
    fig, (ax, ax_s) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[3, 2])
    arr = np.asarray(total_ms, dtype=float)
    hi = float(np.percentile(arr, 99.5)) if len(arr) else 1.0
    ax.hist(np.clip(arr, 0, hi), bins=50, color="#1f77b4")
    for q, style in ((50, "--"), (99, ":")):
        if len(arr):
            v = float(np.percentile(arr, q))
            ax.axvline(v, color="black", linestyle=style, label=f"p{q} {v:.1f} ms")
    ax.set_xlabel("ms per message")
    ax.set_ylabel("messages")
    ax.set_title("latency per message")
    ax.legend()
    names = list(stages_p50)
    ax_s.barh(names[::-1], [stages_p50[n] for n in names][::-1], color="#ff7f0e")
    ax_s.set_xlabel("median ms")
    ax_s.set_title("time per stage (median)")
    return _png(fig)


def conversations_png(rows: Sequence[Mapping[str, object]]) -> bytes:
    """Turns passed / failed per test conversation (failed conversations first)."""
    plt = _plt()
    rows = sorted(rows, key=lambda r: (r["failed_turns"] == 0, str(r["name"])))[:60]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.24 * len(rows) + 1)))
    names = [str(r["name"]) for r in rows][::-1]
    ok = [int(r["passed_turns"]) for r in rows][::-1]
    bad = [int(r["failed_turns"]) for r in rows][::-1]
    ax.barh(names, ok, color="#2ca02c", label="turns passed")
    ax.barh(names, bad, left=ok, color="#d62728", label="turns failed")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("turns")
    ax.set_title("conversation tests")
    ax.legend(fontsize=8)
    return _png(fig)
