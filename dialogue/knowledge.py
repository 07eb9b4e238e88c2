"""The seam to the knowledge base: the protocol the dialogue asks for article answers.

Serving fills it with the tenant's retrieval service (``serving/knowledge.py``); the dialogue works
with none (articles are then never offered, and the trace says so). A hit carries the raw
evidence that it answers the question (:data:`~lingxi.retrieval.answerability.ARTICLE_FEATURES`);
the arbitration (:mod:`.arbitration`) turns it into a calibrated probability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import msgspec
import numpy as np


class ArticleHit(msgspec.Struct, frozen=True, omit_defaults=True):
    """One article the knowledge base found (or looked up), with what the bot may say of it."""

    article_id: str
    title: str
    score: float = 0.0  # the search's final (fused, boosted) score: a rank within one query
    snippet: str | None = None  # the best matching passage
    answer: str | None = None  # a short answer drawn from the article
    url: str | None = None
    rank: int = 0
    search_id: str | None = None
    features: dict[str, float] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class KnowledgeQuery:
    """One customer message as a knowledge-base question, with the visitor's context.

    ``vectors``: query embeddings the NLU already computed, by encoder name, with the normalised
    text they were computed from; a source whose encoder matches reuses them instead of encoding
    the message a second time.
    """

    text: str
    channel: str | None = None
    tags: Sequence[str] = ()
    recent_pages: Sequence[str] = ()
    recent_products: Sequence[str] = ()
    intent: str | None = None
    language: str = "zh"
    normalized: str | None = None
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)
    top_k: int = 5


@runtime_checkable
class KnowledgeSource(Protocol):
    def search(self, query: KnowledgeQuery, exclude_units: AbstractSet[int] = frozenset()) -> list[ArticleHit]:
        """Live articles visible on the query's channel, best first, with ``features`` filled.
        An empty list when the knowledge base is empty, rebuilding or unreachable."""
        ...

    def get(self, article_id: str, language: str | None = None) -> ArticleHit | None:
        """The live (published) article (its title and short answer in ``language`` when translated),
        or None when it is unknown or no longer published."""
        ...


@runtime_checkable
class CalibrationSource(Protocol):
    """What calibrating the arbitration needs beyond searching: held-out questions of the KB itself."""

    def probes(self) -> list[tuple[str, str, int]]:
        """(question text, its article id, the unit to leave out) for every title and variant."""
        ...

    def fingerprint(self) -> dict[str, str]:
        """A content hash per live article (to tell when the KB changed materially)."""
        ...
