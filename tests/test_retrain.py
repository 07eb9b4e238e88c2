"""Retraining from the misunderstood queue: BANKING77 intents the bot never saw come in as customer
traffic, operators label them in the queue, ``lingxi retrain`` trains a challenger that answers them,
the gate passes it and it is registered as ``challenger`` — and never promoted."""

from __future__ import annotations

import pytest

from lingxi.datasets.public import datasets_root
from lingxi.evals import retrain_loop
from lingxi.evals.retrain_loop import BOT, LoopConfig

pytestmark = pytest.mark.skipif(not (datasets_root() / "banking77" / "banking77.jsonl").is_file(),
                                reason="BANKING77 is not in the shared datasets folder")


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    work = tmp_path_factory.mktemp("retrain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LINGXI_HOME", str(work))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        mp.delenv("LINGXI_EVENTS_URL", raising=False)
        yield work, retrain_loop.run(LoopConfig(), work)


def test_labels_from_the_queue_teach_new_intents_and_the_gate_registers_the_result(loop):
    _, r = loop
    assert r["queue_entries_resolved"] == LoopConfig().n_new * LoopConfig().traffic_per_new
    assert r["retrain_exit_code"] == 0
    assert r["registered"] == [{"version": "1", "aliases": ["challenger"]}]  # registered, not promoted
    # 3 of the 10 intents of the held-out slice were unknown to the baseline
    assert r["accuracy_before"] <= 0.75
    assert r["accuracy_after"] >= r["accuracy_before"] + 0.1
    assert r["new_accuracy_after"] >= 0.6


def test_a_challenger_that_fails_the_gate_is_not_registered(loop):
    from lingxi.training.bundle import latest_bundle_path, load_bundle
    from lingxi.training.events import EventStore, default_url
    from lingxi.training.gate import GateConfig
    from lingxi.training.misunderstood import MisunderstoodQueue
    from lingxi.training.registry import Registry
    from lingxi.training.retrain import RetrainConfig, retrain

    work, _ = loop
    store = EventStore.open(default_url(work))
    labels = MisunderstoodQueue(store).labels("default", BOT)
    store.dispose()
    assert labels and all(label.source == "operator" for label in labels)
    baseline = load_bundle(latest_bundle_path(work / "models", BOT))
    impossible = RetrainConfig(gate=GateConfig(latency_budget_ms=0.0, latency_ratio_budget=0.0))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    result = retrain(work / "domain", labels, work / "challengers", baseline=baseline, tracking_uri=uri,
                     config=impossible)
    assert not result.gate.passed and result.registered_version is None
    assert [v["version"] for v in Registry(uri).versions(BOT)] == ["1"]
    assert Registry(uri).alias_version(BOT, "champion") is None
