"""Threshold sweeps: what answer / clarify / reject would do at other thresholds, vectorised.

The operating point a model ships with is fitted on held-out *training-side* data (``val`` or
out-of-fold predictions, see :func:`lingxi.training.train.fit_intent_model`). A sweep never moves
it: it recomputes the three-band decision of :func:`lingxi.nlu.decision.decide` over a grid of one
threshold at a time (the others held at the fitted values) and reports in-scope accuracy, OOS
recall / precision / F1, clarification rate and the accuracy of direct answers, so a reader sees
the trade-off and where the fitted point sits on it. Sweeping the test split is reporting only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from lingxi.nlu.decision import OOS, VAGUE_PREFIX, Thresholds, discounted, is_intent

REJECT_GRID = tuple(np.round(np.linspace(0.0, 1.0, 41), 4))
ANSWER_GRID = tuple(np.round(np.linspace(0.0, 1.0, 41), 4))
MARGIN_GRID = tuple(np.round(np.linspace(0.0, 1.0, 41), 4))


@dataclass(frozen=True)
class Scored:
    """Per example, what the decision needs: the top in-scope intent, its probability ``p1``, the
    runner-up's ``p2``, the largest ``clarify:<category>`` probability (0 without such classes) and
    the best cosine to a training example (``None`` for heads that keep no examples)."""

    gold: np.ndarray
    top: np.ndarray
    p1: np.ndarray
    p2: np.ndarray
    p_vague: np.ndarray
    similarity: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.gold)

    def reject_score(self, t: Thresholds) -> np.ndarray:
        """The confidence the reject test compares with ``t.reject`` (similarity-discounted ``p1``)."""
        return discounted(self.p1, self.similarity, t.similarity_weight)

    @staticmethod
    def concat(parts: Sequence[Scored]) -> Scored:
        fields = [np.concatenate([getattr(p, f) for p in parts]) for f in ("gold", "top", "p1", "p2", "p_vague")]
        sims = None if any(p.similarity is None for p in parts) else np.concatenate([p.similarity for p in parts])
        return Scored(*fields, similarity=sims)


def score(probs: np.ndarray, classes: Sequence[str], gold: Sequence[str],
          similarity: np.ndarray | None = None) -> Scored:
    probs = np.asarray(probs, dtype=np.float64)
    classes = list(classes)
    intent_cols = np.array([j for j, c in enumerate(classes) if is_intent(c)])
    vague_cols = np.array([j for j, c in enumerate(classes) if c.startswith(VAGUE_PREFIX)])
    n = len(probs)
    if len(intent_cols) == 0:
        empty = np.zeros(n)
        return Scored(np.asarray(gold, dtype=object), np.full(n, OOS, dtype=object), empty, empty, empty, similarity)
    sub = probs[:, intent_cols]
    order = np.argsort(-sub, axis=1, kind="stable")
    rows = np.arange(n)
    p1 = sub[rows, order[:, 0]]
    p2 = sub[rows, order[:, 1]] if sub.shape[1] > 1 else np.zeros(n)
    top = np.asarray(classes, dtype=object)[intent_cols[order[:, 0]]]
    p_vague = probs[:, vague_cols].max(axis=1) if len(vague_cols) else np.zeros(n)
    sims = None if similarity is None else np.asarray(similarity, dtype=np.float64)
    return Scored(np.asarray(gold, dtype=object), top, p1, p2, p_vague, sims)


def decisions(s: Scored, t: Thresholds) -> np.ndarray:
    """``answer`` / ``clarify`` / ``out_of_scope`` per row, exactly as :func:`decide` would."""
    kinds = np.full(len(s), "clarify", dtype=object)
    vague = (s.p_vague >= t.reject) & (s.p_vague > s.p1)
    reject = ~vague & (s.reject_score(t) < t.reject)
    answer = ~vague & ~reject & (s.p1 >= t.answer) & (s.p1 - s.p2 >= t.margin)
    kinds[reject] = "out_of_scope"
    kinds[answer] = "answer"
    kinds[s.top == OOS] = "out_of_scope"  # a model with no intent classes at all
    return kinds


def predicted_labels(s: Scored, kinds: np.ndarray) -> np.ndarray:
    """The label the metrics score: ``oos`` when rejected, else the top intent (clarify included)."""
    return np.where(kinds == "out_of_scope", OOS, s.top).astype(object)


def operating_metrics(s: Scored, t: Thresholds) -> dict[str, float | None]:
    kinds = decisions(s, t)
    pred = predicted_labels(s, kinds)
    in_scope = s.gold != OOS
    is_oos = ~in_scope
    answered = kinds == "answer"
    out: dict[str, float | None] = {
        "in_scope_accuracy": float((pred[in_scope] == s.gold[in_scope]).mean()) if in_scope.any() else None,
        "clarify_rate": float((kinds == "clarify").mean()) if len(s) else None,
        "answer_rate": float(answered.mean()) if len(s) else None,
        "answer_accuracy": float((pred[answered] == s.gold[answered]).mean()) if answered.any() else None,
        "oos_recall": None, "oos_precision": None, "oos_f1": None,
    }
    if is_oos.any():
        tp = int(((pred == OOS) & is_oos).sum())
        n_pred = int((pred == OOS).sum())
        recall = tp / int(is_oos.sum())
        precision = tp / n_pred if n_pred else 0.0
        out["oos_recall"] = recall
        out["oos_precision"] = precision
        out["oos_f1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return out


def sweep(s: Scored, chosen: Thresholds) -> dict[str, list[dict]]:
    """One table per swept threshold (``reject``, ``answer``, ``margin``); the fitted value is
    always in its grid and flagged ``chosen``."""
    grids = {"reject": REJECT_GRID, "answer": ANSWER_GRID, "margin": MARGIN_GRID}
    # plus the score quantiles, so the grid is dense where the examples are (a discounted reject
    # score often lives in 0..0.2)
    observed = {"reject": s.reject_score(chosen), "answer": s.p1, "margin": s.p1 - s.p2}
    out: dict[str, list[dict]] = {}
    for param, grid in grids.items():
        fitted = float(getattr(chosen, param))
        dense = np.round(np.quantile(observed[param], np.linspace(0, 1, 41)), 4) if len(s) else []
        values = sorted({float(v) for v in grid} | {float(v) for v in dense} | {fitted})
        rows = []
        for v in values:
            t = replace(chosen, **{param: v})
            rows.append({param: round(v, 4), "chosen": v == fitted,
                         **{k: (None if m is None else round(m, 5)) for k, m in operating_metrics(s, t).items()}})
        out[param] = rows
    return out
