"""Fitting the arbitration on held-out questions: never by hand, never on the benchmark.

The held-out questions are the domain's own evaluation files (``eval/heldout.yml``: intent
questions; ``eval/oos.yml``: requests the shop cannot answer), which training never reads, and
every title and question variant of the live knowledge base searched with its own unit left out
(:func:`~lingxi.retrieval.answerability.calibration_probes`). Each question knows which answers
are acceptable: an intent question its intent and that intent's own article; an article question
its article and the intents whose own article it is; an out-of-scope request none.

:func:`fit_arbitration` cross-fits: the two answer models are fitted on four fifths of the
questions and score the fifth, so the thresholds are chosen on probabilities of questions the
models never saw; the final models are then fitted on all of them. The thresholds maximise a
utility in which a wrong answer costs three times what a right one earns (a customer misled is
worse than one asked to pick) and a clarification that offers the answer earns 0.3 (the customer
pays a round trip for it: at 0.5 the fit asked back half the time). On the demo dev set this moved
clarifications from 54% to 30% of cases for 0.0 → 1.6% wrong answers (evals/BOT_RESULTS.md).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lingxi.datasets.domain import CalibrationSet
from lingxi.nlu.parse import ParseContext, ParseResult

from .arbitration import (
    ARTICLE_MODEL_FEATURES,
    INTENT_FEATURES,
    VERSION,
    AnswerModel,
    Arbitration,
    Evidence,
    Links,
    Verdict,
    answer_candidates,
    article_evidence,
    decide,
    gather,
)
from .knowledge import ArticleHit, CalibrationSource, KnowledgeQuery, KnowledgeSource

# the utility of what a customer gets (see the module docstring)
RIGHT, WRONG = 1.0, -3.0
CLARIFY_HIT, CLARIFY_MISS = 0.3, -0.5  # one more round trip to the answer / a question that cannot help
REFUSED_OOS, PRETENDED_OOS = 1.0, -1.0  # an out-of-scope request refused / offered articles or options


@dataclass(frozen=True)
class HeldoutCase:
    text: str
    intents: frozenset[str] = frozenset()
    articles: frozenset[str] = frozenset()
    exclude_units: frozenset[int] = frozenset()
    source: str = "intent"  # intent | article | probe | oos | vague
    menu: frozenset[str] = frozenset()  # a vague message: the category menu a clarification should offer

    @property
    def answerable(self) -> bool:
        return bool(self.intents or self.articles or self.menu)


@dataclass
class Sample:
    case: HeldoutCase
    parse: ParseResult
    hits: list[ArticleHit] = field(default_factory=list)


def heldout_cases(held: CalibrationSet, probes: Sequence[tuple[str, str, int]], own_article: Mapping[str, str],
                  menus: Mapping[str, Sequence[str]]) -> list[HeldoutCase]:
    """The calibration questions: the domain's held-out files and the knowledge base's own probes
    (``probes``: text, article, the unit to leave out); ``menus``: each category's clarification menu."""
    owners: dict[str, set[str]] = {}
    for intent, article in own_article.items():
        owners.setdefault(article, set()).add(intent)
    cases = [HeldoutCase(e.text, frozenset({e.intent}),
                         frozenset({own_article[e.intent]} if e.intent in own_article else ()), source="intent")
             for e in held.examples if e.intent != "oos"]
    cases += [HeldoutCase(text, source="oos")
              for text in [*held.out_of_scope, *(e.text for e in held.examples if e.intent == "oos")]]
    for q in held.article_questions:
        articles = frozenset(q.articles)
        intents = frozenset(i for a in articles for i in owners.get(a, ()))
        cases.append(HeldoutCase(q.text, intents, articles, source="article"))
    cases += [HeldoutCase(q.text, menu=frozenset(menus.get(q.category, ())), source="vague")
              for q in held.vague_questions if menus.get(q.category)]
    cases += [HeldoutCase(text, frozenset(owners.get(article, ())), frozenset({article}), frozenset({unit}),
                          source="probe") for text, article, unit in probes]
    return cases


def collect(nlu, knowledge: KnowledgeSource | None, cases: Sequence[HeldoutCase],
            progress: Callable[[int, int], None] | None = None) -> list[Sample]:
    """Parse every case with the served NLU and search the knowledge base as a turn would."""
    samples = []
    for i, case in enumerate(cases):
        parse_with_vectors = getattr(nlu, "parse_with_vectors", None)
        if parse_with_vectors is not None:
            parse, vectors = parse_with_vectors(case.text, ParseContext())
        else:
            parse, vectors = nlu.parse(case.text, ParseContext()), {}
        hits: list[ArticleHit] = []
        if knowledge is not None:
            hits = knowledge.search(KnowledgeQuery(text=case.text, normalized=parse.normalized_text, vectors=vectors,
                                                   language=parse.language, top_k=3),
                                    exclude_units=case.exclude_units)
        samples.append(Sample(case, parse, hits))
        if progress is not None and (i + 1) % 100 == 0:
            progress(i + 1, len(cases))
    return samples


def _answer_rows(sample: Sample, links: Links, answerable: Callable[[str], bool]
                 ) -> list[tuple[dict[str, float], bool]]:
    rows = []
    for candidate, values in answer_candidates(sample.parse, sample.hits, links, answerable):
        if candidate.intent is None:
            continue  # an operator's keyword reply is not judged by the model (see arbitration.decide)
        rows.append((values, candidate.intent in sample.case.intents))  # (never for a vague message)
    return rows


def _article_rows(sample: Sample, links: Links) -> list[tuple[dict[str, float], bool]]:
    return [(article_evidence(h, sample.parse, sample.hits, links), h.article_id in sample.case.articles)
            for h in sample.hits]


def _fit_models(samples: Sequence[Sample], links: Links, answerable: Callable[[str], bool]
                ) -> tuple[AnswerModel, AnswerModel]:
    intent_rows = [r for s in samples for r in _answer_rows(s, links, answerable)]
    article_rows = [r for s in samples for r in _article_rows(s, links)]
    return (AnswerModel.fit(INTENT_FEATURES, [r for r, _ in intent_rows], [y for _, y in intent_rows]),
            AnswerModel.fit(ARTICLE_MODEL_FEATURES, [r for r, _ in article_rows], [y for _, y in article_rows]))


def score(verdict: Verdict, case: HeldoutCase) -> tuple[float, str]:
    """(utility, outcome) of a verdict for a case; outcome ∈ right | wrong | clarify_hit |
    clarify_miss | refused | suggested | missed."""
    if case.menu:  # a vague message: the right reply is the category's menu
        if verdict.kind == "clarify" and any(o.intent in case.menu for o in verdict.options):
            return RIGHT, "right"
        if verdict.kind == "answer" and verdict.chosen is not None and verdict.chosen.intent in case.menu:
            return 0.0, "guessed"  # a guess inside the category: maybe right, maybe not
        if verdict.kind == "answer":
            return WRONG, "wrong"
        return 0.0, "missed" if verdict.kind == "fallback" else "clarify_miss"
    if verdict.kind == "answer" and verdict.chosen is not None:
        c = verdict.chosen
        ok = (c.intent is not None and c.intent in case.intents) or (c.kind == "article" and c.value in case.articles) \
            or (c.kind != "article" and c.article is not None and c.article.article_id in case.articles) \
            or (c.kind == "rule" and c.intent is None and c.own_article in case.articles)
        return (RIGHT, "right") if ok else (WRONG, "wrong")
    if verdict.kind == "clarify":
        if not case.answerable:
            return PRETENDED_OOS, "clarify_miss"
        hit = any((o.intent in case.intents if o.intent else o.value in case.articles)
                  or (o.own_article is not None and o.own_article in case.articles) for o in verdict.options)
        return (CLARIFY_HIT, "clarify_hit") if hit else (CLARIFY_MISS, "clarify_miss")
    if not case.answerable:
        return (PRETENDED_OOS, "suggested") if verdict.suggestions else (REFUSED_OOS, "refused")
    return 0.0, "missed"


def _grid() -> list[tuple[float, float, float, float]]:
    """(answer, option, margin, fill) thresholds the fit searches."""
    answers = [round(0.50 + 0.05 * i, 2) for i in range(10)]  # 0.50 .. 0.95
    options = [round(0.10 + 0.05 * i, 2) for i in range(13)]  # 0.10 .. 0.70
    margins = [0.0, 0.1]
    fills = [0.05, 0.1, 0.2, 0.3, 1.0]  # 1.0: no fill below the option threshold
    return [(a, o, m, min(f, o)) for a in answers for o in options if o <= a for m in margins for f in fills
            if f < o or f == 1.0]


def _rates(outcomes: Sequence[str], cases: Sequence[HeldoutCase]) -> dict[str, float]:
    n = max(1, len(outcomes))
    oos = [o for o, c in zip(outcomes, cases, strict=True) if not c.answerable]
    inscope = [o for o, c in zip(outcomes, cases, strict=True) if c.answerable]
    return {
        "cases": float(len(outcomes)),
        "right": sum(o == "right" for o in outcomes) / n,
        "wrong": sum(o == "wrong" for o in outcomes) / n,
        "clarify": sum(o.startswith("clarify") for o in outcomes) / n,
        "resolved": sum(o in ("right", "clarify_hit") for o in outcomes) / n,
        "fallback": sum(o in ("refused", "suggested", "missed") for o in outcomes) / n,
        "in_scope_right": sum(o == "right" for o in inscope) / max(1, len(inscope)),
        "oos_refused_without_articles": sum(o == "refused" for o in oos) / max(1, len(oos)),
    }


def fit_arbitration(samples: Sequence[Sample], own_article: Mapping[str, str],
                    answerable: Callable[[str], bool], folds: int = 5, seed: int = 0,
                    fitted_on: Mapping[str, object] | None = None,
                    outcome: Callable[[str], str] | None = None) -> Arbitration:
    """Cross-fitted answer models and thresholds (module docstring)."""
    if not samples:
        raise ValueError("no held-out questions to calibrate on")
    links = Links(dict(own_article))
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    fold_of = {i: k % folds for k, i in enumerate(order)}
    evidence: list[Evidence | None] = [None] * len(samples)
    for f in range(folds):
        train = [s for i, s in enumerate(samples) if fold_of[i] != f]
        intent_model, article_model = _fit_models(train, links, answerable)
        probe = Arbitration(intent_model=intent_model, article_model=article_model, answer_threshold=1.0,
                            option_threshold=1.0, margin=0.0)
        for i, s in enumerate(samples):
            if fold_of[i] == f:
                evidence[i] = gather(s.parse, s.hits, probe, links, answerable, outcome=outcome)
    cases = [s.case for s in samples]
    best: tuple[float, tuple[float, float, float]] | None = None
    for a, o, m, f in _grid():
        arb = Arbitration(intent_model=probe.intent_model, article_model=probe.article_model,
                          answer_threshold=a, option_threshold=o, margin=m, fill_threshold=f)
        total = sum(score(decide(ev, arb), c)[0] for ev, c in zip(evidence, cases, strict=True))  # type: ignore[arg-type]
        if best is None or total > best[0] + 1e-9:
            best = (total, (a, o, m, f))
    assert best is not None
    a, o, m, f = best[1]
    intent_model, article_model = _fit_models(samples, links, answerable)
    chosen = Arbitration(intent_model=probe.intent_model, article_model=probe.article_model,
                         answer_threshold=a, option_threshold=o, margin=m, fill_threshold=f)
    outcomes = [score(decide(ev, chosen), c)[1] for ev, c in zip(evidence, cases, strict=True)]  # type: ignore[arg-type]
    report = _rates(outcomes, cases)
    for source in ("intent", "article", "probe", "vague", "oos"):
        part = [(out, c) for out, c in zip(outcomes, cases, strict=True) if c.source == source]
        if part:
            report[f"{source}_cases"] = float(len(part))
            report[f"{source}_right"] = sum(out == "right" for out, _ in part) / len(part)
    info = dict(fitted_on or {})
    info.update({"cases": len(samples), "folds": folds, "created_at": time.time(), "version": VERSION})
    return Arbitration(intent_model=intent_model, article_model=article_model, answer_threshold=a,
                       option_threshold=o, margin=m, fill_threshold=f, report=report, fitted_on=info)


def calibrate(nlu, knowledge: KnowledgeSource | None, held: CalibrationSet, own_article: Mapping[str, str],
              answerable: Callable[[str], bool], fitted_on: Mapping[str, object] | None = None,
              progress: Callable[[int, int], None] | None = None,
              outcome: Callable[[str], str] | None = None) -> Arbitration:
    """Held-out cases → samples → a fitted :class:`Arbitration` (the knowledge base's own probes
    included when ``knowledge`` is a :class:`CalibrationSource`)."""
    probes = knowledge.probes() if isinstance(knowledge, CalibrationSource) else []
    cases = heldout_cases(held, probes, own_article, getattr(nlu, "clarify_menus", {}))
    samples = collect(nlu, knowledge, cases, progress)
    info = dict(fitted_on or {})
    if isinstance(knowledge, CalibrationSource):
        info.setdefault("kb_hashes", knowledge.fingerprint())
    return fit_arbitration(samples, own_article, answerable, fitted_on=info, outcome=outcome)


def describe(arbitration: Arbitration) -> str:
    """The operating point in one line, as ``lingxi train`` prints it."""
    a, r = arbitration, arbitration.report
    fill = a.option_threshold if a.fill_threshold is None else a.fill_threshold
    return (f"answer arbitration: answer ≥ {a.answer_threshold:.2f}, options ≥ {a.option_threshold:.2f} "
            f"(runners-up ≥ {fill:.2f}), article margin {a.margin:.2f}; cross-fitted on {int(r.get('cases', 0))} "
            f"held-out questions: answered right {r.get('right', 0):.1%}, wrong {r.get('wrong', 0):.1%}, "
            f"resolved incl. a clarification {r.get('resolved', 0):.1%}, clarify {r.get('clarify', 0):.1%}, "
            f"fallback {r.get('fallback', 0):.1%}, out-of-scope refused without articles "
            f"{r.get('oos_refused_without_articles', 0):.1%}")
