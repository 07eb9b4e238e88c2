"""Log an eval run to MLflow: provenance as params, headline numbers as metrics, the folder as artifacts.

Logging happens when asked for: ``--mlflow`` (the default store, ``$LINGXI_HOME/mlflow.db``),
``--tracking-uri URI``, or ``MLFLOW_TRACKING_URI`` in the environment. Experiments are named
``lingxi-eval/<suite>``; curves (learning curve, few-shot, Recall@k) are logged as stepped metrics
so MLflow draws them; the run id is written back into ``results.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .runs import write_results

PARAM_KEYS = ("dataset", "source", "dataset_fingerprint", "split", "seed", "n_train", "shots", "train_oos",
              "protocol", "lingxi_version", "git_commit", "command")


def add_tracking_options(parser) -> None:
    parser.add_argument("--mlflow", action="store_true",
                        help="log the run to MLflow (default store $LINGXI_HOME/mlflow.db)")
    parser.add_argument("--tracking-uri", help="log the run to this MLflow tracking URI")


def tracking_uri_from(args) -> str | None:
    """The URI to log to, or ``None`` when the user did not ask for MLflow."""
    from lingxi.training.tracking import default_tracking_uri

    if getattr(args, "tracking_uri", None):
        return args.tracking_uri
    if getattr(args, "mlflow", False) or os.environ.get("MLFLOW_TRACKING_URI"):
        return default_tracking_uri()
    return None


def _numbers(results: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in results.items():
        if isinstance(value, bool) or key in ("seed", "schema_version"):
            continue
        if isinstance(value, int | float):
            out[key] = float(value)
        elif key == "modes" and isinstance(value, dict):  # retrieval: per mode
            for mode, metrics in value.items():
                out.update({f"{mode}.{k}".replace("@", "_at_"): float(v) for k, v in metrics.items()})
    return out


def log_eval_run(out_dir: str | Path, results: dict, tracking_uri: str) -> str:
    """Log ``results`` and every file of ``out_dir``; returns the MLflow run id."""
    import mlflow

    from lingxi.training.tracking import experiment_id, lingxi_home

    lingxi_home().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    exp = experiment_id(mlflow, f"lingxi-eval/{results['suite']}")
    model = results.get("model") or {}
    name = f"{results['suite']}-{results.get('dataset', '')}-{model.get('version', '')}".strip("-")
    with mlflow.start_run(experiment_id=exp, run_name=name) as run:
        params = {k: str(results[k])[:500] for k in PARAM_KEYS if results.get(k) is not None}
        params.update({f"model.{k}": str(v)[:500] for k, v in model.items()})
        mlflow.log_params(params)
        mlflow.log_metrics(_numbers(results))
        for key, step_key in (("learning_curve", "percent"), ("few_shot", "shots")):
            for point in results.get(key) or []:
                mlflow.log_metrics({f"{key}.{m}": float(v) for m, v in point.items()
                                    if m != step_key and isinstance(v, int | float) and not isinstance(v, bool)},
                                   step=int(point[step_key]))
        for mode, curve in (results.get("recall_curve") or {}).items():
            for k, value in enumerate(curve, 1):
                mlflow.log_metric(f"{mode}.recall_curve", float(value), step=k)
        mlflow.set_tags({"lingxi.suite": results["suite"], "lingxi.dataset": str(results.get("dataset")),
                         "lingxi.dataset_fingerprint": str(results.get("dataset_fingerprint")),
                         "lingxi.model_version": str(model.get("version")),
                         "mlflow.source.git.commit": results.get("git_commit") or "unknown"})
        run_id = run.info.run_id
        results["mlflow_run_id"] = run_id
        write_results(Path(out_dir), results)
        mlflow.log_artifacts(str(out_dir), artifact_path="eval")
    return run_id
