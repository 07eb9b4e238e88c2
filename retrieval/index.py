"""Dense (FAISS) and sparse (BM25) retrieval over index units, updated in place and saved with the KB revision.

* :class:`DenseIndex` — exact inner product (``IndexFlatIP``) up to ``exact_max`` vectors, an
  approximate index above (IVF-Flat by default, HNSW optional). Vectors are L2-normalised, so inner
  product is cosine. IVF removes vectors natively; HNSW cannot, so removed ids become tombstones
  that searches skip.
* :class:`SparseIndex` — BM25 (``bm25s``, Lucene variant) over jieba terms. The terms of every unit
  are kept, so an update re-scores the matrix without re-segmenting or re-embedding anything;
  BM25's IDF depends on the whole collection, so exact scores need that global re-score anyway.
* :class:`KbIndex` — units of documents in both, document-level hits (a document scores as its best
  unit), ``upsert``/``remove`` by document, persisted as a folder whose manifest records the KB
  revision and what built it (encoder, chunker), so a stale or incompatible index is detected.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np

from lingxi.nlu.encoders import Encoder

from .analysis import Analyzer
from .chunking import Chunker, IndexDoc, Unit

FORMAT_VERSION = 1


class DenseConfig(msgspec.Struct, frozen=True, kw_only=True):
    """When to go approximate and how. Defaults measured by ``evals/bench_scale.py`` (1M × 384-d)."""

    exact_max: int = 50_000
    approximate: Literal["ivf", "hnsw"] = "ivf"
    ivf_nlist: int = 0  # 0 = about 4·sqrt(n), rounded to a power of two
    ivf_nprobe: int = 24
    ivf_train_per_list: int = 64
    ivf_train_iterations: int = 10
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64


class SparseConfig(msgspec.Struct, frozen=True, kw_only=True):
    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"


class IndexConfig(msgspec.Struct, frozen=True, kw_only=True):
    """``question_kind``: how titles/variants are embedded (e5 ``passage:`` measured better on StackFAQ)."""

    dense: DenseConfig = DenseConfig()
    sparse: SparseConfig = SparseConfig()
    chunk_max_tokens: int = 128
    chunk_overlap_sentences: int = 1
    question_kind: Literal["passage", "query"] = "passage"
    normalize_dense: bool = True


class _SavedUnits(msgspec.Struct):
    ids: list[int]
    units: list[Unit]
    terms: list[list[str]]


class DocHit(msgspec.Struct, frozen=True):
    """A document's score from one retriever: its best unit's score, and that unit."""

    doc_id: str
    score: float
    rank: int
    unit_id: int


class IndexLoadError(RuntimeError):
    """The index on disk is missing, unreadable or built by something else."""


def _auto_nlist(n: int) -> int:
    return int(min(65536, max(16, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))))))


class DenseIndex:
    """FAISS inner-product index over int64 ids; ``kind_`` is ``flat``, ``ivf`` or ``hnsw``."""

    def __init__(self, dim: int, config: DenseConfig | None = None) -> None:
        self.dim = dim
        self.config = config or DenseConfig()
        self.index_ = None
        self.kind_: str = "flat"
        self.tombstones_: set[int] = set()

    # -- building
    def _new(self, n: int, sample: np.ndarray | None):
        import faiss

        cfg = self.config
        if n <= cfg.exact_max:
            self.kind_ = "flat"
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if cfg.approximate == "hnsw":
            self.kind_ = "hnsw"
            inner = faiss.IndexHNSWFlat(self.dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = cfg.hnsw_ef_construction
            inner.hnsw.efSearch = cfg.hnsw_ef_search
            return faiss.IndexIDMap2(inner)
        self.kind_ = "ivf"
        nlist = cfg.ivf_nlist or _auto_nlist(n)
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.referenced_objects = [quantizer]  # keep the quantizer alive with the index
        index.cp.niter = cfg.ivf_train_iterations
        assert sample is not None
        take = min(len(sample), nlist * cfg.ivf_train_per_list)
        rng = np.random.default_rng(0)
        train = sample[rng.choice(len(sample), take, replace=False)] if take < len(sample) else sample
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        index.nprobe = cfg.ivf_nprobe
        return index

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> DenseIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.index_ = self._new(len(ids), vectors)
        self.tombstones_ = set()
        if len(ids):
            self.index_.add_with_ids(vectors, ids)
        return self

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self.index_ is None:
            self.build(ids, vectors)
            return
        if len(ids):
            self.index_.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                     np.ascontiguousarray(ids, dtype=np.int64))
        if self.kind_ == "flat" and self.size > self.config.exact_max:
            self._upgrade()

    def _upgrade(self) -> None:
        """A small index that grew past ``exact_max`` becomes approximate (trained on what it holds)."""
        import faiss

        ids = faiss.vector_to_array(self.index_.id_map).astype(np.int64)
        vectors = self.index_.index.reconstruct_n(0, self.index_.ntotal)
        self.build(ids, vectors)

    def remove(self, ids: Sequence[int]) -> None:
        if self.index_ is None or not len(ids):
            return
        if self.kind_ == "hnsw":
            self.tombstones_.update(int(i) for i in ids)
            return
        import faiss

        self.index_.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))

    @property
    def size(self) -> int:
        return 0 if self.index_ is None else int(self.index_.ntotal) - len(self.tombstones_)

    # -- searching
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, ids) per query row; missing slots have id -1."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.index_ is None or self.size == 0 or k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        fetch = min(int(self.index_.ntotal), k + len(self.tombstones_))
        scores, ids = self.index_.search(queries, fetch)
        if not self.tombstones_:
            return scores[:, :k], ids[:, :k]
        keep = ~np.isin(ids, np.fromiter(self.tombstones_, dtype=np.int64))
        out_s = np.full((len(queries), k), -np.inf, np.float32)
        out_i = np.full((len(queries), k), -1, np.int64)
        for r in range(len(queries)):
            s, i = scores[r][keep[r]][:k], ids[r][keep[r]][:k]
            out_s[r, : len(s)], out_i[r, : len(i)] = s, i
        return out_s, out_i

    # -- persistence
    def save(self, path: Path) -> None:
        import faiss

        if self.index_ is not None:
            faiss.write_index(self.index_, str(path))

    def load(self, path: Path, kind: str, tombstones: Sequence[int] = ()) -> DenseIndex:
        import faiss

        self.kind_ = kind
        self.tombstones_ = set(int(t) for t in tombstones)
        if path.is_file():
            index = faiss.read_index(str(path))
            if kind == "ivf":
                faiss.extract_index_ivf(index).nprobe = self.config.ivf_nprobe
            elif kind == "hnsw":
                faiss.downcast_index(index.index).hnsw.efSearch = self.config.hnsw_ef_search
            self.index_ = index
        return self


class SparseIndex:
    """BM25 over term lists keyed by unit id; the score matrix is rebuilt lazily after changes."""

    def __init__(self, config: SparseConfig | None = None) -> None:
        self.config = config or SparseConfig()
        self.terms_: dict[int, list[str]] = {}
        self._model = None
        self._order = np.zeros(0, dtype=np.int64)
        self._dirty = True
        self._lock = threading.Lock()

    def set(self, ids: Sequence[int], terms: Sequence[list[str]]) -> None:
        for i, t in zip(ids, terms, strict=True):
            self.terms_[int(i)] = list(t)
        self._dirty = True

    def remove(self, ids: Sequence[int]) -> None:
        for i in ids:
            self.terms_.pop(int(i), None)
        self._dirty = True

    def _refresh(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            import bm25s

            order = np.fromiter(self.terms_.keys(), dtype=np.int64, count=len(self.terms_))
            model = None
            if len(order):
                cfg = self.config
                model = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method)
                # an empty unit still needs one term for bm25s; "\x00" never occurs in a query
                model.index([self.terms_[int(i)] or ["\x00"] for i in order], show_progress=False)
            self._model, self._order, self._dirty = model, order, False

    def scores(self, terms: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(unit ids, BM25 scores) of the units matching at least one term, unordered."""
        self._refresh()
        model, order = self._model, self._order
        if model is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        term_ids = [model.vocab_dict[t] for t in terms if t in model.vocab_dict]
        if not term_ids:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        s = model.get_scores_from_ids(term_ids)
        hit = np.flatnonzero(s > 0)
        return order[hit], s[hit].astype(np.float32)


def _first_per_doc(unit_ids: np.ndarray, scores: np.ndarray, units: dict[int, Unit], depth: int,
                   allowed: Callable[[str], bool] | None, exclude: AbstractSet[int] = frozenset()) -> list[DocHit]:
    """Walk units best-first and keep each document's first (= best) unit; ``exclude``d units are skipped."""
    hits: list[DocHit] = []
    seen: set[str] = set()
    for uid, score in zip(unit_ids.tolist(), scores.tolist(), strict=True):
        unit = units.get(uid)
        if unit is None or unit.doc_id in seen or uid in exclude:
            continue
        seen.add(unit.doc_id)
        if allowed is not None and not allowed(unit.doc_id):
            continue
        hits.append(DocHit(unit.doc_id, float(score), len(hits) + 1, uid))
        if len(hits) >= depth:
            break
    return hits


class KbIndex:
    """Units of documents in a dense and a sparse index, at one KB ``revision_``.

    Mutations (``upsert``, ``remove``) embed first and change the indexes only after every vector
    is ready, so a failing encoder leaves the index as it was. Reads and writes share a lock: FAISS
    indexes are not safe to search while they are being modified.
    """

    def __init__(self, encoder: Encoder, analyzer: Analyzer | None = None, config: IndexConfig | None = None) -> None:
        self.encoder = encoder
        self.analyzer = analyzer or Analyzer()
        self.config = config or IndexConfig()
        self.chunker = Chunker(self.config.chunk_max_tokens, self.config.chunk_overlap_sentences)
        self.dense_ = DenseIndex(encoder.dim, self.config.dense)
        self.sparse_ = SparseIndex(self.config.sparse)
        self.units_: dict[int, Unit] = {}
        self.doc_units_: dict[str, list[int]] = {}
        self.next_id_ = 0
        self.revision_ = 0
        self._lock = threading.RLock()

    # -- identity
    def fingerprint(self) -> dict[str, object]:
        """What must match for a saved index to be reused."""
        return {"format": FORMAT_VERSION, "encoder": self.encoder.name, "dim": int(self.encoder.dim),
                "chunker": self.chunker.get_config(), "question_kind": self.config.question_kind,
                "normalize_dense": self.config.normalize_dense,
                "sparse": msgspec.to_builtins(self.config.sparse), "stopwords": self.analyzer.stopwords}

    @property
    def doc_count(self) -> int:
        return len(self.doc_units_)

    def doc_ids(self) -> list[str]:
        return list(self.doc_units_)

    def unit(self, unit_id: int) -> Unit | None:
        return self.units_.get(unit_id)

    def units_of(self, doc_id: str) -> list[Unit]:
        return [self.units_[u] for u in self.doc_units_.get(doc_id, [])]

    # -- preparing
    def _embed_text(self, text: str) -> str:
        return self.analyzer.normalize(text) if self.config.normalize_dense else text

    def _prepare(self, docs: Sequence[IndexDoc]) -> tuple[list[Unit], np.ndarray, list[list[str]]]:
        units = self.chunker.units_of(docs)
        vectors = np.zeros((len(units), self.encoder.dim), np.float32)
        for kind in ("question", "body"):
            idx = [i for i, u in enumerate(units) if (u.kind == "body") == (kind == "body")]
            if not idx:
                continue
            enc_kind = "passage" if kind == "body" else self.config.question_kind
            vectors[idx] = self.encoder.encode([self._embed_text(units[i].embed_text) for i in idx], enc_kind)
        terms = [self.analyzer.terms(u.sparse_text) for u in units]
        return units, vectors, terms

    # -- mutating
    def build(self, docs: Sequence[IndexDoc], revision: int) -> KbIndex:
        """Index ``docs`` from scratch (the previous content of this object is replaced)."""
        units, vectors, terms = self._prepare(docs)
        ids = np.arange(len(units), dtype=np.int64)
        with self._lock:
            self.dense_ = DenseIndex(self.encoder.dim, self.config.dense).build(ids, vectors)
            self.sparse_ = SparseIndex(self.config.sparse)
            self.sparse_.set(ids.tolist(), terms)
            self.units_ = dict(zip(ids.tolist(), units, strict=True))
            self.doc_units_ = {}
            for uid, u in self.units_.items():
                self.doc_units_.setdefault(u.doc_id, []).append(uid)
            self.next_id_ = len(units)
            self.revision_ = revision
        return self

    def upsert(self, docs: Sequence[IndexDoc], revision: int | None = None) -> None:
        """Replace these documents' units (adding new documents); nothing changes if embedding fails."""
        units, vectors, terms = self._prepare(docs)
        with self._lock:
            self._drop([d.id for d in docs])
            ids = np.arange(self.next_id_, self.next_id_ + len(units), dtype=np.int64)
            self.next_id_ += len(units)
            self.dense_.add(ids, vectors)
            self.sparse_.set(ids.tolist(), terms)
            for uid, u in zip(ids.tolist(), units, strict=True):
                self.units_[uid] = u
                self.doc_units_.setdefault(u.doc_id, []).append(uid)
            if revision is not None:
                self.revision_ = revision

    def remove(self, doc_ids: Sequence[str], revision: int | None = None) -> None:
        with self._lock:
            self._drop(doc_ids)
            if revision is not None:
                self.revision_ = revision

    def _drop(self, doc_ids: Sequence[str]) -> None:
        old = [uid for d in doc_ids for uid in self.doc_units_.pop(d, [])]
        if old:
            self.dense_.remove(old)
            self.sparse_.remove(old)
            for uid in old:
                self.units_.pop(uid, None)

    # -- searching
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode([self._embed_text(t) for t in texts], "query")

    def _unit_depth(self, depth: int) -> int:
        n = self.dense_.size
        return n if n <= 4096 else min(n, max(depth * 8, 256))

    def dense_search(self, query_vectors: np.ndarray, depth: int = 100,
                     allowed: Callable[[str], bool] | None = None,
                     exclude: AbstractSet[int] = frozenset()) -> list[list[DocHit]]:
        """Per query row: up to ``depth`` documents by best-unit cosine.

        ``exclude``: unit ids to leave out, e.g. the variant a held-out query was taken from
        (leave-one-out calibration, :mod:`~lingxi.retrieval.answerability`)."""
        with self._lock:
            scores, ids = self.dense_.search(query_vectors, self._unit_depth(depth) + len(exclude))
            return [_first_per_doc(ids[r], scores[r], self.units_, depth, allowed, exclude) for r in range(len(ids))]

    def sparse_search(self, terms: Sequence[str], depth: int = 100,
                      allowed: Callable[[str], bool] | None = None,
                      exclude: AbstractSet[int] = frozenset()) -> list[DocHit]:
        with self._lock:
            ids, scores = self.sparse_.scores(terms)
            order = np.argsort(-scores, kind="stable")
            return _first_per_doc(ids[order], scores[order], self.units_, depth, allowed, exclude)

    # -- persistence
    def save(self, root: Path) -> Path:
        """Write a new folder under ``root`` and point ``root/CURRENT`` at it atomically."""
        root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            folder = root / f"rev-{self.revision_:08d}-{uuid.uuid4().hex[:8]}"
            tmp = root / f".tmp-{folder.name}"
            tmp.mkdir()
            self.dense_.save(tmp / "dense.faiss")
            ids = list(self.units_)
            payload = _SavedUnits(ids, [self.units_[i] for i in ids], [self.sparse_.terms_.get(i, []) for i in ids])
            (tmp / "units.msgpack").write_bytes(msgspec.msgpack.encode(payload))
            manifest = {"revision": self.revision_, "fingerprint": self.fingerprint(), "dense_kind": self.dense_.kind_,
                        "tombstones": sorted(self.dense_.tombstones_), "next_id": self.next_id_,
                        "units": len(ids), "docs": self.doc_count, "saved_at": time.time()}
            (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), "utf-8")
        os.replace(tmp, folder)
        previous = (root / "CURRENT").read_text("utf-8").strip() if (root / "CURRENT").is_file() else ""
        pointer = root / f"CURRENT.{uuid.uuid4().hex[:8]}.tmp"
        pointer.write_text(folder.name, "utf-8")
        os.replace(pointer, root / "CURRENT")
        for old in root.iterdir():  # keep the new folder and the one it replaced
            if old.is_dir() and old.name not in (folder.name, previous) and old.name.startswith("rev-"):
                shutil.rmtree(old, ignore_errors=True)
        return folder

    @staticmethod
    def saved_manifest(root: Path) -> dict | None:
        try:
            folder = root / (root / "CURRENT").read_text("utf-8").strip()
            return json.loads((folder / "manifest.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def load(self, root: Path) -> KbIndex:
        """Load the folder ``root/CURRENT`` names; raises :class:`IndexLoadError` if it does not fit."""
        try:
            folder = root / (root / "CURRENT").read_text("utf-8").strip()
            manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexLoadError(f"no readable index under {root}: {exc}") from None
        if manifest.get("fingerprint") != json.loads(json.dumps(self.fingerprint())):
            raise IndexLoadError("saved index was built with a different encoder or chunker")
        try:
            payload = msgspec.msgpack.decode((folder / "units.msgpack").read_bytes(), type=_SavedUnits)
        except (OSError, msgspec.DecodeError) as exc:
            raise IndexLoadError(f"unreadable units in {folder}: {exc}") from None
        ids, units, terms = payload.ids, payload.units, payload.terms
        with self._lock:
            self.dense_ = DenseIndex(self.encoder.dim, self.config.dense).load(
                folder / "dense.faiss", manifest["dense_kind"], manifest.get("tombstones", ()))
            self.sparse_ = SparseIndex(self.config.sparse)
            self.sparse_.set(ids, terms)
            self.units_ = dict(zip(ids, units, strict=True))
            self.doc_units_ = {}
            for uid, u in self.units_.items():
                self.doc_units_.setdefault(u.doc_id, []).append(uid)
            self.next_id_ = int(manifest["next_id"])
            self.revision_ = int(manifest["revision"])
        if self.dense_.size != len(ids):
            raise IndexLoadError(f"saved index is inconsistent: {self.dense_.size} vectors for {len(ids)} units")
        return self
