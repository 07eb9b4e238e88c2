"""How much does conversation context help? User-turn act labels on CrossWOZ, with and without it.

    python -m lingxi.evals.crosswoz [--seeds 0 1 2] [--test-fraction 0.3] [--out eval-out/crosswoz]

Data: ``crosswoz/crosswoz_user_turns.jsonl`` and ``crosswoz_dialogues.jsonl`` from the shared
datasets folder (the validation split: 500 dialogues, 4229 user turns; the train split is not
available here). Each user turn carries 1..n labels ``Intent+Domain`` (16 labels, e.g.
``Request+餐馆``, ``General+thank``).

Protocol: dialogues are shuffled with the seed and split into train / test *by dialogue* (no turn
of a test dialogue is ever seen in training). One model per variant, identical except for its
input features:

* ``none`` — the user turn alone;
* ``prev_system`` — plus the previous system turn;
* ``history`` — plus the previous system turn, the previous user turn and the mean of all earlier
  turns of the dialogue.

Features per text: e5 ⊕ USE sentence embeddings (the project's default encoders, cached) and
character 1–3-gram TF-IDF fitted on the training turns; context texts get their own blocks.
Classifier: one-vs-rest logistic regression (C=4, balanced nothing, fixed), a label is predicted
at probability ≥ 0.5 and the most probable label is always predicted. Metrics: micro-F1,
macro-F1 over the 16 labels, samples-F1 and exact match (all labels of the turn right), plus
per-label F1. Reported per seed and as mean ± sd over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import sparse  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402
from sklearn.preprocessing import MultiLabelBinarizer  # noqa: E402

VARIANTS = ("none", "prev_system", "history")


@dataclass(frozen=True)
class UserTurn:
    dialogue_id: str
    turn: int
    text: str
    prev_system: str
    prev_user: str
    earlier: tuple[str, ...]  # every earlier turn of the dialogue, both roles
    labels: tuple[str, ...]


def load_turns(root: Path) -> list[UserTurn]:
    folder = root / "crosswoz"
    dialogues = {}
    with open(folder / "crosswoz_dialogues.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            dialogues[d["dialogue_id"]] = d["turns"]
    out: list[UserTurn] = []
    with open(folder / "crosswoz_user_turns.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            turns = dialogues[r["dialogue_id"]]
            earlier = [t for t in turns if t["turn"] < r["turn"]]
            prev_user = next((t["text"] for t in reversed(earlier) if t["role"] == "user"), "")
            out.append(UserTurn(r["dialogue_id"], r["turn"], r["text"], r["prev_system"] or "", prev_user,
                                tuple(t["text"] for t in earlier), tuple(r["labels"])))
    return out


def split_by_dialogue(turns: Sequence[UserTurn], seed: int, test_fraction: float) -> tuple[list[int], list[int]]:
    ids = sorted({t.dialogue_id for t in turns})
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    n_test = round(len(ids) * test_fraction)
    test_ids = set(ids[:n_test])
    train = [i for i, t in enumerate(turns) if t.dialogue_id not in test_ids]
    test = [i for i, t in enumerate(turns) if t.dialogue_id in test_ids]
    return train, test


class Embeddings:
    """Every distinct text embedded once (disk-cached), looked up by text."""

    def __init__(self, texts: Sequence[str]) -> None:
        from lingxi.nlu.encoders import build_encoders
        from lingxi.training.train import default_encoders

        from .cache import cached_encode

        self.encoder = build_encoders(default_encoders())
        unique = sorted(set(texts) - {""})
        vecs = cached_encode(self.encoder, unique, "query")
        self.index = {t: i for i, t in enumerate(unique)}
        self.vecs = vecs
        self.dim = vecs.shape[1]

    def of(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if t:
                out[i] = self.vecs[self.index[t]]
        return out

    def mean_of(self, groups: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(groups), self.dim), dtype=np.float32)
        for i, g in enumerate(groups):
            rows = [self.vecs[self.index[t]] for t in g if t]
            if rows:
                out[i] = np.mean(rows, axis=0)
        return out


def _blocks(variant: str, turns: Sequence[UserTurn]) -> list[tuple[str, list[str] | list[tuple[str, ...]]]]:
    blocks: list[tuple[str, list]] = [("user", [t.text for t in turns])]
    if variant in ("prev_system", "history"):
        blocks.append(("prev_system", [t.prev_system for t in turns]))
    if variant == "history":
        blocks.append(("prev_user", [t.prev_user for t in turns]))
        blocks.append(("earlier", [t.earlier for t in turns]))
    return blocks


def features(variant: str, turns: Sequence[UserTurn], emb: Embeddings, vectorizers: dict | None) -> tuple:
    """(X, vectorizers): fits one TF-IDF per text block when ``vectorizers`` is None (training)."""
    fit = vectorizers is None
    vectorizers = {} if fit else vectorizers
    parts = []
    for name, values in _blocks(variant, turns):
        if name == "earlier":
            parts.append(sparse.csr_matrix(emb.mean_of(values)))
            continue
        dense = emb.of(values)
        if fit:
            vectorizers[name] = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True,
                                                max_features=60000)
            tfidf = vectorizers[name].fit_transform(values)
        else:
            tfidf = vectorizers[name].transform(values)
        present = np.array([[1.0 if v else 0.0] for v in values], dtype=np.float32)
        parts.extend([sparse.csr_matrix(dense), tfidf, sparse.csr_matrix(present)])
    return sparse.hstack(parts).tocsr(), vectorizers


def predict_labels(proba: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    pred = (proba >= threshold).astype(int)
    pred[np.arange(len(proba)), proba.argmax(axis=1)] = 1  # every turn has at least one label
    return pred


def run_variant(variant: str, turns: Sequence[UserTurn], train: list[int], test: list[int], emb: Embeddings,
                mlb: MultiLabelBinarizer) -> dict:
    tr = [turns[i] for i in train]
    te = [turns[i] for i in test]
    x_train, vecs = features(variant, tr, emb, None)
    x_test, _ = features(variant, te, emb, vecs)
    y_train = mlb.transform([t.labels for t in tr])
    y_test = mlb.transform([t.labels for t in te])
    clf = OneVsRestClassifier(LogisticRegression(C=4.0, max_iter=2000), n_jobs=1)
    clf.fit(x_train, y_train)
    pred = predict_labels(clf.predict_proba(x_test))
    per_label = f1_score(y_test, pred, average=None, zero_division=0)
    return {
        "micro_f1": float(f1_score(y_test, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_test, pred, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(y_test, pred, average="samples", zero_division=0)),
        "exact_match": float((pred == y_test).all(axis=1).mean()),
        "per_label_f1": {label: round(float(f), 4) for label, f in zip(mlb.classes_, per_label, strict=True)},
        "n_train_turns": len(tr),
        "n_test_turns": len(te),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets-dir", help="shared datasets folder (default: ../shared/datasets)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--out", default="eval-out/crosswoz")
    args = ap.parse_args(argv)

    from lingxi.datasets.public import DatasetError, datasets_root

    try:
        root = datasets_root(args.datasets_dir)
        turns = load_turns(root)
    except (DatasetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    texts = [t.text for t in turns] + [t.prev_system for t in turns] + [x for t in turns for x in t.earlier]
    emb = Embeddings(texts)
    mlb = MultiLabelBinarizer().fit([t.labels for t in turns])
    runs: dict[str, dict[str, dict]] = {v: {} for v in VARIANTS}
    for seed in args.seeds:
        train, test = split_by_dialogue(turns, seed, args.test_fraction)
        for variant in VARIANTS:
            runs[variant][str(seed)] = run_variant(variant, turns, train, test, emb, mlb)
            r = runs[variant][str(seed)]
            print(f"seed {seed} {variant:12} micro-F1 {r['micro_f1']:.4f} macro-F1 {r['macro_f1']:.4f} "
                  f"exact {r['exact_match']:.4f}", flush=True)
    summary = {}
    for variant in VARIANTS:
        summary[variant] = {}
        for key in ("micro_f1", "macro_f1", "samples_f1", "exact_match"):
            vals = np.array([runs[variant][s][key] for s in runs[variant]])
            summary[variant][key] = {"mean": round(float(vals.mean()), 4), "sd": round(float(vals.std(ddof=0)), 4)}
    labels = list(mlb.classes_)
    per_label = {v: {lab: round(float(np.mean([runs[v][s]["per_label_f1"][lab] for s in runs[v]])), 4)
                     for lab in labels} for v in VARIANTS}
    result = {
        "dataset": "crosswoz (validation split, user turns)",
        "dialogues": len({t.dialogue_id for t in turns}),
        "user_turns": len(turns),
        "labels": labels,
        "split": {"by": "dialogue", "test_fraction": args.test_fraction, "seeds": args.seeds},
        "encoder": emb.encoder.name,
        "classifier": "one-vs-rest logistic regression C=4 on [e5+USE embedding, char 1-3 TF-IDF] per text block",
        "summary": summary,
        "per_label_f1_mean": per_label,
        "runs": runs,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), "utf-8")
    table = [f"CrossWOZ user-turn labels, split by dialogue ({1 - args.test_fraction:.0%} train / "
             f"{args.test_fraction:.0%} test of {result['dialogues']} val dialogues), seeds {args.seeds}",
             "", "| context | micro-F1 | macro-F1 | samples-F1 | exact match |", "|---|---|---|---|---|"]
    for v in VARIANTS:
        s = summary[v]
        table.append(f"| {v} | " + " | ".join(f"{s[k]['mean']:.4f} ± {s[k]['sd']:.4f}"
                                             for k in ("micro_f1", "macro_f1", "samples_f1", "exact_match")) + " |")
    table += ["", "| label | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    for lab in labels:
        table.append(f"| {lab} | " + " | ".join(f"{per_label[v][lab]:.4f}" for v in VARIANTS) + " |")
    (out / "table.md").write_text("\n".join(table) + "\n", "utf-8")
    print("\n".join(table))
    print(f"\nwrote {out / 'results.json'} and {out / 'table.md'} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
