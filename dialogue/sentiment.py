"""Strong negative sentiment, from a lexicon in the dialogue config (no model).

Score = 2 per strong term + 1 per weak term, +1 when an intensifier ("太", "！！", "到底") appears
together with a negative term. The handoff threshold (``handoff.sentiment_threshold``, 2 in the
demo) thus fires on one strong term ("垃圾", "骗子") or on a weak one said emphatically
("太失望了！！"), not on a mild "有点慢". A lexicon is crude; it is explainable, and the trace
shows the terms that fired.
"""

from __future__ import annotations

from dataclasses import dataclass

from lingxi.datasets.dialogue_files import SentimentConfig


@dataclass(frozen=True)
class SentimentScore:
    score: float
    terms: tuple[str, ...]


def negative_score(text: str, cfg: SentimentConfig) -> SentimentScore:
    t = text.lower()
    terms: list[str] = []
    score = 0.0
    for term in cfg.strong:
        if term.lower() in t:
            score += 2
            terms.append(term)
    for term in cfg.weak:
        if term.lower() in t:
            score += 1
            terms.append(term)
    if terms and any(i.lower() in t for i in cfg.intensifiers):
        score += 1
    return SentimentScore(score, tuple(terms))
