"""The seam to the knowledge base: a small protocol the dialogue asks for article answers.

Serving fills it with the retrieval service; the dialogue works with none (the knowledge stage is
then skipped and says so in the trace). :class:`StaticKnowledge` is a tiny in-memory source for
tests and for domains without a knowledge base.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec


class ArticleHit(msgspec.Struct, frozen=True, omit_defaults=True):
    article_id: str
    title: str
    score: float
    snippet: str | None = None
    url: str | None = None


@runtime_checkable
class KnowledgeSource(Protocol):
    def search(self, query: str, channel: str | None, tags: Sequence[str]) -> list[ArticleHit]:
        """Best articles first; ``score`` comparable with ``knowledge.min_score`` of the dialogue config."""
        ...


@runtime_checkable
class ArticleLookup(Protocol):
    """Optional: resolve an article id (rule or flow step) to its title/snippet/url."""

    def get(self, article_id: str) -> ArticleHit | None:
        ...


class StaticKnowledge:
    """Articles matched by keywords: score = share of an article's keywords found in the query."""

    def __init__(self, articles: Sequence[tuple[ArticleHit, Sequence[str]]]) -> None:
        self._articles = [(hit, [k.lower() for k in keywords]) for hit, keywords in articles]

    def search(self, query: str, channel: str | None, tags: Sequence[str]) -> list[ArticleHit]:
        q = query.lower()
        scored = []
        for hit, keywords in self._articles:
            if not keywords:
                continue
            share = sum(1 for k in keywords if k in q) / len(keywords)
            if share > 0:
                scored.append(msgspec.structs.replace(hit, score=round(share, 4)))
        return sorted(scored, key=lambda h: -h.score)

    def get(self, article_id: str) -> ArticleHit | None:
        return next((h for h, _ in self._articles if h.article_id == article_id), None)
