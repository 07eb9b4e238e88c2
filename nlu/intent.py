"""The intent model: features → head → calibrated probabilities → three-band decision.

:class:`IntentModel` is what gets trained, saved and served. It does not own encoders (they are
shared with retrieval and may be swapped for batched or cached versions in serving); callers pass
the embeddings of the texts, computed with the encoders the model was trained with
(``encoder_names`` records which).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .classifier import build_head, fit_temperature
from .decision import Decision, DecisionPolicy, Thresholds, decide, fit_thresholds, is_intent
from .features import TextFeaturizer


@dataclass(frozen=True)
class HeadConfig:
    name: str = "logreg+knn"
    params: dict[str, float] = field(default_factory=lambda: {"C": 10.0, "alpha": 0.7, "scale": 20.0})
    ngrams: bool = True
    ngram_range: tuple[int, int] = (1, 3)
    ngram_weight: float = 1.0


class IntentModel:
    """``fit`` on (texts, embeddings, labels); ``calibrate`` on held-out data; ``predict_proba``/``decide``."""

    def __init__(self, head: HeadConfig | None = None, policy: DecisionPolicy | None = None) -> None:
        self.head = head or HeadConfig()
        self.policy = policy or DecisionPolicy()

    # ------------------------------------------------------------------ fitting
    def fit(self, texts: Sequence[str], embeddings: np.ndarray, labels: Sequence[str],
            sample_weight: Sequence[float] | None = None) -> IntentModel:
        """``sample_weight`` (optional): how much each example counts (e.g. weak labels less)."""
        if len(texts) != len(labels) or len(texts) != len(embeddings):
            raise ValueError("texts, embeddings and labels must have the same length")
        if len(set(labels)) < 2:
            raise ValueError("need at least two distinct labels to train an intent head")
        self.featurizer_ = TextFeaturizer(
            ngram_range=self.head.ngram_range, ngram_weight=self.head.ngram_weight, use_ngrams=self.head.ngrams
        ).fit(texts)
        X = self.featurizer_.transform(texts, embeddings)
        params = dict(self.head.params)
        if self.head.name in ("centroid", "logreg+knn"):
            params.setdefault("dense_dim", int(np.asarray(embeddings).shape[1]))
        weighted = {} if sample_weight is None else {"sample_weight": np.asarray(sample_weight, dtype=np.float64)}
        self.head_ = build_head(self.head.name, **params).fit(X, list(labels), **weighted)
        self.classes_ = [str(c) for c in self.head_.classes_]
        self.temperature_ = 1.0
        self.thresholds_ = Thresholds(reject=0.0, answer=0.0, margin=0.0, max_options=self.policy.max_options)
        return self

    def logits(self, texts: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        return self.head_.logits(self.featurizer_.transform(texts, embeddings))

    def similarity(self, texts: Sequence[str], embeddings: np.ndarray) -> np.ndarray | None:
        """Best cosine of each text to a training example (heads that keep examples), else None."""
        if not hasattr(self.head_, "similarity"):
            return None
        return self.head_.similarity(self.featurizer_.transform(texts, embeddings))

    def calibrate(self, logits: np.ndarray, gold: Sequence[str],
                  similarity: np.ndarray | None = None) -> IntentModel:
        """Fit temperature and thresholds on *held-out* logits (rows of ``gold`` may be ``oos``).

        The logits may come from this model or from sibling models fitted on other folds (out-of-fold
        predictions): calibration parameters transfer because the folds share head and features.
        """
        index = {c: i for i, c in enumerate(self.classes_)}
        y_index = np.array([index.get(g, -1) for g in gold])
        self.temperature_ = fit_temperature(logits, y_index)  # rows of unknown labels are skipped
        probs = self._softmax(logits)
        self.thresholds_ = fit_thresholds(probs, self.classes_, list(gold), self.policy, similarity)
        return self

    # ------------------------------------------------------------------ inference
    def _softmax(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64) / self.temperature_
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        return self._softmax(self.logits(texts, embeddings))

    def predict_scores(self, texts: Sequence[str], embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probabilities and, when the head knows it, each text's best training-example cosine."""
        if hasattr(self.head_, "logits_and_similarity_parts"):  # the default head: no stacked matrix needed
            logits, similarity = self.head_.logits_and_similarity_parts(
                *self.featurizer_.transform_parts(texts, embeddings))
            return self._softmax(logits), similarity
        X = self.featurizer_.transform(texts, embeddings)
        if hasattr(self.head_, "logits_and_similarity"):
            logits, similarity = self.head_.logits_and_similarity(X)
            return self._softmax(logits), similarity
        similarity = self.head_.similarity(X) if hasattr(self.head_, "similarity") else None
        return self._softmax(self.head_.logits(X)), similarity

    def decide(self, probs_row: np.ndarray, similarity: float | None = None) -> Decision:
        return decide(probs_row, self.classes_, self.thresholds_, similarity)

    @property
    def intents(self) -> list[str]:
        return [c for c in self.classes_ if is_intent(c)]
