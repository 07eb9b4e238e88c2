"""``python -m lingxi.evals.sentiment``: accuracy and macro-F1 of the CSAT comment sentiment on a labelled set.

The set (``evals/data/csat_comments_zh.jsonl``, see ``evals/data/README.md``) has a ``dev`` split
(may be looked at when editing the lexicon) and a ``test`` split (report only). Prints JSON:
accuracy and macro-F1 over positive / neutral / negative, accuracy on the polar comments alone, the
confusion counts, and the misclassified test comments (so the lexicon's blind spots are visible).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from lingxi.training.sentiment import SentimentLexicon

LABELS = ("positive", "neutral", "negative")
DEFAULT_SET = Path(__file__).resolve().parent / "data" / "csat_comments_zh.jsonl"


def macro_f1(gold: list[str], pred: list[str]) -> float:
    scores = []
    for label in LABELS:
        tp = sum(g == p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(p == label != g for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label != p for g, p in zip(gold, pred, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def evaluate(rows: list[dict], analyzer=None) -> dict:
    analyzer = analyzer or SentimentLexicon()
    gold = [r["label"] for r in rows]
    pred = [analyzer(r["text"]).label for r in rows]
    polar = [(g, p) for g, p in zip(gold, pred, strict=True) if g != "neutral"]
    return {
        "n": len(rows),
        "accuracy": round(sum(g == p for g, p in zip(gold, pred, strict=True)) / len(rows), 4),
        "macro_f1": round(macro_f1(gold, pred), 4),
        "polar_accuracy": round(sum(g == p for g, p in polar) / len(polar), 4) if polar else None,
        "confusion": {f"{g}->{p}": n for (g, p), n in sorted(Counter(zip(gold, pred, strict=True)).items())},
        "errors": [{"text": r["text"], "gold": g, "predicted": p}
                   for r, g, p in zip(rows, gold, pred, strict=True) if g != p],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lingxi-eval-sentiment")
    parser.add_argument("--data", default=str(DEFAULT_SET), help="JSONL with text, label, split")
    args = parser.parse_args(argv)
    path = Path(args.data)
    rows = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            print(f"{path}:{n}: {exc}", file=sys.stderr)
            return 2
        if row.get("label") not in LABELS or not isinstance(row.get("text"), str):
            print(f"{path}:{n}: need `text` and `label` in {LABELS}", file=sys.stderr)
            return 2
        rows.append(row)
    out = {split: evaluate([r for r in rows if r.get("split", "test") == split]) for split in ("dev", "test")}
    for split in out:
        if split == "dev":
            out[split].pop("errors")
    print(json.dumps(out, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
