"""Training writes a versioned bundle, evaluates on held-out files, and logs to a real MLflow store."""

import shutil
import subprocess
import sys

from lingxi.datasets.domain import demo_domain_path
from lingxi.training.bundle import latest_bundle_path, load_bundle


def test_bundle_round_trips_and_reports_heldout_metrics(trained_demo):
    bundle = load_bundle(trained_demo.path)
    assert bundle.version == trained_demo.bundle.version
    assert len(bundle.intents) >= 40
    m = bundle.metrics
    assert m["n_in_scope"] >= 200 and m["n_oos"] >= 100
    for key in ("accuracy", "in_scope_accuracy", "oos_recall", "macro_f1"):
        assert 0.0 <= m[key] <= 1.0
    # a model that learned nothing would sit near 1/46; this one must be useful
    assert m["in_scope_top1_accuracy"] > 0.8
    t = bundle.intent_model.thresholds_
    assert 0.0 < t.reject <= t.answer < 1.0


def test_training_run_is_in_mlflow(trained_demo, lingxi_home):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{lingxi_home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lingxi/demo-shop")
    # the training run of this bundle (other tests may log further runs of the same bundle, e.g. to register it)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`lingxi.version` = '{trained_demo.bundle.version}'")
    assert trained_demo.run_id in {r.info.run_id for r in runs}
    run = client.get_run(trained_demo.run_id)
    assert run.data.metrics["heldout.in_scope_accuracy"] == trained_demo.metrics["in_scope_accuracy"]
    assert run.data.params["head.name"] == "logreg+knn"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert {"bundle/bundle.json", "bundle/head.joblib"} <= artifacts
    heldout = {a.path for a in client.list_artifacts(run.info.run_id, "heldout")}
    assert {"heldout/confusion_matrix.png", "heldout/report.json"} <= heldout
    report = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/heldout/report.json")
    assert report["per_intent"]["login_failed"]["support"] >= 5
    assert run.data.tags["mlflow.source.git.commit"] != ""


def test_cli_rejects_a_broken_domain_naming_file_and_line_and_keeps_models(tmp_path, trained_demo, lingxi_home):
    broken = tmp_path / "domain"
    shutil.copytree(demo_domain_path(), broken)
    rules = broken / "rules.yml"
    lines = rules.read_text("utf-8").splitlines()
    lines.append("  - id: bad_regex\n    match: regex\n    patterns: ['(unclosed']\n    response: x")
    rules.write_text("\n".join(lines) + "\n", "utf-8")
    before = latest_bundle_path(lingxi_home / "models", "demo-shop")
    proc = subprocess.run(
        [sys.executable, "-m", "lingxi.serving.cli", "train", "--domain", str(broken),
         "--models-dir", str(lingxi_home / "models"), "--no-mlflow"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    expected_line = len(lines) + 2  # the `patterns:` line of the appended 4-line rule
    assert f"rules.yml:{expected_line}:" in proc.stderr
    assert "bad regex" in proc.stderr
    assert latest_bundle_path(lingxi_home / "models", "demo-shop") == before
