"""Intent heads over features, with temperature-scaled (calibrated) probabilities.

Every head follows the scikit-learn contract: ``__init__`` stores hyper-parameters only, ``fit``
sets the learned attributes ending in ``_`` and returns ``self``, ``predict_proba`` checks it is
fitted. The heads are registered by name (``HEADS``) so a config can pick one.

Raw scores of these heads are not calibrated (a logistic regression with C=10 is overconfident);
:func:`fit_temperature` fits one temperature on held-out logits so that "0.7" means roughly 70%
right, which is what the answer / clarify / reject thresholds rely on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.sparse import csr_matrix
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.utils.validation import check_is_fitted


class LogRegHead(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression: the measured default (fast to fit, strong on embeddings)."""

    def __init__(self, C: float = 10.0, max_iter: int = 3000, temperature: float = 1.0) -> None:
        self.C = C
        self.max_iter = max_iter
        self.temperature = temperature

    def fit(self, X, y, sample_weight=None) -> LogRegHead:
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(X, y, sample_weight=sample_weight)
        self.classes_ = np.asarray(self.model_.classes_)
        return self

    def logits(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        # X @ coef.T + b directly: decision_function's input validation costs more than the product
        z = np.asarray(X @ self.model_.coef_.T) + self.model_.intercept_
        if z.shape[1] == 1:
            z = z[:, 0]
        if z.ndim == 1:  # binary case: sklearn returns one column
            z = np.stack([-z, z], axis=1) / 2.0
        return np.asarray(z, dtype=np.float64)

    def logits_parts(self, dense: np.ndarray, grams) -> np.ndarray:
        """:meth:`logits` of ``hstack([dense, grams])`` without stacking: the dense block meets the first
        coefficient columns, the sparse block (its column indices shifted past them) the rest."""
        check_is_fitted(self, "model_")
        coef = self.model_.coef_
        d = dense.shape[1]
        z = dense @ coef[:, :d].T
        if grams is not None and grams.shape[0] <= 16:
            # a message hits a few dozen n-grams: gather their coefficient columns (no sparse matrix
            # to build, which costs more than the product for one message)
            z = np.array(z, dtype=np.float64)
            for r in range(grams.shape[0]):
                lo, hi = grams.indptr[r], grams.indptr[r + 1]
                if hi > lo:
                    z[r] += coef[:, d + grams.indices[lo:hi]] @ grams.data[lo:hi]
        elif grams is not None:
            shifted = csr_matrix((grams.data, grams.indices + d, grams.indptr), shape=(grams.shape[0], coef.shape[1]))
            z = z + shifted @ coef.T
        z = np.asarray(z) + self.model_.intercept_
        if z.shape[1] == 1:
            z = np.concatenate([-z, z], axis=1) / 2.0
        return np.asarray(z, dtype=np.float64)

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.logits(X) / self.temperature, axis=1)


class MLPHead(ClassifierMixin, BaseEstimator):
    """One hidden layer (the dual-encoder paper's head); logits are the log of its probabilities."""

    def __init__(self, hidden: int = 512, alpha: float = 1e-3, max_iter: int = 200, seed: int = 0,
                 temperature: float = 1.0) -> None:
        self.hidden = hidden
        self.alpha = alpha
        self.max_iter = max_iter
        self.seed = seed
        self.temperature = temperature

    def fit(self, X, y, sample_weight=None) -> MLPHead:
        self.model_ = MLPClassifier(hidden_layer_sizes=(self.hidden,), alpha=self.alpha,
                                    max_iter=self.max_iter, early_stopping=False,
                                    random_state=self.seed).fit(X, y, sample_weight=sample_weight)
        self.classes_ = np.asarray(self.model_.classes_)
        return self

    def logits(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return np.log(np.clip(self.model_.predict_proba(X), 1e-12, 1.0))

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.logits(X) / self.temperature, axis=1)


class CentroidHead(ClassifierMixin, BaseEstimator):
    """Cosine to per-intent prototypes (mean embedding) scaled by ``scale``; a strong few-shot baseline.

    Uses only the dense part of the features (the first ``dense_dim`` columns when given).
    """

    def __init__(self, scale: float = 20.0, dense_dim: int | None = None, temperature: float = 1.0) -> None:
        self.scale = scale
        self.dense_dim = dense_dim
        self.temperature = temperature

    def _dense(self, X) -> np.ndarray:
        return _dense_part(X, self.dense_dim)

    def fit(self, X, y, sample_weight=None) -> CentroidHead:
        X = self._dense(X)
        y = np.asarray(y)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.classes_ = np.unique(y)
        self.centroids_ = _dense_part(np.stack([np.average(X[y == c], axis=0, weights=w[y == c])
                                                for c in self.classes_]), None)
        return self

    def logits(self, X) -> np.ndarray:
        check_is_fitted(self, "centroids_")
        return self.scale * (self._dense(X) @ self.centroids_.T).astype(np.float64)

    def similarity(self, X) -> np.ndarray:
        """Best cosine to a class centroid."""
        check_is_fitted(self, "centroids_")
        return (self._dense(X) @ self.centroids_.T).max(axis=1).astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.logits(X) / self.temperature, axis=1)


class LogRegKnnHead(ClassifierMixin, BaseEstimator):
    """Mixture of logistic regression and nearest-example evidence: ``α·p_logreg + (1-α)·p_knn``.

    Why: a discriminative head is confidently wrong on *vague* input ("我账号出问题了" → 92%
    账号被冻结), because nothing in training looks vague. The nearest training examples of such
    a message belong to several intents at similar cosine, so ``p_knn`` (softmax over each
    intent's best cosine × ``scale``) stays spread and the decision becomes "clarify"; for clear
    input both parts agree. ``dense_dim`` selects the embedding columns of the features.
    """

    def __init__(self, C: float = 10.0, alpha: float = 0.5, scale: float = 30.0, dense_dim: int | None = None,
                 max_iter: int = 3000, temperature: float = 1.0) -> None:
        self.C = C
        self.alpha = alpha
        self.scale = scale
        self.dense_dim = dense_dim
        self.max_iter = max_iter
        self.temperature = temperature

    def _dense(self, X) -> np.ndarray:
        return _dense_part(X, self.dense_dim)

    def fit(self, X, y, sample_weight=None) -> LogRegKnnHead:
        """``sample_weight`` weighs the logistic regression; every example counts as a neighbour."""
        self.logreg_ = LogRegHead(C=self.C, max_iter=self.max_iter).fit(X, y, sample_weight)
        self.classes_ = self.logreg_.classes_
        # examples sorted by class, so each class's best cosine is one reduceat over a slice
        cls = np.searchsorted(self.classes_, np.asarray(y))
        order = np.argsort(cls, kind="stable")
        self.examples_ = self._dense(X)[order]
        self.class_starts_ = np.searchsorted(cls[order], np.arange(len(self.classes_)))
        return self

    def _best_per_class(self, X) -> np.ndarray:
        check_is_fitted(self, "examples_")
        return self._best_of_dense(self._dense(X))

    def _best_of_dense(self, dense: np.ndarray) -> np.ndarray:
        sims = dense @ self.examples_.T
        return np.maximum.reduceat(sims, self.class_starts_, axis=1)

    def knn_proba(self, X) -> np.ndarray:
        return softmax(self.scale * self._best_per_class(X).astype(np.float64), axis=1)

    def similarity(self, X) -> np.ndarray:
        """Best cosine to any training example: how familiar the message is, which the softmax hides."""
        return self._best_per_class(X).max(axis=1).astype(np.float64)

    def logits(self, X) -> np.ndarray:
        return self.logits_and_similarity(X)[0]

    def logits_and_similarity(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Both from one pass over the examples (the cosine matrix is the expensive part)."""
        best = self._best_per_class(X)
        knn = softmax(self.scale * best.astype(np.float64), axis=1)
        mixed = self.alpha * softmax(self.logreg_.logits(X), axis=1) + (1 - self.alpha) * knn
        return np.log(np.clip(mixed, 1e-12, 1.0)), best.max(axis=1).astype(np.float64)

    def logits_and_similarity_parts(self, dense: np.ndarray, grams) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`logits_and_similarity` of the featurizer's unstacked blocks (serving's path): same
        numbers, without building a sparse matrix around the embeddings and slicing it back out."""
        check_is_fitted(self, "examples_")
        if self.dense_dim is not None and dense.shape[1] != self.dense_dim:
            raise ValueError(f"expected {self.dense_dim} embedding columns, got {dense.shape[1]}")
        best = self._best_of_dense(_dense_part(dense, None))
        knn = softmax(self.scale * best.astype(np.float64), axis=1)
        mixed = self.alpha * softmax(self.logreg_.logits_parts(dense, grams), axis=1) + (1 - self.alpha) * knn
        return np.log(np.clip(mixed, 1e-12, 1.0)), best.max(axis=1).astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.logits(X) / self.temperature, axis=1)


def _dense_part(X, dense_dim: int | None) -> np.ndarray:
    """The L2-normalised embedding columns of a feature matrix (dense or CSR)."""
    if hasattr(X, "toarray"):
        X = X[:, :dense_dim].toarray() if dense_dim else X.toarray()
    elif dense_dim:
        X = X[:, :dense_dim]
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


HEADS: dict[str, Callable[..., object]] = {
    "logreg": LogRegHead,
    "logreg+knn": LogRegKnnHead,
    "mlp": MLPHead,
    "centroid": CentroidHead,
}


def build_head(name: str, **params):
    try:
        return HEADS[name](**params)
    except KeyError:
        raise ValueError(f"unknown intent head {name!r}; choose one of {sorted(HEADS)}") from None


def fit_temperature(logits: np.ndarray, y_index: np.ndarray) -> float:
    """Temperature T minimising held-out NLL of ``softmax(logits / T)`` (Guo et al. 2017)."""
    logits = np.asarray(logits, dtype=np.float64)
    y_index = np.asarray(y_index)
    mask = y_index >= 0  # labels the head never saw cannot inform calibration …
    if mask.any():  # … nor can rows whose class was missing from their fold (logit set to -1e4)
        mask[mask] = logits[np.where(mask)[0], y_index[mask]] > -1e3
    if mask.sum() == 0:
        return 1.0
    z, yi = logits[mask], y_index[mask]

    def nll(log_t: float) -> float:
        lp = log_softmax(z / np.exp(log_t), axis=1)
        return float(-lp[np.arange(len(yi)), yi].mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))
