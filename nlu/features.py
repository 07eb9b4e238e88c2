"""Features for the intent head: sentence embeddings from one or more encoders + char n-gram TF-IDF.

Measured on SMP2017 (5-fold, logistic regression, during development; ablations in evals/RESULTS.md):
e5 alone 90.0%, USE alone 91.5%, e5+USE 92.4%, e5+USE+char n-grams 93.7%. Char n-grams catch
the literal product words and typos that a frozen encoder smooths over, so both are kept.

The featurizer is an estimator in the scikit-learn sense: ``fit`` learns the n-gram vocabulary
(``vectorizer_``), ``transform`` maps texts (plus their precomputed embeddings) to one matrix.
Embeddings are passed in rather than computed here so that evals can cache them and serving can
batch them.
"""

from __future__ import annotations

from collections import Counter
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
        dense, grams = self.transform_parts(texts, embeddings)
        if grams is None:
            return dense
        return hstack([csr_matrix(dense), grams], format="csr", dtype=np.float32)

    def transform_parts(self, texts: Sequence[str], embeddings: np.ndarray):
        """The two blocks of :meth:`transform` side by side, unstacked: ``(embeddings, weighted
        n-grams or None)``. Heads that can score the blocks separately skip building (and slicing
        back apart) the stacked sparse matrix, which costs more than the scoring for one message."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if self.vectorizer_ is None:
            return embeddings, None
        grams = self._grams(list(texts))
        if self.ngram_weight != 1.0:
            grams = grams * self.ngram_weight
        return embeddings, grams

    def _grams(self, texts: list[str]):
        """TF-IDF rows, computed directly for small batches.

        Same result as ``vectorizer_.transform`` (sublinear tf × idf, L2-normalised rows; checked
        in tests), without scikit-learn's per-call input validation, which costs more than the
        arithmetic for the one-message requests of serving.
        """
        v = self.vectorizer_
        if len(texts) > 16:
            return v.transform(texts)
        analyze = v.build_analyzer()
        vocab, idf = v.vocabulary_, v.idf_
        data: list[np.ndarray] = []
        indices: list[np.ndarray] = []
        indptr = [0]
        for text in texts:
            counts = Counter(j for g in analyze(text) if (j := vocab.get(g)) is not None)
            idx = np.fromiter(counts.keys(), dtype=np.int32, count=len(counts))
            val = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * idf[idx]
            norm = np.sqrt(val @ val)
            if norm > 0:
                val = val / norm
            order = np.argsort(idx)
            indices.append(idx[order])
            data.append(val[order].astype(np.float32))
            indptr.append(indptr[-1] + len(idx))
        return csr_matrix((np.concatenate(data), np.concatenate(indices), np.asarray(indptr)),
                          shape=(len(texts), len(vocab)), dtype=np.float32)
