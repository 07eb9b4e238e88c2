"""Features for the intent head: sentence embeddings from one or more encoders + char n-gram TF-IDF.

Measured on SMP2017 (5-fold, logistic regression; `evals/experiments` notes in docs/results.md):
e5 alone 90.0%, USE alone 91.5%, e5+USE 92.4%, e5+USE+char n-grams 93.7%. Char n-grams catch
the literal product words and typos that a frozen encoder smooths over, so both are kept.

The featurizer is an estimator in the scikit-learn sense: ``fit`` learns the n-gram vocabulary
(``vectorizer_``), ``transform`` maps texts (plus their precomputed embeddings) to one matrix.
Embeddings are passed in rather than computed here so that evals can cache them and serving can
batch them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer


class TextFeaturizer(BaseEstimator):
    def __init__(self, ngram_range: tuple[int, int] = (1, 3), ngram_weight: float = 1.0,
                 use_ngrams: bool = True, max_features: int | None = 200_000) -> None:
        self.ngram_range = ngram_range
        self.ngram_weight = ngram_weight
        self.use_ngrams = use_ngrams
        self.max_features = max_features

    def fit(self, texts: Sequence[str]) -> TextFeaturizer:
        if self.use_ngrams:
            self.vectorizer_ = TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=tuple(self.ngram_range),
                sublinear_tf=True,
                max_features=self.max_features,
                dtype=np.float32,
            ).fit(list(texts))
        else:
            self.vectorizer_ = None
        return self

    def transform(self, texts: Sequence[str], embeddings: np.ndarray):
        """Dense embeddings alone (ndarray) or embeddings ⊕ weighted n-grams (CSR matrix)."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if self.vectorizer_ is None:
            return embeddings
        grams = self.vectorizer_.transform(list(texts))
        if self.ngram_weight != 1.0:
            grams = grams * self.ngram_weight
        return hstack([csr_matrix(embeddings), grams], format="csr", dtype=np.float32)
