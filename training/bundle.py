"""The servable model bundle: everything a server needs to answer ``/v1/parse`` for one bot.

A bundle is a folder ``<models_dir>/<bot>/<version>/``:

* ``bundle.json`` — human-readable card: encoders, normaliser settings, head config, temperature,
  thresholds, classes, intent metadata (labels, categories, responses), keyword rules, entity
  patterns, domain fingerprint, metrics;
* ``head.joblib`` — the fitted featuriser + head (scikit-learn objects).

Versions are UTC timestamps plus a short content hash, so "newest" is a string sort and two
trainings of the same data in the same second do not collide.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import msgspec

from lingxi.datasets.domain import CategorySpec, EntityPatternSpec, IntentSpec, RuleSpec
from lingxi.nlu.decision import DecisionPolicy, Thresholds
from lingxi.nlu.encoders import EncoderConfig
from lingxi.nlu.intent import HeadConfig, IntentModel
from lingxi.nlu.normalize import NormalizerConfig
from lingxi.nlu.texts import Text

FORMAT_VERSION = 1
BUNDLED = "bundle:"  # an encoder ``model`` starting with this lives inside the bundle folder


class BundleError(RuntimeError):
    """A bundle folder is missing, incomplete or of an unknown format."""


@dataclass
class IntentInfo:
    """What a server says about an intent: ``label`` and ``response`` are one text or per language."""

    name: str
    label: Text
    category: str | None = None
    response: Text | None = None
    article: str | None = None  # the intent's own help article


@dataclass
class ModelBundle:
    bot: str
    version: str
    created_at: str
    encoders: list[EncoderConfig]
    normalizer: NormalizerConfig
    intent_model: IntentModel
    intents: list[IntentInfo]
    rules: list[RuleSpec] = field(default_factory=list)
    entity_patterns: list[EntityPatternSpec] = field(default_factory=list)
    categories: list[CategorySpec] = field(default_factory=list)
    language: str = "zh"
    domain_fingerprint: str = ""
    metrics: dict[str, float | None] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.bot

    def intent_info(self) -> dict[str, IntentInfo]:
        return {i.name: i for i in self.intents}


def intent_infos(specs: list[IntentSpec]) -> list[IntentInfo]:
    return [IntentInfo(s.name, s.label or s.name, s.category, s.response, s.article) for s in specs]


def new_version(content_hint: str = "") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    digest = hashlib.sha256(f"{stamp}{content_hint}{os.getpid()}{os.urandom(4).hex()}".encode()).hexdigest()[:6]
    return f"{stamp}-{digest}"


def _card(bundle: ModelBundle) -> dict[str, Any]:
    m = bundle.intent_model
    return {
        "format_version": FORMAT_VERSION,
        "bot": bundle.bot,
        "version": bundle.version,
        "created_at": bundle.created_at,
        "language": bundle.language,
        "encoders": [asdict(e) for e in bundle.encoders],
        "normalizer": asdict(bundle.normalizer),
        "head": asdict(m.head),
        "policy": asdict(m.policy),
        "temperature": m.temperature_,
        "thresholds": m.thresholds_.to_dict(),
        "classes": m.classes_,
        "intents": [asdict(i) for i in bundle.intents],
        "rules": msgspec.to_builtins(bundle.rules),
        "entity_patterns": msgspec.to_builtins(bundle.entity_patterns),
        "categories": msgspec.to_builtins(bundle.categories),
        "domain_fingerprint": bundle.domain_fingerprint,
        "metrics": bundle.metrics,
    }


def save_bundle(bundle: ModelBundle, models_dir: str | Path) -> Path:
    """Write atomically (temp folder + rename) so a crashed save never looks like a model."""
    target = Path(models_dir) / bundle.bot / bundle.version
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle.version}.", dir=target.parent))
    try:
        m = bundle.intent_model
        bundle.encoders = [_embed_weights(e, tmp) for e in bundle.encoders]
        joblib.dump({"featurizer": m.featurizer_, "head": m.head_}, tmp / "head.joblib")
        (tmp / "bundle.json").write_text(json.dumps(_card(bundle), ensure_ascii=False, indent=2), "utf-8")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle.path = target
    return target


def _embed_weights(cfg: EncoderConfig, folder: Path) -> EncoderConfig:
    """Copy fine-tuned encoder weights into the bundle, so a registered bundle is self-contained.

    Only encoders marked ``options["bundle_weights"] == "true"`` (set by ``lingxi train --finetune``)
    are copied; hub names and packaged models stay references.
    """
    if cfg.options.get("bundle_weights") != "true" or not cfg.model or cfg.model.startswith(BUNDLED):
        return cfg
    name = Path(cfg.model).name
    shutil.copytree(cfg.model, folder / "encoders" / name)
    return replace(cfg, model=f"{BUNDLED}encoders/{name}")


def _resolve_weights(cfg: EncoderConfig, folder: Path) -> EncoderConfig:
    if cfg.model and cfg.model.startswith(BUNDLED):
        return replace(cfg, model=str(folder / cfg.model.removeprefix(BUNDLED)))
    return cfg


def load_bundle(path: str | Path) -> ModelBundle:
    path = Path(path)
    card_path = path / "bundle.json"
    if not card_path.is_file() or not (path / "head.joblib").is_file():
        raise BundleError(f"{path} is not a Lingxi model bundle (bundle.json/head.joblib missing)")
    card = json.loads(card_path.read_text("utf-8"))
    if card.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: unsupported bundle format {card.get('format_version')!r}")
    parts = joblib.load(path / "head.joblib")
    head_cfg = card["head"]
    head_cfg["ngram_range"] = tuple(head_cfg["ngram_range"])
    model = IntentModel(HeadConfig(**head_cfg), DecisionPolicy(**card["policy"]))
    model.featurizer_ = parts["featurizer"]
    model.head_ = parts["head"]
    model.classes_ = list(card["classes"])
    model.temperature_ = float(card["temperature"])
    model.thresholds_ = Thresholds(**card["thresholds"])
    return ModelBundle(
        bot=card["bot"],
        version=card["version"],
        created_at=card["created_at"],
        encoders=[_resolve_weights(EncoderConfig(**e), path) for e in card["encoders"]],
        normalizer=NormalizerConfig(**card["normalizer"]),
        intent_model=model,
        intents=[IntentInfo(**i) for i in card["intents"]],
        rules=msgspec.convert(card["rules"], list[RuleSpec]),
        entity_patterns=msgspec.convert(card["entity_patterns"], list[EntityPatternSpec]),
        categories=msgspec.convert(card.get("categories", []), list[CategorySpec]),
        language=card.get("language", "zh"),
        domain_fingerprint=card.get("domain_fingerprint", ""),
        metrics=card.get("metrics", {}),
        path=path,
    )


def list_versions(models_dir: str | Path, bot: str) -> list[str]:
    root = Path(models_dir) / bot
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / "bundle.json").is_file())


def latest_bundle_path(models_dir: str | Path, bot: str) -> Path | None:
    versions = list_versions(models_dir, bot)
    return Path(models_dir) / bot / versions[-1] if versions else None
