"""Intent metrics over one eval set. Gold label ``oos`` marks out-of-scope rows.

The predicted label of a row is ``oos`` when the model rejected it, otherwise its top intent —
a clarification counts as its top candidate here; how often the model clarifies is reported
separately (``clarify_rate``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

OOS = "oos"


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width bins (Guo et al. 2017)."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(ece)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per equal-width confidence bin: rows, mean confidence, accuracy (the reliability diagram's data;
    the same bins as :func:`expected_calibration_error`)."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = idx == b
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(mask.sum()),
                    "confidence": float(confidence[mask].mean()) if mask.any() else 0.0,
                    "accuracy": float(correct[mask].mean()) if mask.any() else 0.0})
    return out


def most_confused(gold: Sequence[str], predicted: Sequence[str], texts: Sequence[str],
                  top: int = 50) -> list[dict[str, object]]:
    """The most frequent gold → predicted error pairs, each with one example text."""
    counts = Counter((g, p) for g, p in zip(gold, predicted, strict=True) if g != p)
    example: dict[tuple[str, str], str] = {}
    for g, p, t in zip(gold, predicted, texts, strict=True):
        if g != p:
            example.setdefault((g, p), t)
    return [{"gold": g, "predicted": p, "n": n, "example": example[(g, p)]} for (g, p), n in counts.most_common(top)]


def intent_metrics(
    gold: Sequence[str],
    predicted: Sequence[str],
    top_intent: Sequence[str],
    top_confidence: Sequence[float],
    decisions: Sequence[str],
) -> dict[str, object]:
    """Headline metrics (fractions in 0..1; OOS keys are ``None`` when the set has no OOS rows)."""
    gold = np.asarray(gold, dtype=object)
    pred = np.asarray(predicted, dtype=object)
    top = np.asarray(top_intent, dtype=object)
    conf = np.asarray(top_confidence, dtype=float)
    dec = np.asarray(decisions, dtype=object)
    in_scope = gold != OOS
    has_oos = bool((~in_scope).any())
    labels = sorted(set(gold) | set(pred))
    out: dict[str, object] = {
        "n": int(len(gold)),
        "n_in_scope": int(in_scope.sum()),
        "n_oos": int((~in_scope).sum()),
        "accuracy": float((pred == gold).mean()) if len(gold) else None,
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)) if len(gold) else None,
        "weighted_f1": float(f1_score(gold, pred, labels=labels, average="weighted", zero_division=0))
        if len(gold) else None,
        "in_scope_accuracy": float((pred[in_scope] == gold[in_scope]).mean()) if in_scope.any() else None,
        "in_scope_top1_accuracy": float((top[in_scope] == gold[in_scope]).mean()) if in_scope.any() else None,
        "clarify_rate": float((dec == "clarify").mean()) if len(dec) else None,
        "answer_rate": float((dec == "answer").mean()) if len(dec) else None,
        "ece": expected_calibration_error(conf[in_scope], top[in_scope] == gold[in_scope]) if in_scope.any() else None,
        "oos_precision": None,
        "oos_recall": None,
        "oos_f1": None,
    }
    if has_oos:
        tp = int(((pred == OOS) & ~in_scope).sum())
        n_pred = int((pred == OOS).sum())
        n_gold = int((~in_scope).sum())
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold
        out["oos_precision"] = float(precision)
        out["oos_recall"] = float(recall)
        out["oos_f1"] = float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0
    return out


def per_intent_report(gold: Sequence[str], predicted: Sequence[str], top_k_confused: int = 3) -> dict[str, dict]:
    """Rasa-style ``intent_report``: precision/recall/F1/support plus ``confused_with`` counts."""
    gold = list(gold)
    predicted = list(predicted)
    labels = sorted(set(gold) | set(predicted))
    p, r, f, s = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    confusions: dict[str, Counter] = {label: Counter() for label in labels}
    for g, q in zip(gold, predicted, strict=True):
        if g != q:
            confusions[g][q] += 1
    return {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
            "confused_with": dict(confusions[label].most_common(top_k_confused)),
        }
        for i, label in enumerate(labels)
    }
