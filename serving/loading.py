"""Turn a saved model bundle into a ready :class:`NLUPipeline`, and hold the one being served.

``ModelHolder`` swaps pipelines atomically: a reload builds and warms the new pipeline first and
only then replaces the reference, so requests in flight finish on the old one and a bundle that
fails to load never replaces a working one.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

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
        entities=EntityExtractor({p.name: p.pattern for p in bundle.entity_patterns}),
        intents={i.name: IntentMeta(i.label, i.category, i.response) for i in bundle.intents},
        model_ref=ModelRef(bundle.bot, bundle.version),
        clarify_menus={c.name: list(c.clarify) for c in bundle.categories if c.clarify},
        ranking_size=ranking_size,
    )


@dataclass
class LoadedModel:
    pipeline: NLUPipeline
    bundle: ModelBundle
    path: Path


class ModelHolder:
    def __init__(self, models_dir: Path, bot: str, ranking_size: int = 5) -> None:
        self.models_dir = models_dir
        self.bot = bot
        self.ranking_size = ranking_size
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._encoders: dict[str, Encoder] = {}

    def _encoder_for(self, bundle: ModelBundle) -> Encoder:
        """Reuse an already-built encoder when a new bundle uses the same ones (cheap reloads)."""
        key = repr(bundle.encoders)
        if key not in self._encoders:
            self._encoders[key] = build_encoders(bundle.encoders)
        return self._encoders[key]

    def load_latest(self) -> LoadedModel | None:
        """Load the newest bundle if it differs from the current one; keep the old one on failure."""
        with self._lock:
            path = latest_bundle_path(self.models_dir, self.bot)
            if path is None:
                self.last_error = f"no trained model for bot {self.bot!r} in {self.models_dir}"
                return self.current
            if self.current and self.current.path == path:
                return self.current
            try:
                bundle = load_bundle(path)
                pipeline = pipeline_from_bundle(bundle, self._encoder_for(bundle), self.ranking_size)
                pipeline.warmup()
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old model serving
                self.last_error = f"failed to load {path}: {exc}"
                log.exception("model load failed; keeping %s", self.current.path if self.current else "nothing")
                return self.current
            self.current = LoadedModel(pipeline, bundle, path)
            self.last_error = None
            log.info("serving model %s version %s", bundle.bot, bundle.version)
            return self.current
