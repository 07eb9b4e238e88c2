"""Retraining from feedback: the domain + accepted labels + hard negatives → a challenger → the gate → the registry.

``lingxi retrain BOT`` (``serving/cli.py``) reads the labels from the misunderstood queue
(:mod:`lingxi.training.misunderstood`) and calls :func:`retrain`:

1. **Training set** (:func:`build_training_set`): every domain example (weight 1), the operators'
   labels (weight 1), agreed weak labels from clarification picks (``QueueConfig.weak_weight``)
   and *hard negatives* — labelled utterances the bot had answered with another intent, and ignored
   utterances it had answered at all (taught as out of scope) — weighted up. A label whose text is
   already a domain example is left out (the domain file wins), and a new intent needs
   ``min_examples_new_intent`` labels to become a class.
2. **Challenger**: trained with the baseline model's encoders, head, decision policy and
   normaliser, so the gate compares like with like; calibrated as ``lingxi train`` does; saved under
   ``<home>/challengers`` — never into the models folder that local serving loads from.
3. **Gate** (:func:`lingxi.training.gate.run_gate`) against the baseline (the registry's champion,
   else the newest local model) on the domain's ``eval/`` files.
4. **Register** in MLflow as ``challenger`` only when the gate passed. Nothing is promoted: that is
   ``lingxi promote``, which gates again against whatever is champion then.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lingxi.datasets.domain import OOS_LABEL, Domain, load_domain
from lingxi.nlu.encoders import Encoder, build_encoders
from lingxi.nlu.normalize import Normalizer

from .bundle import IntentInfo, ModelBundle, intent_infos, new_version, save_bundle
from .gate import GateConfig, GateReport, run_gate
from .misunderstood import Label
from .train import TrainConfig, embed_dataset, evaluate_on_domain_eval, fit_intent_model

log = logging.getLogger("lingxi.training")


@dataclass(frozen=True)
class RetrainConfig:
    min_examples_new_intent: int = 2
    gate: GateConfig = field(default_factory=GateConfig)


@dataclass
class TrainingSet:
    texts: list[str]
    labels: list[str]
    weights: list[float]
    counts: dict[str, int]  # domain, operator, weak, hard_negative
    new_intents: dict[str, int]  # name → examples
    skipped: list[str]  # why some labels were left out

    def describe(self) -> str:
        c = self.counts
        new = ", ".join(f"{k} ({v})" for k, v in sorted(self.new_intents.items())) or "none"
        return (f"{len(self.texts)} examples: {c['domain']} from the domain, {c['operator']} operator labels, "
                f"{c['weak']} weak labels, {c['hard_negative']} of them hard negatives; new intents: {new}")


def build_training_set(domain: Domain, labels: Sequence[Label], config: RetrainConfig | None = None) -> TrainingSet:
    """The domain's examples plus the usable labels, each with its weight."""
    cfg = config or RetrainConfig()
    texts, names = domain.training_pairs()
    weights = [1.0] * len(texts)
    norm = Normalizer()
    in_domain = {norm(t): n for t, n in zip(texts, names, strict=True)}
    known = set(domain.intent_names) | set(names)
    skipped: list[str] = []
    usable: list[Label] = []
    for label in labels:
        authored = in_domain.get(norm(label.text))
        if authored is not None:
            if authored != label.intent:
                skipped.append(f"{label.text!r}: the domain already labels it {authored!r} (not {label.intent!r})")
            continue
        usable.append(label)
    per_new = Counter(label.intent for label in usable if label.intent not in known and label.intent != OOS_LABEL)
    too_few = {i for i, n in per_new.items() if n < cfg.min_examples_new_intent}
    for intent in sorted(too_few):
        skipped.append(f"new intent {intent!r}: {per_new[intent]} example(s), needs {cfg.min_examples_new_intent}")
    counts = {"domain": len(texts), "operator": 0, "weak": 0, "hard_negative": 0}
    seen: set[tuple[str, str]] = set()
    for label in usable:
        key = (norm(label.text), label.intent)
        if label.intent in too_few or key in seen:
            continue
        seen.add(key)
        texts.append(label.text)
        names.append(label.intent)
        weights.append(label.weight)
        counts[label.source] += 1
        counts["hard_negative"] += int(label.hard_negative)
    new_intents = {i: n for i, n in per_new.items() if i not in too_few}
    return TrainingSet(texts, names, weights, counts, new_intents, skipped)


@dataclass
class RetrainResult:
    bundle: ModelBundle
    path: Path
    training: TrainingSet
    gate: GateReport
    baseline: str | None
    run_id: str | None = None
    registered_version: str | None = None


def config_like(baseline: ModelBundle | None) -> TrainConfig:
    """Train the challenger as the baseline was trained (encoders, head, policy, normaliser)."""
    if baseline is None:
        return TrainConfig()
    model = baseline.intent_model
    return TrainConfig(encoders=list(baseline.encoders), head=model.head, policy=model.policy,
                       normalizer=baseline.normalizer)


def retrain(domain_path: str | Path, labels: Sequence[Label], out_dir: str | Path, *,
            baseline: ModelBundle | None = None, encoder: Encoder | None = None, tracking_uri: str | None = None,
            register: bool = True, log_to_mlflow: bool = True, config: RetrainConfig | None = None
            ) -> RetrainResult:
    """Train a challenger from the domain and ``labels``, gate it against ``baseline``, register it if it passes."""
    cfg = config or RetrainConfig()
    domain = load_domain(domain_path)
    data = build_training_set(domain, labels, cfg)
    train_config = config_like(baseline)
    normalizer = Normalizer(train_config.normalizer)
    encoder = encoder or build_encoders(train_config.encoders)
    train = embed_dataset(data.texts, data.labels, encoder, normalizer)
    train.weights = np.asarray(data.weights, dtype=np.float64)
    model = fit_intent_model(train, train_config)
    heldout = evaluate_on_domain_eval(model, domain, encoder, normalizer)
    digest = hashlib.sha256("\n".join(f"{t}\t{n}\t{w}" for t, n, w in zip(
        data.texts, data.labels, data.weights, strict=True)).encode()).hexdigest()[:12]
    bundle = ModelBundle(
        bot=domain.name,
        version=new_version(domain.fingerprint + digest),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        encoders=list(train_config.encoders),
        normalizer=train_config.normalizer,
        intent_model=model,
        intents=intent_infos(domain.intents) + [IntentInfo(name, name) for name in sorted(data.new_intents)],
        rules=list(domain.rules),
        entity_patterns=list(domain.entities),
        categories=list(domain.categories),
        language=domain.language,
        domain_fingerprint=f"{domain.fingerprint}+feedback:{digest}",
        metrics={k: v for k, v in heldout.metrics.items() if isinstance(v, (int, float)) or v is None},
    )
    path = save_bundle(bundle, out_dir)
    gate = run_gate(bundle, baseline, domain.root, cfg.gate, encoders={repr(bundle.encoders): encoder})
    result = RetrainResult(bundle, path, data, gate, f"{baseline.bot}@{baseline.version}" if baseline else None)
    if log_to_mlflow or register:
        from .tracking import log_training_run

        result.run_id = log_training_run(bundle, train_config, n_train=len(train), tracking_uri=tracking_uri,
                                         heldout_gold=heldout.gold, heldout_predicted=heldout.predicted)
        _log_retrain(result, tracking_uri)
    if register and gate.passed:
        from .registry import Registry

        result.registered_version = Registry(tracking_uri).register(bundle, result.run_id)
    return result


def _log_retrain(result: RetrainResult, tracking_uri: str | None) -> None:
    """The training-set make-up and the gate report, next to the run's model."""
    import mlflow

    from .tracking import default_tracking_uri

    client = mlflow.MlflowClient(tracking_uri=tracking_uri or default_tracking_uri())
    t = result.training
    client.log_dict(result.run_id, {"counts": t.counts, "new_intents": t.new_intents, "skipped": t.skipped},
                    "retrain/training_set.json")
    client.log_dict(result.run_id, result.gate.to_dict(), "retrain/gate.json")
    client.set_tag(result.run_id, "lingxi.retrain", "true")
    client.set_tag(result.run_id, "lingxi.gate_passed", str(result.gate.passed).lower())
    for key, value in t.counts.items():
        client.log_metric(result.run_id, f"retrain.{key}", value)
