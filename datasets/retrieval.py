"""Loaders for retrieval evaluation sets: StackFAQ, the BQ derived view, or any folder in the generic format.

Generic format (a folder): ``corpus.jsonl`` rows ``{doc_id, text, title?, split?}`` and
``queries.jsonl`` rows ``{query_id, text, relevant_doc_ids, exclude_doc_ids?, split?, fold?}``.
Documents and queries with a ``split`` are ranked within their split only (the BQ view has separate
dev and test corpora). Each dataset declares how fusion may be tuned without touching the queries
it reports on: ``crossfold`` (tune on the other folds), ``dev-test`` (tune on dev, report test) or
``none`` (defaults, reported as untuned).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec

from .public import DatasetError, datasets_root, read_jsonl

Protocol = Literal["crossfold", "dev-test", "none"]


class CorpusDoc(msgspec.Struct, frozen=True, kw_only=True):
    doc_id: str
    text: str
    title: str = ""
    split: str | None = None


class RetrievalQuery(msgspec.Struct, frozen=True, kw_only=True):
    query_id: str
    text: str
    relevant: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    split: str | None = None
    fold: int | None = None


class RetrievalDataset(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    docs: list[CorpusDoc]
    queries: list[RetrievalQuery]
    source: str
    protocol: Protocol = "none"
    tune_split: str | None = None  # dev-test: queries of this split tune, the others report
    report_split: str | None = None


def _str(obj: dict, key: str, path: Path, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise DatasetError(f"{path}:{obj.get('_line')}: `{key}` must be a non-empty string")
    return value


def _ids(obj: dict, key: str, path: Path, required: bool) -> tuple[str, ...]:
    value = obj.get(key, [] if not required else None)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (required and not value):
        raise DatasetError(f"{path}:{obj.get('_line')}: `{key}` must be a {'non-empty ' if required else ''}list of ids")
    return tuple(value)


def load_stackfaq(root: Path) -> RetrievalDataset:
    """125 FAQs (question = title, answers = body) and 1249 paraphrased queries with folds 0-4."""
    folder = root / "stackfaq"
    docs = [CorpusDoc(doc_id=f["faq_id"], title=f["question"], text="\n\n".join(f.get("answers") or []))
            for f in read_jsonl(folder / "faqs.jsonl")]
    queries = [RetrievalQuery(query_id=q["query_id"], text=q["text"], relevant=(q["faq_id"],), fold=int(q["fold"]))
               for q in read_jsonl(folder / "queries.jsonl")]
    return RetrievalDataset(name="stackfaq", docs=docs, queries=queries, source=str(folder), protocol="crossfold")


def load_bq(root: Path) -> RetrievalDataset:
    """The derived FAQ-retrieval view of BQ: tune on dev (its own corpus), report on test."""
    folder = root / "bq-corpus"
    docs = [CorpusDoc(doc_id=d["doc_id"], text=d["text"], split=d["split"])
            for d in read_jsonl(folder / "derived_retrieval_corpus.jsonl")]
    queries = [RetrievalQuery(query_id=q["query_id"], text=q["text"], relevant=tuple(q["relevant_doc_ids"]),
                              exclude=(q["self_doc_id"],), split=q["split"])
               for q in read_jsonl(folder / "derived_retrieval_queries.jsonl")]
    return RetrievalDataset(name="bq-corpus", docs=docs, queries=queries, source=str(folder), protocol="dev-test",
                            tune_split="dev", report_split="test")


def load_retrieval_folder(folder: Path) -> RetrievalDataset:
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    docs = []
    for d in read_jsonl(corpus_path):
        split = d.get("split")
        docs.append(CorpusDoc(doc_id=_str(d, "doc_id", corpus_path), text=_str(d, "text", corpus_path),
                              title=_str(d, "title", corpus_path, required=False),
                              split=split if isinstance(split, str) else None))
    known = {d.doc_id for d in docs}
    queries = []
    for q in read_jsonl(queries_path):
        relevant = _ids(q, "relevant_doc_ids", queries_path, required=True)
        missing = [r for r in relevant if r not in known]
        if missing:
            raise DatasetError(f"{queries_path}:{q['_line']}: relevant doc(s) {missing[:3]} not in corpus.jsonl")
        fold = q.get("fold")
        queries.append(RetrievalQuery(
            query_id=_str(q, "query_id", queries_path), text=_str(q, "text", queries_path), relevant=relevant,
            exclude=_ids(q, "exclude_doc_ids", queries_path, required=False),
            split=q["split"] if isinstance(q.get("split"), str) else None,
            fold=int(fold) if isinstance(fold, int) else None))
    if not queries:
        raise DatasetError(f"{queries_path}: no queries")
    splits = {q.split for q in queries}
    tune = next((s for s in ("dev", "val", "validation") if s in splits), None)
    if tune and "test" in splits:
        return RetrievalDataset(name=folder.name, docs=docs, queries=queries, source=str(folder),
                                protocol="dev-test", tune_split=tune, report_split="test")
    folds = {q.fold for q in queries}
    if None not in folds and len(folds) >= 2:
        return RetrievalDataset(name=folder.name, docs=docs, queries=queries, source=str(folder), protocol="crossfold")
    return RetrievalDataset(name=folder.name, docs=docs, queries=queries, source=str(folder), protocol="none")


PUBLIC_RETRIEVAL_SETS: dict[str, Callable[[Path], RetrievalDataset]] = {
    "stackfaq": load_stackfaq,
    "bq-corpus": load_bq,
    "bq": load_bq,
}


def load_retrieval_dataset(name_or_path: str, datasets_dir: str | Path | None = None) -> RetrievalDataset:
    """A named public set (``stackfaq``, ``bq-corpus``; a path ending in one of these names counts)
    or a folder with ``corpus.jsonl`` and ``queries.jsonl``."""
    path = Path(name_or_path)
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        return load_retrieval_folder(path)
    name = path.name if path.name in PUBLIC_RETRIEVAL_SETS else name_or_path
    if name in PUBLIC_RETRIEVAL_SETS:
        root = path.parent if path.is_dir() else datasets_root(datasets_dir)
        if not (root / ("bq-corpus" if name == "bq" else name)).is_dir():
            raise DatasetError(f"{root}: dataset {name!r} not found (set --datasets-dir or LINGXI_DATASETS_DIR)")
        return PUBLIC_RETRIEVAL_SETS[name](root)
    raise DatasetError(f"{name_or_path}: not a folder with corpus.jsonl + queries.jsonl, and not a known "
                       f"dataset name ({', '.join(sorted(PUBLIC_RETRIEVAL_SETS))})")
