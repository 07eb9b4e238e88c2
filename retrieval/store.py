"""Article store on SQLAlchemy Core: SQLite by default, PostgreSQL by URL, the same code for both.

* Every change writes a new row to ``kb_article_versions`` (author, time, note) in the same
  transaction as the article row, so history and head never disagree.
* Optimistic concurrency: writers send the version they read; ``UPDATE ... WHERE version = :seen``
  touches no row when someone else got there first, and that becomes :class:`VersionConflict`
  (never a silent overwrite).
* The *KB revision* counts changes to what customers can find (publish, archive, delete, restoring
  a live article). Each bump is logged in ``kb_changes`` so an index at revision r can catch up by
  re-indexing just the articles changed after r.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .articles import (
    CONTENT_FIELDS,
    Article,
    ArticleContent,
    ArticleExists,
    ArticleNotFound,
    ArticleVersion,
    InvalidTransition,
    KbError,
    VersionConflict,
    VersionSummary,
    check_transition,
    valid_id,
)

metadata = MetaData()

articles_t = Table(
    "kb_articles", metadata,
    Column("id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("live_version", Integer, nullable=True),
    Column("data", Text, nullable=False),
    Column("live_data", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False, default=""),
    Column("updated_by", String(128), nullable=False, default=""),
)

versions_t = Table(
    "kb_article_versions", metadata,
    Column("article_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("data", Text, nullable=False),
    Column("author", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("note", String(500), nullable=False, default=""),
    PrimaryKeyConstraint("article_id", "version"),
)

meta_t = Table(
    "kb_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Integer, nullable=False),
)

changes_t = Table(
    "kb_changes", metadata,
    Column("revision", Integer, primary_key=True, autoincrement=False),
    Column("article_id", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)


class ArticleArchived(KbError):
    code = "article_archived"


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(ArticleContent)


def _encode(content: ArticleContent) -> str:
    return _ENC.encode(content).decode("utf-8")


def _decode(data: str) -> ArticleContent:
    return _DEC.decode(data)


def _article(row, content: ArticleContent | None = None) -> Article:
    content = content or _decode(row.data)
    return Article(
        **{f: getattr(content, f) for f in CONTENT_FIELDS},
        id=row.id, version=row.version, status=row.status, live_version=row.live_version,
        created_at=_utc(row.created_at), updated_at=_utc(row.updated_at),
        created_by=row.created_by or "", updated_by=row.updated_by or "",
    )


def make_engine(url: str, synchronous: str = "NORMAL", immediate: bool = True) -> Engine:
    """An engine with the settings each backend needs for concurrent writers.

    SQLite: WAL, a busy timeout and ``BEGIN IMMEDIATE`` so a read-then-write transaction takes the
    write lock up front (a deferred one can fail its lock upgrade instead of waiting); a read-only
    engine passes ``immediate=False`` so its reads never queue behind a write. ``synchronous``:
    ``FULL`` where an acknowledged write must survive a power cut (the event store).
    PostgreSQL: connect and statement timeouts (:func:`pg_connect_args`).
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError("synchronous must be NORMAL or FULL")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, connect_args=pg_connect_args(url))


def pg_connect_args(url: str, timeout_s: float = 3.0, statement_timeout_s: float = 30.0) -> dict:
    """PostgreSQL never waits forever: a connect timeout and a statement timeout (added to any
    ``options`` the URL already carries, such as a ``search_path``). Empty for other databases."""
    if not url.startswith("postgresql"):
        return {}
    from sqlalchemy.engine import make_url

    given = make_url(url).query.get("options") or ""
    given = " ".join(given) if isinstance(given, tuple) else given
    return {"connect_timeout": max(1, round(timeout_s)),
            "options": f"{given} -c statement_timeout={int(statement_timeout_s * 1000)}".strip()}


SCHEMA_LOCK = 0x6C696E6778  # "lingx": the advisory lock id under which Lingxi creates tables


def create_tables(metadata: MetaData, engine: Engine) -> None:
    """``metadata.create_all`` that several processes may run at once against an empty database.

    Two replicas starting together would both issue ``CREATE TABLE`` and one would fail on
    PostgreSQL's catalogue; a transaction-scoped advisory lock makes the second wait, and it then
    finds the tables and creates nothing. SQLite serialises writers by itself.
    """
    if engine.dialect.name != "postgresql":
        metadata.create_all(engine)
        return
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
        metadata.create_all(conn)


def insert_if_missing(conn: Connection, table: Table, values: dict) -> None:
    """Insert a singleton row (a counter, a cursor) unless it exists; a concurrent creator wins quietly.

    The insert runs in a savepoint so a lost race does not abort the caller's transaction.
    """
    keys = [table.c[k] == v for k, v in values.items() if table.c[k].primary_key]
    if conn.execute(select(*table.primary_key.columns).where(*keys)).first() is not None:
        return
    try:
        with conn.begin_nested():
            conn.execute(insert(table).values(**values))
    except IntegrityError:  # another process created it first
        pass


def sqlite_url(path: str | Path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


class KbStore:
    """Articles, their versions and the KB revision. Thread-safe (one connection per call)."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)

    def create_schema(self) -> KbStore:
        create_tables(metadata, self.engine)
        with self.engine.begin() as conn:
            insert_if_missing(conn, meta_t, {"key": "revision", "value": 0})
        return self

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ reads
    def revision(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(meta_t.c.value).where(meta_t.c.key == "revision")).scalar_one())

    def get(self, article_id: str) -> Article:
        with self.engine.connect() as conn:
            row = conn.execute(select(articles_t).where(articles_t.c.id == article_id)).first()
        if row is None:
            raise ArticleNotFound(f"no article {article_id!r}", {"id": article_id})
        return _article(row)

    def get_many(self, ids: Iterable[str]) -> dict[str, Article]:
        ids = list(ids)
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(articles_t).where(articles_t.c.id.in_(ids))).all()
        return {r.id: _article(r) for r in rows}

    def list(self, status: str | None = None) -> list[Article]:
        """Head versions, newest change first (filtering beyond status is the caller's)."""
        query = select(articles_t).order_by(articles_t.c.updated_at.desc(), articles_t.c.id)
        if status:
            query = query.where(articles_t.c.status == status)
        with self.engine.connect() as conn:
            return [_article(r) for r in conn.execute(query)]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(articles_t)).scalar_one())

    def live(self, ids: Iterable[str] | None = None) -> dict[str, Article]:
        """What customers can find: each live article with its *live* content."""
        query = select(articles_t).where(articles_t.c.live_data.is_not(None))
        if ids is not None:
            query = query.where(articles_t.c.id.in_(list(ids)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {r.id: _article(r, _decode(r.live_data)) for r in rows}

    def changes_since(self, revision: int) -> tuple[int, set[str]]:
        """(current revision, ids of articles whose live content changed after ``revision``)."""
        with self.engine.connect() as conn:
            current = int(conn.execute(select(meta_t.c.value).where(meta_t.c.key == "revision")).scalar_one())
            ids = {r.article_id for r in conn.execute(select(changes_t.c.article_id)
                                                       .where(changes_t.c.revision > revision))}
        return current, ids

    def versions(self, article_id: str) -> list[VersionSummary]:
        with self.engine.connect() as conn:
            head = conn.execute(select(articles_t.c.live_version).where(articles_t.c.id == article_id)).first()
            if head is None:
                raise ArticleNotFound(f"no article {article_id!r}", {"id": article_id})
            rows = conn.execute(select(versions_t).where(versions_t.c.article_id == article_id)
                                .order_by(versions_t.c.version.desc())).all()
        return [VersionSummary(version=r.version, status=r.status, author=r.author, created_at=_utc(r.created_at),
                               note=r.note or "", live=r.version == head.live_version) for r in rows]

    def version(self, article_id: str, version: int) -> ArticleVersion:
        with self.engine.connect() as conn:
            row = conn.execute(select(versions_t).where(versions_t.c.article_id == article_id,
                                                        versions_t.c.version == version)).first()
        if row is None:
            raise ArticleNotFound(f"article {article_id!r} has no version {version}",
                                  {"id": article_id, "version": version})
        return ArticleVersion(article_id=article_id, version=row.version, status=row.status, author=row.author,
                              created_at=_utc(row.created_at), note=row.note or "", content=_decode(row.data))

    # ------------------------------------------------------------ writes
    def create(self, content: ArticleContent, author: str, article_id: str | None = None,
               status: str = "draft") -> Article:
        with self.engine.begin() as conn:
            return self._create(conn, content, author, article_id, status)

    def update(self, article_id: str, content: ArticleContent, expected_version: int, author: str,
               note: str = "") -> Article:
        with self.engine.begin() as conn:
            return self._update(conn, article_id, content, expected_version, author, note)

    def transition(self, article_id: str, target: str, expected_version: int, author: str, note: str = "") -> Article:
        with self.engine.begin() as conn:
            return self._transition(conn, article_id, target, expected_version, author, note)

    def restore(self, article_id: str, version: int, expected_version: int, author: str) -> Article:
        """A new head version with the content of ``version``; a live article goes live with it."""
        with self.engine.begin() as conn:
            row = self._locked(conn, article_id, expected_version)
            if row.status == "archived":
                raise ArticleArchived(f"article {article_id!r} is archived; move it to draft before restoring",
                                      {"status": row.status, "allowed": ["draft"]})
            old = conn.execute(select(versions_t.c.data).where(versions_t.c.article_id == article_id,
                                                               versions_t.c.version == version)).first()
            if old is None:
                raise ArticleNotFound(f"article {article_id!r} has no version {version}",
                                      {"id": article_id, "version": version})
            live = row.status == "published"
            return self._write(conn, row, _decode(old.data), row.status, author, f"restored version {version}",
                               make_live=live)

    def delete(self, article_id: str, expected_version: int | None = None) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(select(articles_t).where(articles_t.c.id == article_id).with_for_update()).first()
            if row is None:
                raise ArticleNotFound(f"no article {article_id!r}", {"id": article_id})
            if expected_version is not None and row.version != expected_version:
                raise VersionConflict(f"article {article_id!r} is at version {row.version}, not {expected_version}",
                                      {"current_version": row.version})
            conn.execute(delete(versions_t).where(versions_t.c.article_id == article_id))
            conn.execute(delete(articles_t).where(articles_t.c.id == article_id))
            if row.live_data is not None:
                self._bump(conn, article_id)

    def apply_batch(self, ops: Sequence[BatchOp], author: str) -> list[Article]:
        """Create/update many articles in one transaction: all of them, or (on any error) none.

        Raises :class:`BatchError` naming the failing op's position.
        """
        out: list[Article] = []
        with self.engine.begin() as conn:
            for pos, op in enumerate(ops):
                try:
                    if op.expected_version is None:
                        article = self._create(conn, op.content, author, op.article_id, "draft", note=op.note)
                    else:
                        article = self._update(conn, op.article_id or "", op.content, op.expected_version, author,
                                               op.note)
                    if op.status and op.status != article.status:
                        article = self._walk(conn, article, op.status, author)
                except KbError as exc:
                    raise BatchError(pos, exc) from exc
                out.append(article)
        return out

    # ------------------------------------------------------------ internals
    def _bump(self, conn: Connection, article_id: str) -> int:
        conn.execute(update(meta_t).where(meta_t.c.key == "revision").values(value=meta_t.c.value + 1))
        rev = int(conn.execute(select(meta_t.c.value).where(meta_t.c.key == "revision")).scalar_one())
        conn.execute(insert(changes_t).values(revision=rev, article_id=article_id, at=_now()))
        return rev

    def _locked(self, conn: Connection, article_id: str, expected_version: int):
        row = conn.execute(select(articles_t).where(articles_t.c.id == article_id).with_for_update()).first()
        if row is None:
            raise ArticleNotFound(f"no article {article_id!r}", {"id": article_id})
        if row.version != expected_version:
            raise VersionConflict(
                f"article {article_id!r} is at version {row.version}, not {expected_version}: it was changed "
                "after you read it; reload and re-apply your edit", {"current_version": row.version})
        return row

    def _create(self, conn: Connection, content: ArticleContent, author: str, article_id: str | None,
                status: str, note: str = "") -> Article:
        article_id = article_id or f"kb-{uuid.uuid4().hex[:12]}"
        if not valid_id(article_id):
            raise KbError(f"invalid article id {article_id!r}: 1-64 letters, digits, '.', '_' or '-'")
        now = _now()
        data = _encode(content)
        try:
            with conn.begin_nested():
                conn.execute(insert(articles_t).values(
                    id=article_id, version=1, status="draft", live_version=None, data=data, live_data=None,
                    created_at=now, updated_at=now, created_by=author, updated_by=author))
        except IntegrityError:
            raise ArticleExists(f"article {article_id!r} already exists", {"id": article_id}) from None
        conn.execute(insert(versions_t).values(article_id=article_id, version=1, status="draft", data=data,
                                               author=author, created_at=now, note=note or "created"))
        row = conn.execute(select(articles_t).where(articles_t.c.id == article_id)).one()
        article = _article(row, content)
        if status != "draft":
            article = self._walk(conn, article, status, author)
        return article

    def _walk(self, conn: Connection, article: Article, target: str, author: str) -> Article:
        """Move along the shortest legal path (draft → in_review → published) for imports and seeding."""
        paths = {("draft", "published"): ["in_review", "published"], ("archived", "published"):
                 ["draft", "in_review", "published"], ("archived", "in_review"): ["draft", "in_review"]}
        for step in paths.get((article.status, target), [target]):
            article = self._transition(conn, article.id, step, article.version, author, "import")
        return article

    def _update(self, conn: Connection, article_id: str, content: ArticleContent, expected_version: int,
                author: str, note: str = "") -> Article:
        row = self._locked(conn, article_id, expected_version)
        if row.status == "archived":
            raise ArticleArchived(f"article {article_id!r} is archived; move it to draft before editing",
                                  {"status": "archived", "allowed": ["draft"]})
        if _decode(row.data) == content:
            return _article(row)  # nothing changed: no new version
        status = "draft" if row.status == "published" else row.status
        return self._write(conn, row, content, status, author, note or "edited")

    def _transition(self, conn: Connection, article_id: str, target: str, expected_version: int, author: str,
                    note: str = "") -> Article:
        row = self._locked(conn, article_id, expected_version)
        try:
            check_transition(row.status, target)
        except InvalidTransition as exc:
            exc.details = {**(exc.details or {}), "current_version": row.version}
            raise
        content = _decode(row.data)
        label = note or f"status {row.status} → {target}"
        if target == "published":
            return self._write(conn, row, content, target, author, label, make_live=True)
        if target == "archived":
            return self._write(conn, row, content, target, author, label, make_dead=True)
        return self._write(conn, row, content, target, author, label)

    def _write(self, conn: Connection, row, content: ArticleContent, status: str, author: str, note: str,
               make_live: bool = False, make_dead: bool = False) -> Article:
        now = _now()
        version = row.version + 1
        data = _encode(content)
        values: dict[str, object] = {"version": version, "status": status, "data": data, "updated_at": now,
                                     "updated_by": author}
        if make_live:
            values.update(live_version=version, live_data=data)
        if make_dead:
            values.update(live_version=None, live_data=None)
        result = conn.execute(update(articles_t).where(articles_t.c.id == row.id, articles_t.c.version == row.version)
                              .values(**values))
        if result.rowcount != 1:  # lost a race despite the lock (e.g. SQLite without BEGIN IMMEDIATE)
            raise VersionConflict(f"article {row.id!r} changed concurrently", {"current_version": None})
        conn.execute(insert(versions_t).values(article_id=row.id, version=version, status=status, data=data,
                                               author=author, created_at=now, note=note[:500]))
        if make_live or (make_dead and row.live_data is not None):
            self._bump(conn, row.id)
        new = conn.execute(select(articles_t).where(articles_t.c.id == row.id)).one()
        return _article(new, content)


class BatchOp(msgspec.Struct, kw_only=True):
    """One row of a batch: create (``expected_version`` None) or update; optionally move to ``status``."""

    content: ArticleContent
    article_id: str | None = None
    expected_version: int | None = None
    status: str | None = None
    note: str = ""


class BatchError(KbError):
    def __init__(self, position: int, cause: KbError) -> None:
        super().__init__(cause.message, cause.details)
        self.position = position
        self.cause = cause
        self.code = cause.code
