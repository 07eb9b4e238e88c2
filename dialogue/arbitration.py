"""One arbitration between what the intent model, the keyword rules and the knowledge base offer.

Each candidate answer gets a probability that the customer is served by it, from a small logistic
model over its evidence (:class:`AnswerModel`): for an intent or a keyword-rule reply the intent
model's calibrated confidence, the runner-up, the parse's decision band, whether the rule names an
intent, and whether the intent's own help article is also the knowledge base's best hit; for an
article the retrieval evidence of :func:`~lingxi.retrieval.answerability.answer_features` and its
agreement with the intent model. Both models, the answer and option thresholds and the margin an
article needs to override an intent, rule or flow are fitted on held-out questions
(:mod:`.calibration`) — never set by hand — and stored as one :class:`Arbitration`.

:func:`decide` is the rule the policy runs every turn and the fit simulates:

1. the best candidate at or above ``answer_threshold`` answers — an article wins over an intent or
   a rule only when it is ``margin`` more likely (an intent whose own article is the best hit is
   one candidate, answered with its card). A keyword rule's own reply (a rule naming no intent: the
   operator's word, which held-out data cannot judge) stands at the answer threshold, so only an
   article that is more likely still replaces it;
2. otherwise a clarifying question offers the candidates at or above ``option_threshold`` — and,
   once one does, the runners-up down to ``fill_threshold`` (up to four, intents and articles
   mixed, best first; a single one is asked as "您是想问「…」吗？"; an operator's category menu for
   a vague message is kept as it is);
3. otherwise a fallback, with no articles (none reached the cut-off the fit chose: a request the
   shop cannot answer gets none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np

from lingxi.nlu.parse import ParseResult
from lingxi.retrieval.answerability import ARTICLE_FEATURES

from .knowledge import ArticleHit

INTENT_FEATURES: tuple[str, ...] = ("logit_p", "margin", "answer", "clarify", "rule", "rule_intent", "own_found",
                                    "own_first", "top_unowned", "top_unowned_strength", "intent_mass")
ARTICLE_MODEL_FEATURES: tuple[str, ...] = (*ARTICLE_FEATURES, "rank1", "own_of_top_intent", "owned_other",
                                           "conflict_p", "unowned", "top_own_found", "parse_oos", "parse_clarify",
                                           "parse_oos_dense", "intent_mass")
MAX_OPTIONS = 4
VERSION = 11  # of the features and the decision rule: a saved fit of another version is fitted again
OPTION_INTENTS = 3  # of the intent ranking's top, offered when the parse itself did not clarify


class AnswerModel(msgspec.Struct, frozen=True):
    """``P(acceptable) = sigmoid(intercept + Σ coef·(x - mean)/scale)`` over named features."""

    features: list[str]
    coef: list[float]
    intercept: float
    mean: list[float]
    scale: list[float]

    def probability(self, values: Mapping[str, float]) -> float:
        z = self.intercept
        for name, c, m, s in zip(self.features, self.coef, self.mean, self.scale, strict=True):
            z += c * (float(values.get(name, 0.0)) - m) / s
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    @classmethod
    def fit(cls, features: Sequence[str], rows: Sequence[Mapping[str, float]], labels: Sequence[bool],
            c: float = 1.0) -> AnswerModel:
        from sklearn.linear_model import LogisticRegression

        x = np.array([[float(r.get(f, 0.0)) for f in features] for r in rows], dtype=np.float64)
        y = np.array(labels, dtype=bool)
        mean = x.mean(axis=0) if len(x) else np.zeros(len(features))
        scale = x.std(axis=0) if len(x) else np.ones(len(features))
        scale[scale < 1e-9] = 1.0
        if len(set(y.tolist())) < 2:  # one class only: a constant model at the observed rate
            rate = min(max(float(y.mean()) if len(y) else 0.5, 1e-3), 1 - 1e-3)
            return cls(list(features), [0.0] * len(features), math.log(rate / (1 - rate)),
                       mean.tolist(), scale.tolist())
        lr = LogisticRegression(C=c, max_iter=1000).fit((x - mean) / scale, y)
        return cls(list(features), [float(v) for v in lr.coef_[0]], float(lr.intercept_[0]),
                   mean.tolist(), scale.tolist())


class Arbitration(msgspec.Struct, frozen=True, kw_only=True):
    """The fitted arbitration: two answer models, three operating parameters, and how it was fitted."""

    intent_model: AnswerModel
    article_model: AnswerModel
    answer_threshold: float
    option_threshold: float
    margin: float
    fill_threshold: float | None = None  # once one option qualifies, further ones down to this (None: the same)
    report: dict[str, float] = msgspec.field(default_factory=dict)  # cross-fitted rates on the held-out cases
    fitted_on: dict[str, object] = msgspec.field(default_factory=dict)  # model version, KB hashes, case counts

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @staticmethod
    def from_json(data: bytes) -> Arbitration:
        return msgspec.json.decode(data, type=Arbitration)


# ------------------------------------------------------------------ candidates and their evidence


@dataclass(frozen=True)
class Links:
    """Which help article is which intent's own (``article:`` of an intent in the domain files).

    An article no intent owns answers a topic the intent model never learned: there, a confident
    intent says nothing against the article, while for an owned article it does.
    """

    by_intent: Mapping[str, str]

    @property
    def owned(self) -> frozenset[str]:
        return frozenset(self.by_intent.values())

    def own(self, intent: str | None) -> str | None:
        return self.by_intent.get(intent) if intent else None

    @classmethod
    def of(cls, intents: Mapping[str, object]) -> Links:
        """From the NLU's intent metadata (anything with an ``article`` attribute)."""
        return cls({name: a for name, meta in intents.items() if (a := getattr(meta, "article", None))})


@dataclass
class Candidate:
    """Something the bot could answer: an intent (its response or flow), a keyword rule's reply, or an article."""

    kind: Literal["intent", "rule", "article"]
    value: str  # intent name, rule id or article id
    probability: float
    intent: str | None = None  # the intent an intent or rule answer stands for
    own_article: str | None = None  # an intent's own help article (a rule's article), to attach as a card
    article: ArticleHit | None = None  # the article hit answered (or the own article, when it was found)
    label: str = ""
    operator: bool = False  # a keyword rule's own reply (no intent): answers at the threshold, see decide()


@dataclass
class Verdict:
    kind: Literal["answer", "clarify", "fallback"]
    chosen: Candidate | None = None
    options: list[Candidate] = field(default_factory=list)
    suggestions: list[ArticleHit] = field(default_factory=list)
    why: str = ""


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def top_intents(parse: ParseResult) -> list[tuple[str, float]]:
    return [(i.name, float(i.confidence)) for i in parse.intent_ranking]


def intent_mass(parse: ParseResult) -> float:
    """How much probability the intent model gives the shop's intents at all (the rest went to its
    out-of-scope and vague classes): low for a request the shop does not serve."""
    return min(1.0, sum(float(i.confidence) for i in parse.intent_ranking))


def _rank(hits: Sequence[ArticleHit], article: str | None) -> int:
    return next((i + 1 for i, h in enumerate(hits) if h.article_id == article), 0) if article else 0


def intent_evidence(parse: ParseResult, intent: str | None, probability: float, own_article: str | None,
                    hits: Sequence[ArticleHit], links: Links, rule: bool = False) -> dict[str, float]:
    """The features of an intent (or, ``rule``, a keyword rule's) answer for :class:`AnswerModel`.
    The parse's decision band describes its top intent (and a rule its own match) only."""
    ranking = top_intents(parse)
    top = ranking[0][0] if ranking else None
    second = next((p for n, p in ranking if n != intent), 0.0)
    is_top = rule or intent == top or (parse.decision == "rule" and intent == primary_intent(parse)[0])
    rank = _rank(hits, own_article)
    first = hits[0] if hits else None
    unowned = first is not None and first.article_id not in links.owned and first.article_id != own_article
    return {
        "logit_p": _logit(probability),
        "margin": probability - second,
        "answer": 1.0 if is_top and parse.decision == "answer" else 0.0,
        "clarify": 1.0 if is_top and parse.decision == "clarify" else 0.0,
        "rule": 1.0 if rule else 0.0,
        "rule_intent": 1.0 if rule and parse.matched_rules and parse.matched_rules[0].intent else 0.0,
        "own_found": 1.0 if rank else 0.0,
        "own_first": 1.0 if rank == 1 else 0.0,
        "top_unowned": 1.0 if unowned else 0.0,
        "top_unowned_strength": float(first.features.get("fused_margin", 0.0)) if unowned and first else 0.0,
        "intent_mass": intent_mass(parse),
    }


def article_evidence(hit: ArticleHit, parse: ParseResult, hits: Sequence[ArticleHit], links: Links) -> dict[str, float]:
    """The features of an article answer: the retrieval evidence plus its agreement with the intent
    model (whose out-of-scope class knows what the shop does not do)."""
    ranking = top_intents(parse)
    top_intent = ranking[0] if ranking else None
    values = dict(hit.features)
    oos = parse.decision == "out_of_scope"
    values["rank1"] = 1.0 if hits and hits[0].article_id == hit.article_id else 0.0
    values["parse_oos"] = 1.0 if oos else 0.0
    values["parse_clarify"] = 1.0 if parse.decision == "clarify" else 0.0
    values["parse_oos_dense"] = values.get("dense", 0.0) if oos else 0.0
    values["intent_mass"] = intent_mass(parse)
    top_own = links.own(top_intent[0]) if top_intent is not None else None
    own = top_own == hit.article_id
    owned_other = hit.article_id in links.owned and not own
    values["own_of_top_intent"] = 1.0 if own else 0.0
    values["owned_other"] = 1.0 if owned_other else 0.0
    values["conflict_p"] = top_intent[1] if owned_other and top_intent is not None else 0.0
    values["unowned"] = 1.0 if hit.article_id not in links.owned else 0.0
    values["top_own_found"] = 1.0 if _rank(hits, top_own) else 0.0
    return values


def primary_intent(parse: ParseResult) -> tuple[str | None, float]:
    """The intent an answer to this parse stands for, with the model's confidence in it."""
    ranking = top_intents(parse)
    confidence = dict(ranking)
    if parse.decision == "rule" and parse.matched_rules and parse.matched_rules[0].intent:
        name = parse.matched_rules[0].intent
        return name, confidence.get(name, float(parse.intent.confidence))
    if parse.decision in ("answer", "rule") and parse.intent.name in confidence:
        return parse.intent.name, float(parse.intent.confidence)
    return ranking[0] if ranking else (None, 0.0)


@dataclass
class Evidence:
    """Everything one turn offers, scored: the intent and keyword-rule answers, the articles, and the
    intents a clarifying question could offer."""

    answers: list[Candidate]
    articles: list[Candidate]
    intent_options: list[Candidate]
    menu: bool  # the parse's options are an operator's category menu
    vague: bool = False  # ... because the message is a vague one of that category (not merely ambiguous)


def answer_candidates(parse: ParseResult, hits: Sequence[ArticleHit], links: Links,
                      answerable: Callable[[str], bool]) -> list[tuple[Candidate, dict[str, float]]]:
    """The intent answer and the keyword rule's reply a parse offers, each with its features."""
    out = []
    intent, p = primary_intent(parse)
    rule = parse.matched_rules[0] if parse.decision == "rule" and parse.matched_rules else None
    if rule is not None and (rule.response or rule.article):
        own = rule.article or links.own(rule.intent)
        values = intent_evidence(parse, rule.intent, p if rule.intent else float(parse.intent.confidence), own,
                                 hits, links, rule=True)
        out.append((Candidate("rule", rule.rule_id, 0.0, intent=rule.intent, own_article=own), values))
    if intent is not None and answerable(intent) and (rule is None or rule.intent != intent or not rule.response):
        own = links.own(intent)
        out.append((Candidate("intent", intent, 0.0, intent=intent, own_article=own),
                    intent_evidence(parse, intent, p, own, hits, links)))
    return out


def gather(parse: ParseResult, hits: Sequence[ArticleHit], arbitration: Arbitration, links: Links,
           answerable: Callable[[str], bool], offerable: Callable[[str], bool] | None = None,
           outcome: Callable[[str], str] | None = None) -> Evidence:
    """Score every candidate of a turn. ``answerable(intent)``: the bot has something to say for it
    (a response, a flow, the welcome); ``offerable(intent)``: it may be a clarification option;
    ``outcome(intent)``: what answering it does (intents that start the same flow are one answer,
    and the intent model's belief in them adds up)."""
    offerable = offerable or answerable
    answers = []
    for candidate, values in answer_candidates(parse, hits, links, answerable):
        candidate.probability = arbitration.intent_model.probability(values)
        candidate.operator = candidate.kind == "rule" and candidate.intent is None
        answers.append(candidate)
    articles = [Candidate("article", h.article_id,
                          arbitration.article_model.probability(article_evidence(h, parse, hits, links)),
                          article=h, label=h.title)
                for h in hits]
    ranking = top_intents(parse)
    confidence = dict(ranking)
    menu = parse.decision == "clarify" and parse.clarification is not None and parse.clarification.category is not None
    vague = menu and bool(parse.clarification and parse.clarification.vague)
    if parse.decision == "clarify" and parse.clarification is not None:
        names = [o.intent for o in parse.clarification.options]
    else:
        names = [n for n, _ in ranking[:OPTION_INTENTS]]
    options: list[Candidate] = []
    for name in names:
        if not offerable(name):
            continue
        known = next((c for c in answers if c.kind == "intent" and c.value == name), None)
        if known is not None:
            options.append(known)
            continue
        values = intent_evidence(parse, name, confidence.get(name, 0.0), links.own(name), hits, links)
        options.append(Candidate("intent", name, arbitration.intent_model.probability(values), intent=name,
                                 own_article=links.own(name)))
    if outcome is not None:
        for c in answers:
            if c.kind == "intent" and c.intent:
                same = [o for o in options if o.intent != c.intent and o.intent and outcome(o.intent) == outcome(c.intent)]
                c.probability = min(1.0, c.probability + sum(o.probability for o in same))
    return Evidence(answers, articles, options, menu, vague)


def decide(evidence: Evidence, arbitration: Arbitration) -> Verdict:
    """The arbitration rule (module docstring); pure, so the fit can simulate it."""
    a = arbitration
    answers = []
    for c in evidence.answers:  # an answer and its own article agree: one candidate, answered with the card
        if c.operator:  # the operator's keyword reply stands unless an article is more likely still
            c = Candidate(c.kind, c.value, a.answer_threshold, intent=c.intent, own_article=c.own_article,
                          article=c.article, operator=True)
        own = next((h for h in evidence.articles if h.value == c.own_article), None) if c.own_article else None
        if own is not None:
            c = Candidate(c.kind, c.value, max(c.probability, own.probability), intent=c.intent,
                          own_article=c.own_article, article=own.article, operator=c.operator)
        answers.append(c)
    primary = max(answers, key=lambda c: c.probability, default=None)
    p_primary = primary.probability if primary is not None else 0.0
    others = [c for c in evidence.articles if primary is None or c.value != primary.own_article]
    best = max(others, key=lambda c: c.probability, default=None)
    over_rule = primary is not None and primary.operator and best is not None and best.probability > p_primary
    if best is not None and best.probability >= a.answer_threshold and (
            primary is None or p_primary < a.answer_threshold or best.probability >= p_primary + a.margin
            or over_rule):
        why = f"article {best.value} p={best.probability:.2f} ≥ {a.answer_threshold:.2f}"
        if primary is not None:
            why += f" over {primary.kind} {primary.value} p={p_primary:.2f}"
        return Verdict("answer", best, why=why)
    if primary is not None and p_primary >= a.answer_threshold:
        why = f"{primary.kind} {primary.value} p={p_primary:.2f} ≥ {a.answer_threshold:.2f}"
        if best is not None:
            why += f"; best other article {best.value} p={best.probability:.2f}"
        return Verdict("answer", primary, why=why)

    # no answer: a clarifying question among the plausible candidates, else a fallback
    by_intent = {c.intent: c for c in answers if c.kind == "intent"}
    pool = [by_intent.get(c.intent, c) for c in evidence.intent_options]
    fill = a.option_threshold if a.fill_threshold is None else a.fill_threshold
    # a vague message gets its category's menu; a menu that only stands for the ambiguous model's
    # candidates is offered only when one of them is an option in its own right (else 美团外卖送晚了
    # gets the 物流 menu)
    menu = evidence.menu and (evidence.vague or any(c.probability >= a.option_threshold for c in pool))
    intents = pool if menu else [c for c in pool if c.probability >= a.option_threshold]
    covered = {c.own_article for c in intents if c.own_article}
    articles = sorted((c for c in evidence.articles if c.probability >= a.option_threshold and c.value not in covered),
                      key=lambda c: -c.probability)
    if (intents or articles) and fill < a.option_threshold:  # a question worth asking: offer the runners-up too
        more = [c for c in pool if fill <= c.probability < a.option_threshold] if not menu else []
        intents = [*intents, *more]
        covered = {c.own_article for c in intents if c.own_article}
        articles = sorted((c for c in evidence.articles if c.probability >= fill and c.value not in covered),
                          key=lambda c: -c.probability)
    if menu:  # the operator's menu keeps its order; the best article takes the last place if needed
        options = intents[: MAX_OPTIONS - (1 if articles else 0)] + articles[:1]
    else:
        options = sorted([*intents, *articles], key=lambda c: -c.probability)[:MAX_OPTIONS]
    if options:
        return Verdict("clarify", options=options,
                       why="options " + ", ".join(f"{o.value} p={o.probability:.2f}" for o in options))
    scored = [*evidence.articles, *answers]
    top = max(scored, key=lambda c: c.probability, default=None)
    why = f"best {top.kind} {top.value} p={top.probability:.2f} < {a.option_threshold:.2f}" if top else "no candidate"
    return Verdict("fallback", why=why)
