"""MLflow tracking of training runs: params, metrics, the bundle as artifacts.

Default store: SQLite at ``$LINGXI_HOME/mlflow.db`` with artifacts under ``$LINGXI_HOME/mlartifacts``
(MLflow 3 deprecates the plain file store). ``MLFLOW_TRACKING_URI`` points at a tracking server.
mlflow is imported here only, so the serving path never pays for it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

from .bundle import ModelBundle


def lingxi_home() -> Path:
    return Path(os.environ.get("LINGXI_HOME", ".lingxi"))


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(lingxi_home() / 'mlflow.db').resolve()}"


def _flatten(prefix: str, value, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list | tuple) and value and isinstance(value[0], dict):
        for i, v in enumerate(value):
            _flatten(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = str(value)[:500]


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def experiment_id(mlflow, name: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    uri = mlflow.get_tracking_uri()
    location = None
    if uri.startswith("sqlite:") or uri.startswith("file:"):
        location = (lingxi_home() / "mlartifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def log_training_run(bundle: ModelBundle, config, n_train: int, tracking_uri: str | None = None,
                     heldout_gold: list[str] | None = None, heldout_predicted: list[str] | None = None) -> str:
    """Log one training run; returns the MLflow run id (also written into the bundle folder)."""
    import mlflow

    lingxi_home().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
    exp = experiment_id(mlflow, f"lingxi/{bundle.bot}")
    params: dict[str, str] = {}
    _flatten("", asdict(config), params)
    params.update({"n_train": str(n_train), "domain_fingerprint": bundle.domain_fingerprint,
                   "bundle_version": bundle.version})
    with mlflow.start_run(experiment_id=exp, run_name=f"train-{bundle.version}") as run:
        mlflow.log_params(params)
        mlflow.log_metrics({f"heldout.{k}": float(v) for k, v in bundle.metrics.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
        mlflow.set_tags({"lingxi.bot": bundle.bot, "lingxi.version": bundle.version,
                         "mlflow.source.git.commit": git_commit() or "unknown"})
        if bundle.path is not None:
            mlflow.log_artifacts(str(bundle.path), artifact_path="bundle")
        if heldout_gold:
            from lingxi.evals.metrics import per_intent_report
            from lingxi.evals.plots import confusion_png

            mlflow.log_dict({"metrics": bundle.metrics, "per_intent": per_intent_report(heldout_gold, heldout_predicted)},
                            "heldout/report.json")
            with tempfile.TemporaryDirectory() as tmp:
                png = Path(tmp) / "confusion_matrix.png"
                png.write_bytes(confusion_png(heldout_gold, heldout_predicted))
                mlflow.log_artifact(str(png), artifact_path="heldout")
        run_id = run.info.run_id
    if bundle.path is not None:
        (bundle.path / "mlflow_run_id").write_text(run_id, "utf-8")
    return run_id
