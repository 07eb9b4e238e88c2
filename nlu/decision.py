"""Three-band decision over calibrated intent probabilities: answer, clarify, or reject (out of scope).

* **reject** when the best in-scope probability is below ``reject`` (the model's explicit ``oos``
  class, when the domain has out-of-scope examples, takes probability mass away from every intent);
* **answer** when it is at least ``answer`` and leads the runner-up by at least ``margin``;
* **clarify** otherwise: ask which of the 2–4 closest intents the customer meant (Lex's
  ``maxDisambiguationIntents``, WeChat's 相似问题推荐).

**What "best" means for rejection.** A softmax only says how the intents compare with each other,
so a message unlike anything in training can still get a peaked distribution. When the head can
tell how close the message is to its nearest training example (``similarity``, a cosine), the
reject test uses the *similarity-discounted* confidence ``p1 · exp(w · (similarity − 1))``: equal
to ``p1`` for a message that matches an example exactly, lower the further it is from all of
them. ``w`` is fitted on held-out data with out-of-scope rows (the weight with the best held-out
AUROC for telling in-scope from out-of-scope; 0 — plain ``p1`` — when there are too few OOS rows).

The thresholds are *fitted* on held-out predictions (:func:`fit_thresholds`), never hand-set:
``reject`` maximises a prior-weighted accuracy over in-scope and out-of-scope examples, and
``answer``/``margin`` maximise a utility over the in-scope ones (a right answer is worth 1, a
wrong one costs ``wrong_answer_cost``, a clarification is worth ``clarify_value`` when the right
intent is among its options). The costs are product choices and live in the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

OOS = "oos"
VAGUE_PREFIX = "clarify:"  # class "clarify:账户" = vague messages about that category


def is_intent(label: str) -> bool:
    """Real intents, as opposed to the helper classes ``oos`` and ``clarify:<category>``."""
    return label != OOS and not label.startswith(VAGUE_PREFIX)


@dataclass(frozen=True)
class Thresholds:
    reject: float
    answer: float
    margin: float
    max_options: int = 4
    option_ratio: float = 0.25  # an option must have ≥ this share of the top probability
    similarity_weight: float = 0.0  # w of the similarity-discounted confidence (0: reject on p1 alone)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class DecisionPolicy:
    """Hyper-parameters of threshold fitting (product costs, not learned)."""

    oos_prior: float = 0.2
    wrong_answer_cost: float = 1.0
    clarify_value: float = 0.6
    clarify_miss_cost: float = 0.3
    reject_in_scope_cost: float = 0.0
    in_scope_retention: float = 0.99  # without held-out OOS rows: keep this share of right answers
    oos_recall_target: float | None = None  # if set: the lowest reject threshold reaching this held-out OOS recall
    max_options: int = 4
    similarity_weights: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0)
    min_oos_for_similarity: int = 20  # held-out OOS rows needed before a similarity weight is fitted


@dataclass(frozen=True)
class Decision:
    kind: str  # "answer" | "clarify" | "out_of_scope"
    intent: str | None
    confidence: float
    options: tuple[str, ...] = ()
    category: str | None = None  # set when the message was recognised as a vague one of a category


def in_scope_ranking(probs: np.ndarray, classes: Sequence[str]) -> list[tuple[str, float]]:
    order = np.argsort(-probs)
    return [(classes[i], float(probs[i])) for i in order if is_intent(classes[i])]


def discounted(p1, similarity, weight: float):
    """``p1 · exp(w · (similarity − 1))``: confidence discounted by distance from the training examples."""
    if similarity is None or not weight:
        return p1
    return p1 * np.exp(weight * (np.asarray(similarity, dtype=np.float64) - 1.0))


def decide(probs: np.ndarray, classes: Sequence[str], t: Thresholds, similarity: float | None = None) -> Decision:
    """Decision for one probability row (over ``classes``, which may include ``oos``).

    ``similarity`` is the message's best cosine to a training example, when the head knows it.
    """
    ranking = in_scope_ranking(probs, classes)
    if not ranking:
        return Decision("out_of_scope", None, 0.0)
    top, p1 = ranking[0]
    p2 = ranking[1][1] if len(ranking) > 1 else 0.0
    vague = [(c, float(p)) for c, p in zip(classes, probs, strict=True) if c.startswith(VAGUE_PREFIX)]
    if vague:
        label, p_vague = max(vague, key=lambda cp: cp[1])
        if p_vague >= t.reject and p_vague > p1:
            options = tuple(name for name, _ in ranking[: t.max_options])
            return Decision("clarify", top, p1, options, category=label[len(VAGUE_PREFIX):])
    if discounted(p1, similarity, t.similarity_weight) < t.reject:
        return Decision("out_of_scope", None, p1)
    if p1 >= t.answer and p1 - p2 >= t.margin:
        return Decision("answer", top, p1)
    options = [name for name, p in ranking[: t.max_options] if p >= p1 * t.option_ratio]
    if len(options) < 2 and len(ranking) > 1:
        options = [ranking[0][0], ranking[1][0]]
    return Decision("clarify", top, p1, tuple(options))


def _top2(probs: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: top in-scope index, p1, p2, and the rank order of in-scope classes."""
    masked = probs.copy()
    for j, c in enumerate(classes):
        if not is_intent(c):
            masked[:, j] = -1.0
    order = np.argsort(-masked, axis=1)
    rows = np.arange(len(probs))
    p1 = masked[rows, order[:, 0]]
    p2 = masked[rows, order[:, 1]] if probs.shape[1] > 1 else np.zeros(len(probs))
    return order[:, 0], p1, np.clip(p2, 0, None), order


def fit_thresholds(
    probs: np.ndarray,
    classes: Sequence[str],
    gold: Sequence[str],
    policy: DecisionPolicy | None = None,
    similarity: np.ndarray | None = None,
) -> Thresholds:
    """Fit reject/answer/margin on held-out probabilities. ``gold`` uses ``oos`` for out-of-scope rows.

    ``similarity`` (one best-cosine per row, from the model that produced ``probs``) lets the
    reject test use the similarity-discounted confidence; see the module docstring.
    """
    policy = policy or DecisionPolicy()
    classes = list(classes)
    gold = np.asarray(gold)
    probs = np.asarray(probs, dtype=np.float64)
    rows = np.array([not str(g).startswith(VAGUE_PREFIX) for g in gold], dtype=bool)
    gold, probs = gold[rows], probs[rows]  # vague examples have no right intent to score
    top, p1, p2, order = _top2(probs, classes)
    pred = np.asarray(classes)[top]
    is_oos = gold == OOS
    correct = (pred == gold) & ~is_oos
    n_in = max(int((~is_oos).sum()), 1)
    n_oos = int(is_oos.sum())

    weight = 0.0
    if similarity is not None and n_oos >= policy.min_oos_for_similarity and (~is_oos).any():
        similarity = np.asarray(similarity, dtype=np.float64)[rows]
        weight = _best_similarity_weight(p1, similarity, is_oos, policy.similarity_weights)
    confidence = discounted(p1, similarity, weight)

    # --- reject: maximise (1-π)·in-scope accuracy + π·OOS recall over candidate cut points
    candidates = np.unique(np.concatenate([[0.0], np.round(confidence, 4)]))
    if n_oos and policy.oos_recall_target is not None:
        reaching = [t for t in candidates if (is_oos & (confidence < t)).sum() / n_oos >= policy.oos_recall_target]
        best_reject = float(min(reaching)) if reaching else float(candidates.max())
    elif n_oos:
        best_reject, best_score = 0.0, -np.inf
        for t in candidates:
            acc = (correct & (confidence >= t)).sum() / n_in
            rec = (is_oos & (confidence < t)).sum() / n_oos
            lost = ((~is_oos) & (confidence < t)).sum() / n_in
            score = (1 - policy.oos_prior) * (acc - policy.reject_in_scope_cost * lost) + policy.oos_prior * rec
            if score > best_score + 1e-12:
                best_reject, best_score = float(t), score
    else:
        # No out-of-scope examples held out: keep `in_scope_retention` of the right answers.
        best_reject = float(np.quantile(confidence[correct], 1 - policy.in_scope_retention)) if correct.any() else 0.0

    # --- answer / margin: utility over in-scope rows that pass the reject threshold
    keep = (~is_oos) & (confidence >= best_reject)
    in_options = np.zeros(len(gold), dtype=bool)
    class_arr = np.asarray(classes)
    for i in np.where(keep)[0]:
        opts = [c for c in class_arr[order[i, : policy.max_options]] if is_intent(c)]
        in_options[i] = gold[i] in opts
    grid_t = np.unique(np.quantile(p1[keep], np.linspace(0, 1, 41))) if keep.any() else np.array([best_reject])
    grid_m = np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4])
    best = (best_reject, 0.0)
    best_u = -np.inf
    for ta in grid_t:
        ta = max(float(ta), best_reject)
        for m in grid_m:
            answered = keep & (p1 >= ta) & (p1 - p2 >= m)
            clarified = keep & ~answered
            u = (
                (answered & correct).sum()
                - policy.wrong_answer_cost * (answered & ~correct).sum()
                + policy.clarify_value * (clarified & in_options).sum()
                - policy.clarify_miss_cost * (clarified & ~in_options).sum()
            )
            if u > best_u + 1e-9:
                best_u, best = u, (ta, float(m))
    return Thresholds(reject=round(best_reject, 4), answer=round(best[0], 4), margin=best[1],
                      max_options=policy.max_options, similarity_weight=weight)


def _best_similarity_weight(p1: np.ndarray, similarity: np.ndarray, is_oos: np.ndarray,
                            weights: Sequence[float]) -> float:
    """The weight whose discounted confidence best ranks in-scope above out-of-scope rows (AUROC)."""
    from sklearn.metrics import roc_auc_score

    best_w, best_auc = 0.0, -1.0
    for w in weights:
        auc = roc_auc_score(~is_oos, np.log(np.clip(p1, 1e-12, 1.0)) + w * similarity)
        if auc > best_auc + 1e-6:  # ties keep the smaller weight
            best_w, best_auc = float(w), auc
    return best_w
