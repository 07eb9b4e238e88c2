"""The promotion gate: challenger vs champion on the same eval sets, in one run.

Both models parse the domain's held-out files (``eval/heldout.yml`` + ``eval/oos.yml``). The gate
fails on a *significant* regression beyond a tolerance — a drop that chance cannot explain
(McNemar for accuracy, paired bootstrap for OOS recall) and that is larger than the operator is
willing to accept — and on absolute floors: every intent's recall, and a p50 latency budget.
With no champion yet, only the floors apply.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lingxi.datasets.domain import OOS_LABEL, load_eval_set
from lingxi.evals.intent import predict_rows
from lingxi.evals.metrics import per_intent_report
from lingxi.evals.stats import mcnemar, paired_bootstrap, rate_on
from lingxi.nlu.encoders import Encoder, build_encoders
from lingxi.nlu.normalize import Normalizer

from .bundle import ModelBundle


@dataclass(frozen=True)
class GateConfig:
    accuracy_tolerance: float = 0.01
    oos_recall_tolerance: float = 0.03
    intent_recall_floor: float = 0.5
    min_intent_support: int = 3
    latency_ratio_budget: float = 1.5  # challenger p50 ≤ this × champion p50 (same run) …
    latency_budget_ms: float = 50.0  # … or ≤ this absolute p50, whichever is larger
    alpha: float = 0.05
    bootstrap_rounds: int = 1000
    latency_samples: int = 60


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    values: dict = field(default_factory=dict)


@dataclass
class GateReport:
    challenger: str
    champion: str | None
    passed: bool
    checks: list[Check]
    metrics: dict[str, dict[str, float | None]]
    n_examples: int
    config: GateConfig

    def to_dict(self) -> dict:
        return {"challenger": self.challenger, "champion": self.champion, "passed": self.passed,
                "n_examples": self.n_examples, "metrics": self.metrics,
                "checks": [asdict(c) for c in self.checks], "config": asdict(self.config)}

    def summary(self) -> str:
        head = f"gate {'PASSED' if self.passed else 'FAILED'}: {self.challenger} vs {self.champion or '(no champion)'}"
        lines = [head, f"  examples: {self.n_examples}"]
        for c in self.checks:
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
        return "\n".join(lines)


@dataclass
class _Scored:
    predicted: np.ndarray
    p50_ms: float


def _score(bundle: ModelBundle, texts: list[str], encoders: dict[str, Encoder], cfg: GateConfig) -> _Scored:
    key = repr(bundle.encoders)
    if key not in encoders:
        encoders[key] = build_encoders(bundle.encoders)
    encoder = encoders[key]
    normalizer = Normalizer(bundle.normalizer)
    norm = [normalizer(t) for t in texts]
    rows = predict_rows(bundle.intent_model, norm, encoder.encode(norm, "query"))
    timings = []
    for t in norm[: cfg.latency_samples]:  # one message at a time, as served
        t0 = time.perf_counter()
        emb = encoder.encode([t], "query")
        probs, similarity = bundle.intent_model.predict_scores([t], emb)
        bundle.intent_model.decide(probs[0], None if similarity is None else float(similarity[0]))
        timings.append((time.perf_counter() - t0) * 1000)
    return _Scored(np.array([r.predicted for r in rows], dtype=object), float(np.median(timings)))


def regression_checks(ok_a: np.ndarray, ok_b: np.ndarray, is_oos: np.ndarray, cfg: GateConfig) -> list[Check]:
    """Is B significantly worse than A on the same examples? Accuracy (McNemar + paired bootstrap)
    and, when there are out-of-scope rows, OOS recall (paired bootstrap). Also used by
    ``lingxi eval compare`` so a comparison says what the gate would say."""
    checks: list[Check] = []
    test = mcnemar(ok_a, ok_b)
    acc = paired_bootstrap("accuracy", lambda i: (ok_a[i].mean(), ok_b[i].mean()), len(ok_a), cfg.bootstrap_rounds)
    worse = acc.delta < -cfg.accuracy_tolerance and test.p_value < cfg.alpha and test.only_a > test.only_b
    checks.append(Check("accuracy", not worse,
                        f"Δ {acc.delta:+.3f} (95% CI {acc.ci_low:+.3f}..{acc.ci_high:+.3f}), McNemar p={test.p_value:.3g}"
                        f", tolerance {cfg.accuracy_tolerance}", {"delta": acc.to_dict(), "mcnemar": test.to_dict()}))
    if is_oos.any():
        oos_a, oos_b = rate_on(is_oos, ok_a), rate_on(is_oos, ok_b)
        rec = paired_bootstrap("oos_recall", lambda i: (oos_a(i), oos_b(i)), len(ok_a), cfg.bootstrap_rounds)
        worse = rec.delta < -cfg.oos_recall_tolerance and rec.ci_high < 0
        checks.append(Check("oos_recall", not worse,
                            f"Δ {rec.delta:+.3f} (95% CI {rec.ci_low:+.3f}..{rec.ci_high:+.3f}), tolerance "
                            f"{cfg.oos_recall_tolerance}", {"delta": rec.to_dict()}))
    return checks


def run_gate(challenger: ModelBundle, champion: ModelBundle | None, domain_path: str | Path,
             config: GateConfig | None = None, encoders: dict[str, Encoder] | None = None) -> GateReport:
    cfg = config or GateConfig()
    encoders = {} if encoders is None else encoders
    heldout, oos = load_eval_set(domain_path)
    texts = [e.text for e in heldout] + list(oos)
    gold = np.array([e.intent for e in heldout] + [OOS_LABEL] * len(oos), dtype=object)
    if not len(texts):
        raise ValueError(f"{domain_path}: no eval/ files to gate on")
    chal = _score(challenger, texts, encoders, cfg)
    champ = _score(champion, texts, encoders, cfg) if champion else None
    is_oos = gold == OOS_LABEL
    ok_chal = chal.predicted == gold
    checks: list[Check] = []
    metrics: dict[str, dict[str, float | None]] = {
        "challenger": {"accuracy": float(ok_chal.mean()),
                       "oos_recall": float(ok_chal[is_oos].mean()) if is_oos.any() else None,
                       "p50_ms": chal.p50_ms},
    }
    if champ is not None:
        ok_champ = champ.predicted == gold
        metrics["champion"] = {"accuracy": float(ok_champ.mean()),
                               "oos_recall": float(ok_champ[is_oos].mean()) if is_oos.any() else None,
                               "p50_ms": champ.p50_ms}
        checks.extend(regression_checks(ok_champ, ok_chal, is_oos, cfg))
    report = per_intent_report(list(gold), list(chal.predicted))
    low = {name: round(r["recall"], 3) for name, r in report.items()
           if name != OOS_LABEL and r["support"] >= cfg.min_intent_support and r["recall"] < cfg.intent_recall_floor}
    checks.append(Check("intent_recall_floor", not low,
                        f"{len(low)} intent(s) below recall {cfg.intent_recall_floor}" + (f": {low}" if low else ""),
                        {"below_floor": low}))
    budget = max(cfg.latency_budget_ms, cfg.latency_ratio_budget * champ.p50_ms if champ else 0.0)
    checks.append(Check("latency_p50", chal.p50_ms <= budget,
                        f"{chal.p50_ms:.1f} ms (budget {budget:.1f} ms)", {"p50_ms": chal.p50_ms, "budget_ms": budget}))
    return GateReport(f"{challenger.bot}@{challenger.version}",
                      f"{champion.bot}@{champion.version}" if champion else None,
                      all(c.passed for c in checks), checks, metrics, len(gold), cfg)
