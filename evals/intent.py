"""``lingxi eval intent``: train on a dataset's train split, calibrate on held-out data, report on test.

Holdout discipline: the test split is used once, for reporting. Temperature and thresholds are
fitted on ``val`` when the set has one, otherwise on out-of-fold predictions over the training
rows (seeded stratified K-fold). Sets without a test split (SMP2017) are scored by seeded
stratified k-fold, each fold treated like a train/test split.

Outputs in ``--out``: ``results.json`` (stable keys: ``accuracy``, ``macro_f1``,
``in_scope_accuracy``, ``oos_precision``, ``oos_recall``, ``oos_f1`` as fractions, OOS keys
``null`` without OOS rows, plus dataset/split/seed/model) and ``errors.jsonl``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from lingxi.datasets.public import OOS, IntentDataset, IntentRow, load_intent_dataset
from lingxi.nlu.decision import in_scope_ranking
from lingxi.nlu.encoders import Encoder, build_encoders
from lingxi.nlu.intent import IntentModel
from lingxi.nlu.normalize import Normalizer
from lingxi.training.train import Dataset, TrainConfig, fit_intent_model

from .cache import cached_encode
from .metrics import intent_metrics, per_intent_report


@dataclass(frozen=True)
class PredictionRow:
    top: str
    confidence: float
    decision: str
    predicted: str  # "oos" when rejected
    options: tuple[str, ...]


def predict_rows(model: IntentModel, texts: Sequence[str], embeddings: np.ndarray) -> list[PredictionRow]:
    probs = model.predict_proba(texts, embeddings)
    out: list[PredictionRow] = []
    for row in probs:
        d = model.decide(row)
        ranking = in_scope_ranking(row, model.classes_)
        top, conf = ranking[0] if ranking else (OOS, 0.0)
        predicted = OOS if d.kind == "out_of_scope" else (d.intent or top)
        out.append(PredictionRow(top, float(conf), d.kind, predicted, d.options))
    return out


def few_shot(rows: Sequence[IntentRow], shots: int, seed: int) -> list[IntentRow]:
    """``shots`` seeded random training rows per intent (all of an intent's rows if it has fewer)."""
    rng = np.random.default_rng(seed)
    by_intent: dict[str, list[IntentRow]] = {}
    for r in rows:
        by_intent.setdefault(r.intent, []).append(r)
    out: list[IntentRow] = []
    for intent in sorted(by_intent):
        group = by_intent[intent]
        pick = rng.choice(len(group), size=min(shots, len(group)), replace=False)
        out.extend(group[i] for i in sorted(pick))
    return out


def _embed(rows: Sequence[IntentRow], encoder: Encoder, normalizer: Normalizer) -> Dataset:
    texts = [normalizer(r.text) for r in rows]
    return Dataset(texts, cached_encode(encoder, texts, "query"), [r.intent for r in rows])


def _evaluate_split(train: Dataset, val: Dataset | None, test: Dataset, test_rows: Sequence[IntentRow],
                    config: TrainConfig, train_oos: bool) -> tuple[dict, list[dict], IntentModel]:
    if not train_oos and OOS in train.labels:  # standard protocol: fit on in-scope rows only
        train = train.subset([i for i, y in enumerate(train.labels) if y != OOS])
    model = fit_intent_model(train, config, heldout=val)
    preds = predict_rows(model, test.texts, test.embeddings)
    gold = test.labels
    metrics = intent_metrics(gold, [p.predicted for p in preds], [p.top for p in preds],
                             [p.confidence for p in preds], [p.decision for p in preds])
    known = set(model.classes_) | {OOS}
    unknown = sorted({g for g in gold if g not in known})
    metrics["unknown_test_labels"] = unknown
    errors = [
        {"text": row.text, "gold": g, "predicted": p.predicted, "top": p.top,
         "confidence": round(p.confidence, 4), "decision": p.decision, "options": list(p.options)}
        for row, g, p in zip(test_rows, gold, preds, strict=True) if p.predicted != g
    ]
    metrics["per_intent"] = per_intent_report(gold, [p.predicted for p in preds])
    metrics["thresholds"] = model.thresholds_.to_dict()
    metrics["temperature"] = model.temperature_
    return metrics, errors, model


def run_intent_eval(
    dataset: str,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    datasets_dir: str | Path | None = None,
    seed: int = 0,
    folds: int | None = None,
    encoder: Encoder | None = None,
    train_oos: bool = False,
    skip_bad_lines: bool = False,
    shots: int | None = None,
) -> dict:
    config = config or TrainConfig()
    config.seed = seed
    data: IntentDataset = load_intent_dataset(dataset, datasets_dir, skip_bad_lines)
    normalizer = Normalizer(config.normalizer)
    encoder = encoder or build_encoders(config.encoders)
    started = time.perf_counter()
    kfold = folds or data.kfold
    fold_metrics: list[dict] = []
    errors: list[dict] = []
    if kfold:
        rows = data.rows
        full = _embed(rows, encoder, normalizer)
        skf = StratifiedKFold(n_splits=kfold, shuffle=True, random_state=seed)
        for k, (tr, te) in enumerate(skf.split(full.texts, full.labels)):
            m, errs, _ = _evaluate_split(full.subset(tr), None, full.subset(te), [rows[i] for i in te], config, train_oos)
            m["fold"] = k
            fold_metrics.append(m)
            errors += [{**e, "fold": k} for e in errs]
        keys = ["accuracy", "macro_f1", "weighted_f1", "in_scope_accuracy", "clarify_rate", "ece",
                "oos_precision", "oos_recall", "oos_f1"]
        summary = {k: (float(np.mean([f[k] for f in fold_metrics])) if fold_metrics[0][k] is not None else None)
                   for k in keys}
        summary["std"] = {k: float(np.std([f[k] for f in fold_metrics])) for k in keys
                          if fold_metrics[0][k] is not None}
        split = f"{kfold}-fold stratified CV over all rows"
        extra = {"folds": [{k: v for k, v in f.items() if k != "per_intent"} for f in fold_metrics]}
        n_train = int(len(rows) * (kfold - 1) / kfold)
    else:
        train_rows = data.split(data.train_split)
        if shots:
            train_rows = few_shot(train_rows, shots, seed)
        val_rows = data.split(data.val_split)
        test_rows = data.split(data.test_split)
        if not train_rows or not test_rows:
            raise ValueError(f"{data.source}: needs non-empty train and test splits")
        train = _embed(train_rows, encoder, normalizer)
        val = _embed(val_rows, encoder, normalizer) if val_rows else None
        test = _embed(test_rows, encoder, normalizer)
        summary, errors, _ = _evaluate_split(train, val, test, test_rows, config, train_oos)
        if val_rows:
            how = "on val"
        elif len(train) >= config.slice_calibration_above:
            how = f"on a seeded {config.calibration_fraction:.0%} slice of train"
        else:
            how = "out-of-fold on train"
        split = f"test (thresholds fitted {how})"
        extra = {}
        n_train = len(train_rows)
    results = {
        "dataset": data.name,
        "source": data.source,
        "dataset_fingerprint": data.fingerprint,
        "split": split,
        "seed": seed,
        "n_train": n_train,
        "train_oos": train_oos,
        "shots": shots,
        "skipped_lines": list(data.skipped),
        "model": {
            "encoder": encoder.name,
            "encoders": [asdict(e) for e in config.encoders],
            "head": asdict(config.head),
            "policy": asdict(config.policy),
        },
        **summary,
        **extra,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=2), "utf-8")
    with (out / "errors.jsonl").open("w", encoding="utf-8") as fh:
        for e in errors:
            fh.write(json.dumps(e, ensure_ascii=False) + "\n")
    return results
