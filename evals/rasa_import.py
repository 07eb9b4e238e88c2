"""How well a Rasa project does once imported: ``python -m lingxi.evals.rasa_import [RASA_DIR]``.

Imports the project (default: the shared ``rasa-demo``) with ``lingxi import rasa``, then, with the
default training config, reports intent accuracy

* on the project's own held-out NLU tests (``tests/test_nlu.yml`` → ``eval/heldout.yml``; never
  trained on), also without the test texts that occur verbatim in the training data;
* from stratified 5-fold cross-validation over the imported training examples (each fold's head
  calibrated on out-of-fold predictions of its own training rows, as ``lingxi train`` does).

"top-1" is the best intent; "accepted and right" counts a rejected message (Rasa's
``nlu_fallback``) as an error. Writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from lingxi.datasets.domain import load_domain, load_eval_set
from lingxi.datasets.importers.rasa import import_rasa
from lingxi.datasets.public import datasets_root
from lingxi.nlu.encoders import build_encoders
from lingxi.nlu.normalize import Normalizer
from lingxi.training.train import TrainConfig, embed_dataset, fit_intent_model

from .intent import predict_rows


def _scores(model, data) -> dict:
    rows = predict_rows(model, data.texts, data.embeddings)
    gold = np.array(data.labels)
    return {"n": len(rows),
            "top1_accuracy": float(np.mean([r.top == g for r, g in zip(rows, gold, strict=True)])),
            "accepted_and_right": float(np.mean([r.predicted == g for r, g in zip(rows, gold, strict=True)])),
            "rejected_rate": float(np.mean([r.decision == "out_of_scope" for r in rows]))}


def run(project: Path, out: Path, folds: int = 5, seed: int = 0) -> dict:
    started = time.perf_counter()
    domain_dir = out / "domain"
    imported = import_rasa(project, domain_dir)
    domain = load_domain(domain_dir)
    heldout, _ = load_eval_set(domain_dir)
    config = TrainConfig(seed=seed)
    normalizer = Normalizer(config.normalizer)
    encoder = build_encoders(config.encoders)
    texts, labels = domain.training_pairs()
    train = embed_dataset(texts, labels, encoder, normalizer)
    test = embed_dataset([e.text for e in heldout], [e.intent for e in heldout], encoder, normalizer)

    model = fit_intent_model(train, config)
    seen = set(train.texts)
    unseen = [i for i, t in enumerate(test.texts) if t not in seen]
    results: dict = {
        "project": project.name, "intents": imported.intents, "training_examples": len(train),
        "import_counts": imported.report.counts(),
        "heldout": _scores(model, test),
        "heldout_without_training_duplicates": _scores(model, test.subset(unseen)),
    }

    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    per_fold = []
    for tr, te in skf.split(train.texts, train.labels):
        per_fold.append(_scores(fit_intent_model(train.subset(tr), config), train.subset(te)))
    results["cross_validation"] = {
        "folds": folds,
        **{k: float(np.mean([f[k] for f in per_fold])) for k in ("top1_accuracy", "accepted_and_right",
                                                                   "rejected_rate")},
        "std_top1": float(np.std([f["top1_accuracy"] for f in per_fold])),
        "per_fold": per_fold,
    }
    results["encoders"] = [e.backend for e in config.encoders]
    results["seconds"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2), "utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lingxi.evals.rasa_import", description=__doc__.split("\n")[0])
    parser.add_argument("project", nargs="?", help="Rasa project folder (default: shared datasets' rasa-demo)")
    parser.add_argument("--out", help="output folder (default: a temporary folder)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    project = Path(args.project) if args.project else datasets_root() / "rasa-demo"
    if not project.is_dir():
        print(f"error: {project}: Rasa project not found (set LINGXI_DATASETS_DIR)", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rasa-import-"))
    out.mkdir(parents=True, exist_ok=True)
    r = run(project, out, args.folds, args.seed)
    h, hu, cv = r["heldout"], r["heldout_without_training_duplicates"], r["cross_validation"]
    print(f"{r['project']}: {r['intents']} intents, {r['training_examples']} training examples "
          f"(encoders {'+'.join(r['encoders'])})")
    print(f"held-out tests/test_nlu ({h['n']}): top-1 {h['top1_accuracy']:.1%}, accepted and right "
          f"{h['accepted_and_right']:.1%}, rejected {h['rejected_rate']:.1%}")
    print(f"  without the {h['n'] - hu['n']} test texts also in training ({hu['n']}): top-1 "
          f"{hu['top1_accuracy']:.1%}, accepted and right {hu['accepted_and_right']:.1%}")
    print(f"{cv['folds']}-fold CV on the imported training data: top-1 {cv['top1_accuracy']:.1%} "
          f"(± {cv['std_top1']:.1%}), accepted and right {cv['accepted_and_right']:.1%}, rejected "
          f"{cv['rejected_rate']:.1%}")
    print(f"results: {out / 'results.json'} ({r['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
