"""``lingxi eval intent``: train on a dataset's train split, calibrate on held-out data, report on test.

Data: a named public set (``clinc150``, ``banking77``, …), a labelled JSONL file, or a domain folder
(``demo`` = the built-in shop): a domain trains on its own files (out-of-scope examples included,
as ``lingxi train`` does) and is reported on its ``eval/`` files.

Holdout discipline: the test split is used once, for reporting. Temperature and thresholds are
fitted on ``val`` when the set has one, otherwise on out-of-fold predictions over the training
rows (seeded stratified K-fold) or a seeded slice of them. Sets without a test split (SMP2017) are
scored by seeded stratified k-fold, each fold treated like a train/test split. Threshold sweeps
and learning curves only *report* on test; nothing is chosen there.

Outputs in ``--out`` (see :mod:`lingxi.evals.runs` for the envelope): ``results.json`` (stable keys
``accuracy``, ``macro_f1``, ``weighted_f1``, ``in_scope_accuracy``, ``oos_precision``,
``oos_recall``, ``oos_f1``, ``clarify_rate``, ``ece`` as fractions, OOS keys ``null`` without OOS
rows; ``per_intent``, ``most_confused``, ``reliability``, ``threshold_sweep``, ``learning_curve``,
``few_shot``, ``reference``), ``errors.jsonl``, ``predictions.jsonl`` (every test row, for
``lingxi eval compare``), ``figures/*.png`` and ``report.html``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from lingxi.datasets.public import OOS, DatasetError, IntentDataset, IntentRow, load_intent_dataset
from lingxi.nlu.decision import Thresholds, in_scope_ranking
from lingxi.nlu.encoders import Encoder, build_encoders
from lingxi.nlu.intent import IntentModel
from lingxi.nlu.normalize import Normalizer
from lingxi.training.train import Dataset, TrainConfig, fit_intent_model

from . import plots
from .cache import cached_encode
from .metrics import intent_metrics, most_confused, per_intent_report, reliability_bins
from .references import references_for
from .report import intent_page, write_report
from .runs import (
    ERRORS,
    PREDICTIONS,
    REPORT,
    config_version,
    provenance,
    write_figures,
    write_jsonl,
    write_results,
)
from .sweep import Scored, score, sweep

SUMMARY_KEYS = ("accuracy", "macro_f1", "weighted_f1", "in_scope_accuracy", "in_scope_top1_accuracy", "clarify_rate",
                "ece", "oos_precision", "oos_recall", "oos_f1")
CURVE_KEYS = ("accuracy", "macro_f1", "in_scope_accuracy", "in_scope_top1_accuracy", "oos_recall", "oos_precision")


@dataclass(frozen=True)
class PredictionRow:
    top: str
    confidence: float
    decision: str
    predicted: str  # "oos" when rejected
    options: tuple[str, ...]


def rows_from_probs(model: IntentModel, probs: np.ndarray,
                    similarity: np.ndarray | None = None) -> list[PredictionRow]:
    """Decisions for rows of probabilities (``similarity``: best training-example cosine per row)."""
    out: list[PredictionRow] = []
    for i, row in enumerate(probs):
        d = model.decide(row, None if similarity is None else float(similarity[i]))
        ranking = in_scope_ranking(row, model.classes_)
        top, conf = ranking[0] if ranking else (OOS, 0.0)
        predicted = OOS if d.kind == "out_of_scope" else (d.intent or top)
        out.append(PredictionRow(top, float(conf), d.kind, predicted, d.options))
    return out


def predict_rows(model: IntentModel, texts: Sequence[str], embeddings: np.ndarray) -> list[PredictionRow]:
    return rows_from_probs(model, *model.predict_scores(texts, embeddings))


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


def sample_fraction(labels: Sequence[str], fraction: float, seed: int) -> list[int]:
    """Indices of a seeded stratified ``fraction`` of the rows (at least 2 per label, as
    :func:`lingxi.training.train.stratified_sample` keeps), for learning curves."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    keep: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        n = min(len(idx), max(2, round(len(idx) * fraction)))
        keep.extend(rng.choice(idx, size=n, replace=False).tolist())
    return sorted(keep)


def _embed(rows: Sequence[IntentRow], encoder: Encoder, normalizer: Normalizer) -> Dataset:
    texts = [normalizer(r.text) for r in rows]
    return Dataset(texts, cached_encode(encoder, texts, "query"), [r.intent for r in rows])


@dataclass
class SplitResult:
    """One trained model scored on one test split."""

    metrics: dict
    predictions: list[dict]  # one per test row, in test order
    scored: Scored  # what threshold sweeps need, test rows
    heldout: Scored | None  # the same for val, when the model was calibrated on val
    thresholds: Thresholds


def _evaluate_split(train: Dataset, val: Dataset | None, test: Dataset, test_rows: Sequence[IntentRow],
                    ids: Sequence[int], config: TrainConfig, train_oos: bool) -> SplitResult:
    if not train_oos and OOS in train.labels:  # standard protocol: fit on in-scope rows only
        train = train.subset([i for i, y in enumerate(train.labels) if y != OOS])
    model = fit_intent_model(train, config, heldout=val)
    probs, similarity = model.predict_scores(test.texts, test.embeddings)
    preds = rows_from_probs(model, probs, similarity)
    gold = test.labels
    metrics = intent_metrics(gold, [p.predicted for p in preds], [p.top for p in preds],
                             [p.confidence for p in preds], [p.decision for p in preds])
    known = set(model.classes_) | {OOS}
    metrics["unknown_test_labels"] = sorted({g for g in gold if g not in known})
    metrics["per_intent"] = per_intent_report(gold, [p.predicted for p in preds])
    metrics["thresholds"] = model.thresholds_.to_dict()
    metrics["temperature"] = model.temperature_
    scored = score(probs, model.classes_, gold, similarity)
    predictions = [
        {"id": i, "text": row.text, "gold": g, "predicted": p.predicted, "top": p.top,
         "confidence": round(p.confidence, 4), "second": round(float(s2), 4), "decision": p.decision,
         "options": list(p.options)}
        for i, row, g, p, s2 in zip(ids, test_rows, gold, preds, scored.p2, strict=True)
    ]
    heldout = None
    if val is not None and len(val):
        val_probs, val_similarity = model.predict_scores(val.texts, val.embeddings)
        heldout = score(val_probs, model.classes_, val.labels, val_similarity)
    return SplitResult(metrics, predictions, scored, heldout, model.thresholds_)


def _curve_point(key: str, value: int, n_train: int, metrics: dict) -> dict:
    return {key: value, "n_train": n_train, **{k: metrics.get(k) for k in CURVE_KEYS}}


def _domain_dataset(root: Path) -> tuple[IntentDataset, dict[str, str]]:
    """A domain folder as an intent set: training files → ``train``, ``eval/`` files → ``test``."""
    from lingxi.datasets.domain import load_domain, load_eval_set

    domain = load_domain(root)
    heldout, oos = load_eval_set(root)
    if not heldout and not oos:
        raise DatasetError(f"{root}/eval: no held-out examples to report on (eval/heldout.yml, eval/oos.yml)")
    texts, labels = domain.training_pairs()
    rows = [IntentRow(t, y, "train") for t, y in zip(texts, labels, strict=True)]
    rows += [IntentRow(e.text, e.intent, "test") for e in heldout] + [IntentRow(t, OOS, "test") for t in oos]
    display = {i.name: f"{i.name} {i.label}" for i in domain.intents if i.label}
    return IntentDataset(domain.name, rows, str(root), val_split=None), display


def load_eval_data(dataset: str, datasets_dir: str | Path | None,
                   skip_bad_lines: bool) -> tuple[IntentDataset, bool, dict[str, str]]:
    """(data, is_domain, display names). ``demo`` and any folder are domains; else a set or JSONL."""
    from lingxi.datasets.domain import demo_domain_path

    path = demo_domain_path() if dataset == "demo" else Path(dataset)
    if path.is_dir():
        data, display = _domain_dataset(path)
        return data, True, display
    return load_intent_dataset(dataset, datasets_dir, skip_bad_lines), False, {}


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
    shots: int | Sequence[int] | None = None,
    percentages: Sequence[float] | None = None,
    report: bool = True,
    tracking_uri: str | None = None,
) -> dict:
    """Run the intent suite and write the run folder; returns ``results`` (also in results.json).

    ``shots``: one or several few-shot sizes; the largest is the headline run, all are tabulated.
    ``percentages``: learning curve over stratified samples of the training rows (100 = headline).
    """
    config = replace(config or TrainConfig(), seed=seed)
    shot_list = sorted({shots} if isinstance(shots, int) else set(shots or ()))
    pcts = sorted({float(p) for p in percentages or ()})
    if any(not 0 < p <= 100 for p in pcts):
        raise DatasetError("--percentages must be in (0, 100]")
    if any(s < 1 for s in shot_list):
        raise DatasetError("--shots must be positive")
    if shot_list and pcts:
        raise DatasetError("use either --shots or --percentages, not both")
    data, is_domain, display = load_eval_data(dataset, datasets_dir, skip_bad_lines)
    if is_domain:
        train_oos = True  # a domain's out_of_scope examples are training data by design (as in `lingxi train`)
    normalizer = Normalizer(config.normalizer)
    encoder = encoder or build_encoders(config.encoders)
    started = time.perf_counter()
    kfold = folds or data.kfold
    results_extra: dict = {}
    curve: list[dict] = []
    few: list[dict] = []
    if kfold:
        if shot_list:
            raise DatasetError("--shots needs a train/test split; it cannot be combined with k-fold")
        rows = data.rows
        full = _embed(rows, encoder, normalizer)
        skf = StratifiedKFold(n_splits=kfold, shuffle=True, random_state=seed)
        parts: list[SplitResult] = []
        fold_curves: list[list[dict]] = []
        for k, (tr, te) in enumerate(skf.split(full.texts, full.labels)):
            train, test, test_rows = full.subset(tr), full.subset(te), [rows[i] for i in te]
            part = _evaluate_split(train, None, test, test_rows, [int(i) for i in te], config, train_oos)
            for p in part.predictions:
                p["fold"] = k
            parts.append(part)
            if pcts:
                fold_curves.append(_learning_curve(train, None, test, test_rows, [int(i) for i in te], pcts, part,
                                                    config, train_oos))
        fold_metrics = [p.metrics for p in parts]
        summary = {k: (float(np.mean([f[k] for f in fold_metrics])) if fold_metrics[0][k] is not None else None)
                   for k in SUMMARY_KEYS}
        summary["std"] = {k: float(np.std([f[k] for f in fold_metrics])) for k in SUMMARY_KEYS
                          if fold_metrics[0][k] is not None}
        predictions = [p for part in parts for p in part.predictions]
        summary["per_intent"] = per_intent_report([p["gold"] for p in predictions],
                                                  [p["predicted"] for p in predictions])
        summary["unknown_test_labels"] = sorted({u for f in fold_metrics for u in f["unknown_test_labels"]})
        scored = Scored.concat([p.scored for p in parts])
        heldout = None
        chosen = Thresholds(**{k: float(np.mean([getattr(p.thresholds, k) for p in parts]))
                               for k in ("reject", "answer", "margin", "similarity_weight")})
        fitted_on = "out-of-fold predictions within each fold's training rows (mean of the folds' thresholds)"
        split = f"{kfold}-fold stratified CV over all rows"
        results_extra["folds"] = [{"fold": k, **{m: v for m, v in f.items() if m != "per_intent"}}
                                  for k, f in enumerate(fold_metrics)]
        n_train = int(len(rows) * (kfold - 1) / kfold)
        if fold_curves:
            curve = [{**fold_curves[0][i], **{m: _mean([c[i][m] for c in fold_curves]) for m in CURVE_KEYS},
                      "n_train": int(np.mean([c[i]["n_train"] for c in fold_curves]))}
                     for i in range(len(fold_curves[0]))]
    else:
        all_train = data.split(data.train_split)
        val_rows = data.split(data.val_split)
        test_rows = data.split(data.test_split)
        if not all_train or not test_rows:
            raise DatasetError(f"{data.source}: needs non-empty train and test splits")
        val = _embed(val_rows, encoder, normalizer) if val_rows else None
        test = _embed(test_rows, encoder, normalizer)
        ids = list(range(len(test_rows)))
        part = None
        for s in shot_list or [None]:
            train_rows = few_shot(all_train, s, seed) if s else all_train
            train = _embed(train_rows, encoder, normalizer)
            part = _evaluate_split(train, val, test, test_rows, ids, config, train_oos)
            if s:
                few.append(_curve_point("shots", s, len(train_rows), part.metrics))
        assert part is not None
        if pcts:
            curve = _learning_curve(train, val, test, test_rows, ids, pcts, part, config, train_oos)
        summary = part.metrics
        predictions, scored, heldout, chosen = part.predictions, part.scored, part.heldout, part.thresholds
        if val_rows:
            fitted_on = "val"
        elif len(train) >= config.slice_calibration_above:
            fitted_on = f"a seeded {config.calibration_fraction:.0%} slice of train"
        else:
            fitted_on = "out-of-fold predictions on train"
        split = f"test (thresholds fitted on {fitted_on})"
        n_train = len(train_rows)

    gold = [p["gold"] for p in predictions]
    predicted = [p["predicted"] for p in predictions]
    in_scope = scored.gold != OOS
    summary["most_confused"] = most_confused(gold, predicted, [p["text"] for p in predictions])
    summary["reliability"] = reliability_bins(scored.p1[in_scope], (scored.top == scored.gold)[in_scope])
    sweeps = {"test": sweep(scored, chosen)}
    if heldout is not None:
        sweeps = {"val": sweep(heldout, chosen), **sweeps}
    summary["threshold_sweep"] = {"chosen": chosen.to_dict(), "fitted_on": fitted_on, "splits": sweeps}
    model_info = {
        "encoder": encoder.name,
        "encoders": [asdict(e) for e in config.encoders],
        "head": asdict(config.head),
        "policy": asdict(config.policy),
    }
    headline_shots = shot_list[-1] if shot_list else None
    model_info["version"] = config_version(model_info, data.fingerprint, seed, headline_shots, train_oos, kfold)
    results = {
        **provenance("intent"),
        "dataset": data.name,
        "source": data.source,
        "dataset_fingerprint": data.fingerprint,
        "split": split,
        "seed": seed,
        "n_train": n_train,
        "n_test": len(predictions),
        "train_oos": train_oos,
        "shots": headline_shots,
        "skipped_lines": list(data.skipped),
        "model": model_info,
        **summary,
        **results_extra,
        "learning_curve": curve or None,
        "few_shot": few or None,
        "reference": references_for(data.name, headline_shots),
        "files": {"errors": ERRORS, "predictions": PREDICTIONS, "report": REPORT if report else None},
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(out_dir)
    errors = [{k: v for k, v in p.items() if k != "second"} for p in predictions if p["predicted"] != p["gold"]]
    write_results(out, results)
    write_jsonl(out / ERRORS, errors)
    write_jsonl(out / PREDICTIONS, predictions)
    if report:
        figures = _figures(results, scored, gold, predicted, display)
        results["files"]["figures"] = write_figures(out, figures)
        write_report(out, intent_page(results, figures, errors, display))
        write_results(out, results)
    if tracking_uri:
        from .tracking import log_eval_run

        log_eval_run(out, results, tracking_uri)
    return results


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _learning_curve(train: Dataset, val: Dataset | None, test: Dataset, test_rows: Sequence[IntentRow],
                    ids: Sequence[int], pcts: Sequence[float], full: SplitResult, config: TrainConfig,
                    train_oos: bool) -> list[dict]:
    """Test metrics after training on stratified ``pcts`` % of ``train`` (100 % = the headline run)."""
    points = []
    for p in pcts:
        if p >= 100:
            points.append(_curve_point("percent", 100, len(train), full.metrics))
            continue
        keep = sample_fraction(train.labels, p / 100, config.seed)
        part = _evaluate_split(train.subset(keep), val, test, test_rows, ids, config, train_oos)
        points.append(_curve_point("percent", p, len(keep), part.metrics))
    return points


def _figures(results: dict, scored: Scored, gold: list[str], predicted: list[str],
             display: dict[str, str]) -> dict[str, bytes]:
    in_scope = scored.gold != OOS
    right = in_scope & (scored.top == scored.gold)
    sweep_data = results["threshold_sweep"]
    weight = sweep_data["chosen"].get("similarity_weight") or 0.0
    reject_score = scored.reject_score(Thresholds(**sweep_data["chosen"]))
    xlabel = ("confidence of the top in-scope intent" if not weight or scored.similarity is None else
              f"reject score p1·exp({weight:g}·(cos−1)) (similarity-discounted confidence)")
    figures = {
        "confusion": plots.confusion_png(gold, predicted, display=display),
        "reliability": plots.reliability_png(results["reliability"], results.get("ece")),
        "confidence": plots.confidence_hist_png(reject_score[right], reject_score[in_scope & ~right],
                                                reject_score[~in_scope], sweep_data["chosen"]["reject"],
                                                xlabel),
        "threshold_sweep": plots.sweep_png(sweep_data["splits"], sweep_data["chosen"]),
    }
    refs = {r["method"]: r["value"] for r in results["reference"] if r["value"] is not None}
    if results.get("learning_curve"):
        figures["learning_curve"] = plots.curve_png(results["learning_curve"], "percent", "% of training rows",
                                                    "learning curve (test)")
    if results.get("few_shot"):
        figures["few_shot"] = plots.curve_png(results["few_shot"], "shots", "examples per intent",
                                              "few-shot (test)", keys=("accuracy", "in_scope_top1_accuracy"),
                                              references=refs, reference_x=results["shots"])
    return figures
