"""How sure is the knowledge base that its best article answers the question? The raw evidence.

Fused search scores are ranks within one query (per-query min-max), not probabilities: the top hit
scores about 1.0 whether it answers the question or only shares a word with it. What does carry
across queries is absolute evidence: the best unit's cosine, how far it stands above the next
article, whether BM25 and the dense retriever agree, and whether a title or question variant (not
a body passage) matched. :func:`answer_features` reads those off a :class:`SearchResponse`; the
dialogue's arbitration turns them into a calibrated probability fitted on held-out questions
(``lingxi.dialogue.arbitration``).

:func:`calibration_probes` gives those held-out questions for a knowledge base: each title and
question variant, to be searched with its own unit left out (leave-one-out), so a variant never
finds itself.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping

import msgspec

from .articles import Article
from .chunking import markdown_to_text
from .index import KbIndex
from .search import SearchHit

ARTICLE_FEATURES: tuple[str, ...] = ("dense", "dense_margin", "sparse", "agree", "question", "fused_margin")
_SENTENCE = re.compile(r"(?<=[。！？!?；;])|(?<=\.)\s+")


def answer_features(results: list[SearchHit], rank: int = 1) -> dict[str, float]:
    """Evidence that the result at ``rank`` (1-based) answers the query, from the ranked results.

    ``dense``: the best unit's cosine; ``dense_margin``: minus the best other article's cosine;
    ``sparse``: log(1 + BM25); ``agree``: both retrievers rank it first; ``question``: a title or
    question variant matched (not only a body chunk); ``fused_margin``: its fused score minus the
    next result's.
    """
    hit = results[rank - 1]
    why = hit.why
    others = [r.why.dense for i, r in enumerate(results) if i != rank - 1 and r.why.dense is not None]
    dense = why.dense if why.dense is not None else (min(others) if others else 0.0)
    best_other = max(others) if others else 0.0
    after = results[rank].why.relevance if rank < len(results) else 0.0
    return {
        "dense": round(float(dense), 6),
        "dense_margin": round(float(dense - best_other), 6),
        "sparse": round(math.log1p(max(0.0, why.sparse or 0.0)), 6),
        "agree": 1.0 if why.dense_rank == 1 and why.sparse_rank == 1 else 0.0,
        "question": 1.0 if why.matched_by in ("title", "variant") else 0.0,
        "fused_margin": round(float(why.relevance - after), 6),
    }


def _cjk_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(1 for c in letters if "\u3400" <= c <= "\u9fff") / len(letters) if letters else 0.0


def short_answer(article: Article, hit: SearchHit | None = None, max_chars: int = 120,
                 language: str | None = None) -> str:
    """A short answer drawn from the article: the sentences of the best matching passage (or the
    body's start) that fit in ``max_chars``, as plain text — in ``language`` when the article is
    translated into it (a passage in the other language is not used then)."""
    title, body = article.in_language(language)
    source = body
    if hit is not None and hit.passage and hit.passage not in (article.title, title):
        in_chinese = _cjk_share(hit.passage) > 0.3
        if (language in (None, "zh")) == in_chinese or not article.translations.get(language or ""):
            source = hit.passage
    if language not in (None, "zh") and language in article.translations:
        max_chars *= 2  # Latin text takes about twice the characters for the same content
    text = markdown_to_text(source or "").replace("\n", " " if language not in (None, "zh") else "")
    if not text:
        return ""
    out = ""
    for sentence in (s.strip() for s in _SENTENCE.split(text) if s and s.strip()):
        if out and len(out) + len(sentence) > max_chars:
            break
        out = f"{out} {sentence}" if out and out[-1].isascii() and sentence[0].isascii() else out + sentence
        if len(out) >= max_chars:
            break
    return out if len(out) <= max_chars + 1 else out[:max_chars].rstrip() + "…"


class Probe(msgspec.Struct, frozen=True):
    """A held-out question for calibration: the text of one unit, searched with that unit excluded."""

    text: str
    article_id: str
    unit_id: int
    kind: str  # title | variant


def calibration_probes(index: KbIndex, articles: Mapping[str, Article]) -> list[Probe]:
    """Every live title and question variant as a leave-one-out probe of its own article."""
    probes = []
    for uid, unit in index.units_.items():
        if unit.kind in ("title", "variant") and unit.doc_id in articles:
            probes.append(Probe(unit.text, unit.doc_id, uid, unit.kind))
    return sorted(probes, key=lambda p: (p.article_id, p.unit_id))


def content_hashes(articles: Iterable[Article]) -> dict[str, str]:
    """A short hash of each live article's searchable content (title, variants, body)."""
    out = {}
    for a in articles:
        raw = "\x1f".join([a.title, *a.variants, a.body]).encode()
        out[a.id] = hashlib.blake2b(raw, digest_size=6).hexdigest()
    return out


def changed_share(before: Mapping[str, str], now: Mapping[str, str]) -> float:
    """The share of articles added, removed or edited between two :func:`content_hashes`."""
    ids = set(before) | set(now)
    if not ids:
        return 0.0
    return sum(1 for i in ids if before.get(i) != now.get(i)) / len(ids)
