"""Registry with a real MLflow store: aliases, the eval gate, rollback, the promotion log, and
serving that follows ``models:/demo-shop@champion``.

Uses the local SQLite store by default; with ``LINGXI_TEST_MLFLOW_URI`` set (CI starts an
``mlflow server`` backed by PostgreSQL) the same tests run against that tracking server.
"""

from __future__ import annotations

import os
import threading

import mlflow.pyfunc
import pandas as pd
import pytest
from litestar.testing import TestClient

from lingxi.datasets.domain import demo_domain_path
from lingxi.serving.app import create_app
from lingxi.serving.loading import ModelHolder, RegistrySource
from lingxi.serving.settings import Settings
from lingxi.training.registry import CHALLENGER, CHAMPION, GateFailed, Registry, RegistryError, promotion_log
from lingxi.training.tracking import log_training_run
from lingxi.training.train import TrainConfig, train_domain


@pytest.fixture(scope="module")
def registry(lingxi_home, tmp_path_factory):
    uri = os.environ.get("LINGXI_TEST_MLFLOW_URI") or f"sqlite:///{lingxi_home / 'mlflow.db'}"
    log = os.environ.get("LINGXI_TEST_POSTGRES_URL") or f"sqlite:///{tmp_path_factory.mktemp('reglog') / 'registry.db'}"
    reg = Registry(uri, log_url=log)
    with reg.engine.begin() as conn:  # a shared PostgreSQL keeps earlier runs' log rows: start clean
        conn.execute(promotion_log.delete().where(promotion_log.c.bot == "demo-shop"))
    return reg


@pytest.fixture(scope="module")
def versions(registry, trained_demo, demo_encoder, lingxi_home):
    """v1: the full demo model; v2: trained on 10% of the data; v3: full again (a fresh run)."""
    bot = trained_demo.bundle.bot
    before = {v["version"] for v in registry.versions(bot)}
    run1 = log_training_run(trained_demo.bundle, TrainConfig(), n_train=0, tracking_uri=registry.tracking_uri)
    v1 = registry.register(trained_demo.bundle, run1)
    weak = train_domain(demo_domain_path(), lingxi_home / "weak-models", encoder=demo_encoder,
                        tracking_uri=registry.tracking_uri, sample_fraction=0.1)
    v2 = registry.register(weak.bundle, weak.run_id)
    run3 = log_training_run(trained_demo.bundle, TrainConfig(), n_train=0, tracking_uri=registry.tracking_uri)
    v3 = registry.register(trained_demo.bundle, run3)
    assert not {v1, v2, v3} & before
    return bot, v1, v2, v3


def test_registration_sets_challenger_and_pyfunc_loads(registry, versions):
    bot, v1, v2, v3 = versions
    assert registry.alias_version(bot, CHALLENGER) == v3
    model = mlflow.pyfunc.load_model(f"models:/{bot}/{v1}")
    out = model.predict(pd.DataFrame({"text": ["我账号出问题了", "帮我订一张去上海的高铁票"]}))
    assert list(out["decision"]) == ["clarify", "out_of_scope"]


def test_gate_refuses_weak_model_and_promotes_strong_one_then_rollback(registry, versions):
    from lingxi.training.gate import GateConfig

    bot, v1, v2, v3 = versions
    # this test is about accuracy gating; a loaded test machine must not trip the latency budget
    relaxed = GateConfig(latency_budget_ms=2000.0)
    entry, report = registry.promote(bot, v1, demo_domain_path(), "tester", "first champion", gate_config=relaxed)
    assert report.passed and registry.alias_version(bot, CHAMPION) == v1

    with pytest.raises(GateFailed) as failed:
        registry.promote(bot, v2, demo_domain_path(), "tester", "should fail", gate_config=relaxed)
    checks = {c.name: c for c in failed.value.report.checks}
    assert not checks["accuracy"].passed
    assert checks["accuracy"].values["delta"]["delta"] < -0.05
    assert registry.alias_version(bot, CHAMPION) == v1  # no alias change on refusal

    entry, report = registry.promote(bot, v3, demo_domain_path(), "tester", "retrained", gate_config=relaxed)
    assert report.passed and entry.from_version == v1 and registry.alias_version(bot, CHAMPION) == v3

    back = registry.rollback(bot, "tester", "bad feedback")
    assert (back.from_version, back.to_version) == (v3, v1)
    assert registry.alias_version(bot, CHAMPION) == v1
    log = registry.history(bot)
    assert [(e.action, e.from_version, e.to_version) for e in log[-3:]] == [
        ("promote", None, v1), ("promote", v1, v3), ("rollback", v3, v1)]
    assert log[-2].gate["passed"] is True and log[-2].actor == "tester"


def test_refusals_change_nothing(registry, versions):
    bot, v1, v2, v3 = versions
    before = (registry.alias_version(bot, CHAMPION), len(registry.history(bot)))
    with pytest.raises(RegistryError, match="no version"):
        registry.promote(bot, "999", demo_domain_path(), "tester", "nope")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(bot, before[0], demo_domain_path(), "tester", "nope")
    assert (registry.alias_version(bot, CHAMPION), len(registry.history(bot))) == before


def test_two_promotions_at_once_one_wins(registry, versions):
    bot, v1, v2, v3 = versions
    assert registry.alias_version(bot, CHAMPION) == v1
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def attempt() -> None:
        barrier.wait()
        try:
            registry.promote(bot, v3, demo_domain_path(), "racer", "race")
            outcomes.append("won")
        except RegistryError:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused", "won"]
    assert registry.alias_version(bot, CHAMPION) == v3
    assert [e.to_version for e in registry.history(bot)].count(v3) == 2  # the earlier promote + this one


def test_serving_follows_the_alias_without_failed_requests(registry, versions, demo_encoder, lingxi_home, trained_demo):
    bot, v1, v2, v3 = versions
    if registry.alias_version(bot, CHAMPION) is None:
        registry.promote(bot, v1, demo_domain_path(), "tester", "start from v1")
    elif registry.alias_version(bot, CHAMPION) == v3:
        registry.rollback(bot, "tester", "start from v1")
    assert registry.alias_version(bot, CHAMPION) == v1
    cache = lingxi_home / "serving-cache"
    source = RegistrySource(lambda: registry, bot, CHAMPION, cache)
    holder = ModelHolder(lingxi_home / "models", bot, source=source)
    holder._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder
    settings = Settings(home=str(lingxi_home), model_source="registry", registry_poll_seconds=0)
    failures: list[int] = []
    stop = threading.Event()
    with TestClient(create_app(settings, holder)) as client:
        assert client.get("/readyz").json()["model"]["registry_version"] == v1

        def traffic() -> None:
            while not stop.is_set():
                r = client.post("/v1/parse", json={"text": "我的快递到哪了"})
                if r.status_code != 200:
                    failures.append(r.status_code)

        workers = [threading.Thread(target=traffic) for _ in range(3)]
        for w in workers:
            w.start()
        registry.promote(bot, v3, demo_domain_path(), "tester", "hot swap")
        reload = client.post("/v1/admin/reload")
        stop.set()
        for w in workers:
            w.join()
        assert reload.status_code == 200, reload.text
        assert failures == []
        ready = client.get("/readyz").json()
        assert ready["model"]["registry_version"] == v3 and ready["status"] == "ready"
        overview = client.get("/v1/models").json()
        assert overview["loaded"]["registry_version"] == v3
        assert any(CHAMPION in v["aliases"] for v in overview["registered_versions"])


def test_unreachable_registry_serves_the_cached_bundle(registry, versions, demo_encoder, lingxi_home, trained_demo):
    bot, v1 = versions[0], versions[1]
    if registry.alias_version(bot, CHAMPION) is None:
        registry.promote(bot, v1, demo_domain_path(), "tester", "a champion to cache")
    # a successful start downloads the champion and remembers it
    assert RegistrySource(lambda: registry, bot, CHAMPION, lingxi_home / "serving-cache").locate().source == "registry"

    def broken():
        raise ConnectionError("registry down")

    source = RegistrySource(broken, bot, CHAMPION, lingxi_home / "serving-cache")
    holder = ModelHolder(lingxi_home / "models", bot, source=source)
    holder._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder
    with TestClient(create_app(Settings(home=str(lingxi_home)), holder)) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "degraded" and ready["model"]["source"] == "cache"
        assert "registry down" in ready["detail"]
        assert client.post("/v1/parse", json={"text": "你好"}).status_code == 200
