"""Turn a saved model bundle into a ready :class:`NLUPipeline`, and hold the one being served.

``ModelHolder`` swaps pipelines atomically: a reload builds and warms the new pipeline first and
only then replaces the reference, so requests in flight finish on the old one and a bundle that
fails to load never replaces a working one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lingxi.nlu.batching import BatchingEncoder, BatchObserver
from lingxi.nlu.embedding_cache import CachingEncoder, LookupObserver
from lingxi.nlu.encoders import Encoder, build_encoders
from lingxi.nlu.entities import EntityExtractor
from lingxi.nlu.normalize import Normalizer
from lingxi.nlu.parse import IntentMeta, ModelRef, NLUPipeline
from lingxi.nlu.rules import KeywordRules
from lingxi.training.bundle import ModelBundle, latest_bundle_path, load_bundle

log = logging.getLogger("lingxi.serving")


def pipeline_from_bundle(bundle: ModelBundle, encoder: Encoder | None = None, ranking_size: int = 5) -> NLUPipeline:
    normalizer = Normalizer(bundle.normalizer)
    return NLUPipeline(
        model=bundle.intent_model,
        encoder=encoder or build_encoders(bundle.encoders),
        normalizer=normalizer,
        rules=KeywordRules(bundle.rules, normalize=normalizer),
        entities=EntityExtractor({p.name: p.pattern for p in bundle.entity_patterns},
                                 values={p.name: p.values for p in bundle.entity_patterns if p.values}),
        intents={i.name: IntentMeta(i.label, i.category, i.response, i.article) for i in bundle.intents},
        model_ref=ModelRef(bundle.bot, bundle.version),
        clarify_menus={c.name: list(c.clarify) for c in bundle.categories if c.clarify},
        ranking_size=ranking_size,
    )


def serving_encoder(encoder: Encoder, *, batch_max: int = 32, batch_wait_ms: float = 2.0, cache_size: int = 0,
                    replicas: int = 1, build_replica: Callable[[], Encoder] | None = None,
                    on_batch: BatchObserver | None = None, on_lookup: LookupObserver | None = None) -> Encoder:
    """The encoder as the server uses it: the embedding cache in front of the micro-batcher, so a
    repeated message never queues and the misses of concurrent requests share one encoder call.

    ``replicas`` > 1 (with ``build_replica`` to make the extra instances) gives the batcher one
    engine per worker thread, so concurrent batches encode on several cores (nlu/batching.py);
    without ``build_replica`` there is only ``encoder``.
    """
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    extra = [build_replica() for _ in range(replicas - 1)] if build_replica is not None else []
    batched = BatchingEncoder([encoder, *extra], batch_max, batch_wait_ms, on_batch)
    return CachingEncoder(batched, cache_size, on_lookup) if cache_size else batched


@dataclass
class LoadedModel:
    pipeline: NLUPipeline
    bundle: ModelBundle
    path: Path
    source: str = "local"  # local | registry | cache (registry unreachable: last good download)
    registry_version: str | None = None


@dataclass(frozen=True)
class Located:
    path: Path
    source: str
    registry_version: str | None = None


class LocalSource:
    """The newest bundle in ``models_dir/bot`` (what ``lingxi train`` wrote last)."""

    def __init__(self, models_dir: Path, bot: str) -> None:
        self.models_dir, self.bot = models_dir, bot

    def locate(self) -> Located | None:
        path = latest_bundle_path(self.models_dir, self.bot)
        return Located(path, "local") if path else None

    def describe(self) -> dict:
        return {"kind": "local", "models_dir": str(self.models_dir)}


class RegistrySource:
    """``models:/<bot>@<alias>`` in MLflow, downloaded into a local cache.

    The last version that loaded is remembered in ``<cache>/<bot>/<alias>.json``; when the registry
    is unreachable at start, that cached bundle serves (``source == "cache"``) and readiness says so.
    """

    def __init__(self, registry_factory, bot: str, alias: str, cache_dir: Path) -> None:
        self._factory, self.bot, self.alias, self.cache_dir = registry_factory, bot, alias, cache_dir
        self._registry = None
        self.last_error: str | None = None

    def _pointer(self) -> Path:
        return self.cache_dir / self.bot / f"{self.alias}.json"

    def locate(self) -> Located | None:
        import json

        try:
            if self._registry is None:
                self._registry = self._factory()
            version = self._registry.alias_version(self.bot, self.alias)
            if version is None:
                self.last_error = f"no version of {self.bot!r} has alias {self.alias!r}"
                return None
            path = self._registry.download(self.bot, version, self.cache_dir)
            self._pointer().parent.mkdir(parents=True, exist_ok=True)
            self._pointer().write_text(json.dumps({"version": version, "path": str(path)}), "utf-8")
            self.last_error = None
            return Located(path, "registry", version)
        except Exception as exc:  # noqa: BLE001 - registry down: fall back to the cached bundle
            self.last_error = f"registry unreachable: {exc}"
            self._registry = None
            if self._pointer().is_file():
                cached = json.loads(self._pointer().read_text("utf-8"))
                return Located(Path(cached["path"]), "cache", cached["version"])
            return None

    def describe(self) -> dict:
        return {"kind": "registry", "model": f"models:/{self.bot}@{self.alias}", "last_error": self.last_error}


EncoderWrapper = Callable[[Encoder, Callable[[], Encoder]], Encoder]


class ModelHolder:
    """The model being served. ``wrap_encoder(encoder, build_another)`` decorates freshly built
    encoders (serving adds the micro-batcher, its replicas and the embedding cache); ``on_swap`` is
    told about every model swapped in."""

    def __init__(self, models_dir: Path, bot: str, ranking_size: int = 5, source=None,
                 wrap_encoder: EncoderWrapper | None = None,
                 on_swap: Callable[[LoadedModel], None] | None = None) -> None:
        self.models_dir = models_dir
        self.bot = bot
        self.ranking_size = ranking_size
        self.source = source or LocalSource(models_dir, bot)
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self.wrap_encoder = wrap_encoder
        self.on_swap = on_swap
        self._lock = threading.Lock()
        self._encoders: dict[str, Encoder] = {}

    def _encoder_for(self, bundle: ModelBundle) -> Encoder:
        """Reuse an already-built encoder when a new bundle uses the same ones (cheap reloads; the
        batcher's thread and the embedding cache carry over, which is right: same weights, same rows)."""
        key = repr(bundle.encoders)
        if key not in self._encoders:
            encoder = build_encoders(bundle.encoders)
            self._encoders[key] = self.wrap_encoder(encoder, lambda: build_encoders(bundle.encoders)) \
                if self.wrap_encoder else encoder
        return self._encoders[key]

    def load_latest(self) -> LoadedModel | None:
        """Load what the source points at if it differs from the current model.

        The new pipeline is built and warmed before the reference is swapped, so requests in flight
        finish on the old model, and a bundle that fails to load or warm up never replaces it.
        """
        with self._lock:
            located = self.source.locate()
            if located is None:
                self.last_error = getattr(self.source, "last_error", None) or \
                    f"no trained model for bot {self.bot!r} in {self.models_dir}"
                return self.current
            path = located.path
            if self.current and self.current.path == path:
                if self.current.source != located.source:
                    self.current = LoadedModel(self.current.pipeline, self.current.bundle, path,
                                               located.source, located.registry_version)
                self.last_error = getattr(self.source, "last_error", None) if located.source == "cache" else None
                return self.current
            try:
                bundle = load_bundle(path)
                pipeline = pipeline_from_bundle(bundle, self._encoder_for(bundle), self.ranking_size)
                pipeline.warmup()
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old model serving
                self.last_error = f"failed to load {path}: {exc}"
                log.exception("model load failed; keeping %s", self.current.path if self.current else "nothing")
                return self.current
            self.current = LoadedModel(pipeline, bundle, path, located.source, located.registry_version)
            self.last_error = getattr(self.source, "last_error", None) if located.source == "cache" else None
            log.info("serving model %s version %s", bundle.bot, bundle.version)
            if self.on_swap is not None:
                self.on_swap(self.current)
            return self.current
