"""Model registry: MLflow registered models with aliases (``challenger``, ``champion``), an eval-gated
promotion, one-step rollback, and our own promotion log.

MLflow keeps only where an alias points *now*; operators also need who moved it, when, why and
with which gate result (mlflow/mlflow#2169 is still open). Every alias move is therefore a row in
``promotion_log`` (SQLite by default, PostgreSQL by URL). The row is written first under a
unique ``(bot, seq)`` key, so of two promotions racing from the same state exactly one wins and
the other is refused before any alias moves.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from .bundle import ModelBundle, load_bundle
from .gate import GateConfig, GateReport, run_gate
from .tracking import default_tracking_uri, lingxi_home

CHALLENGER = "challenger"
CHAMPION = "champion"

_meta = sa.MetaData()
promotion_log = sa.Table(
    "promotion_log", _meta,
    sa.Column("bot", sa.String(200), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("action", sa.String(20), nullable=False),  # promote | rollback
    sa.Column("alias", sa.String(50), nullable=False),
    sa.Column("from_version", sa.String(20)),
    sa.Column("to_version", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("gate", sa.Text),
    sa.Column("at", sa.String(40), nullable=False),
)


class RegistryError(RuntimeError):
    """A refused registry operation; the message says why. Nothing was changed."""


@dataclass(frozen=True)
class LogEntry:
    bot: str
    seq: int
    action: str
    alias: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    gate: dict | None
    at: str


def default_log_url() -> str:
    return os.environ.get("LINGXI_REGISTRY_LOG_URL") or f"sqlite:///{(lingxi_home() / 'registry.db').resolve()}"


class Registry:
    def __init__(self, tracking_uri: str | None = None, log_url: str | None = None) -> None:
        import mlflow

        self.tracking_uri = tracking_uri or default_tracking_uri()
        lingxi_home().mkdir(parents=True, exist_ok=True)
        self.client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self.engine = sa.create_engine(log_url or default_log_url(), future=True)
        from lingxi.retrieval.store import create_tables  # replicas may open the log together

        create_tables(_meta, self.engine)

    # ------------------------------------------------------------------ registration
    def register(self, bundle: ModelBundle, run_id: str) -> str:
        """Log the bundle as a pyfunc model in ``run_id``, register it, point ``challenger`` at it."""
        import mlflow
        import pandas as pd
        from mlflow.models import infer_signature

        from .pyfunc import LingxiPyfunc

        if bundle.path is None:
            raise RegistryError("bundle has no folder; save it first")
        mlflow.set_tracking_uri(self.tracking_uri)
        example = pd.DataFrame({"text": ["我账号出问题了", "where is my package"]})
        output = pd.DataFrame({"intent": ["login_failed", "logistics_query"], "confidence": [0.5, 0.99],
                               "decision": ["clarify", "answer"], "options": ["login_failed,password_wrong", ""]})
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=LingxiPyfunc(),
                artifacts={"bundle": str(bundle.path)},
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=["lingxi"],
                registered_model_name=bundle.bot,
            )
        version = str(info.registered_model_version)
        self.client.set_model_version_tag(bundle.bot, version, "lingxi.version", bundle.version)
        self.client.set_registered_model_alias(bundle.bot, CHALLENGER, version)
        return version

    # ------------------------------------------------------------------ reading
    def alias_version(self, bot: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(bot, alias).version)
        except MlflowException:
            return None

    def versions(self, bot: str) -> list[dict]:
        from mlflow.exceptions import MlflowException

        try:  # search results do not carry aliases; the registered model does
            aliases = self.client.get_registered_model(bot).aliases or {}
        except MlflowException:
            return []
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        out = []
        for mv in self.client.search_model_versions(f"name = '{bot}'"):
            out.append({"version": str(mv.version), "aliases": sorted(by_version.get(str(mv.version), [])),
                        "run_id": mv.run_id,
                        "lingxi_version": mv.tags.get("lingxi.version"), "created": mv.creation_timestamp})
        return sorted(out, key=lambda v: int(v["version"]))

    def download(self, bot: str, version: str, cache_dir: Path | None = None) -> Path:
        """The version's bundle folder in a local cache (downloaded once; kept for offline starts)."""
        cache = (cache_dir or lingxi_home() / "registry-cache") / bot / f"v{version}"
        found = sorted((cache / "artifacts").glob("*/bundle.json"))
        if not found:
            import mlflow

            tmp = cache.with_name(cache.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{bot}/{version}", dst_path=str(tmp))
            shutil.rmtree(cache, ignore_errors=True)
            tmp.rename(cache)
            found = sorted((cache / "artifacts").glob("*/bundle.json"))
            if not found:
                raise RegistryError(f"models:/{bot}/{version} holds no Lingxi bundle")
        return found[0].parent

    def load(self, bot: str, version: str) -> ModelBundle:
        return load_bundle(self.download(bot, version))

    def history(self, bot: str) -> list[LogEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(promotion_log).where(promotion_log.c.bot == bot)
                                .order_by(promotion_log.c.seq)).mappings().all()
        return [LogEntry(**{**r, "gate": json.loads(r["gate"]) if r["gate"] else None}) for r in rows]

    # ------------------------------------------------------------------ moving aliases
    def _last_seq(self, bot: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.coalesce(sa.func.max(promotion_log.c.seq), 0))
                                .where(promotion_log.c.bot == bot)).scalar_one()

    def _move(self, bot: str, seq: int, action: str, from_v: str | None, to_v: str, actor: str, reason: str,
              gate: dict | None) -> LogEntry:
        entry = LogEntry(bot, seq, action, CHAMPION, from_v, to_v, actor, reason, gate,
                         datetime.now(UTC).isoformat(timespec="seconds"))
        row = {**entry.__dict__, "gate": json.dumps(gate, ensure_ascii=False) if gate else None}
        try:
            with self.engine.begin() as conn:
                conn.execute(promotion_log.insert().values(**row))
        except sa.exc.IntegrityError:
            raise RegistryError(f"another alias change for {bot!r} happened meanwhile; nothing changed") from None
        try:
            self.client.set_registered_model_alias(bot, CHAMPION, to_v)
        except Exception:
            with self.engine.begin() as conn:  # keep the log truthful: the move did not happen
                conn.execute(promotion_log.delete().where((promotion_log.c.bot == bot) & (promotion_log.c.seq == seq)))
            raise
        return entry

    def promote(self, bot: str, version: str, domain: str | Path, actor: str, reason: str,
                gate_config: GateConfig | None = None) -> tuple[LogEntry, GateReport]:
        """Gate ``version`` against the champion; on a pass move ``champion`` to it."""
        known = {v["version"] for v in self.versions(bot)}
        if version not in known:
            raise RegistryError(f"{bot!r} has no version {version!r} (known: {sorted(known, key=int) or 'none'})")
        seq = self._last_seq(bot)
        champion = self.alias_version(bot, CHAMPION)
        if champion == version:
            raise RegistryError(f"version {version} is already the champion of {bot!r}")
        report = run_gate(self.load(bot, version), self.load(bot, champion) if champion else None, domain, gate_config)
        run_id = self.client.get_model_version(bot, version).run_id
        self.client.log_dict(run_id, report.to_dict(), f"gate/gate-v{version}-vs-{champion or 'none'}.json")
        self.client.log_text(run_id, report.summary(), f"gate/gate-v{version}-vs-{champion or 'none'}.txt")
        if not report.passed:
            raise GateFailed(report)
        if self.alias_version(bot, CHAMPION) != champion:
            raise RegistryError(f"the champion of {bot!r} changed during the gate; nothing changed")
        return self._move(bot, seq + 1, "promote", champion, version, actor, reason, report.to_dict()), report

    def rollback(self, bot: str, actor: str, reason: str) -> LogEntry:
        """Move ``champion`` back to the version it pointed at before the last move."""
        history = self.history(bot)
        current = self.alias_version(bot, CHAMPION)
        if not history or current is None:
            raise RegistryError(f"{bot!r} has no promotion to roll back")
        last = history[-1]
        if last.to_version != current or last.from_version is None:
            raise RegistryError(f"cannot roll back {bot!r}: the last logged move has no previous champion")
        return self._move(bot, last.seq + 1, "rollback", current, last.from_version, actor, reason, None)


class GateFailed(RegistryError):
    def __init__(self, report: GateReport) -> None:
        self.report = report
        super().__init__(report.summary())
