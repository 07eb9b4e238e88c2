"""Article store on SQLite and PostgreSQL: versions, status machine, optimistic concurrency, KB revision."""

from __future__ import annotations

import threading

import pytest

from lingxi.retrieval.articles import (
    ArticleContent,
    ArticleExists,
    ArticleNotFound,
    InvalidTransition,
    VersionConflict,
    diff_content,
)
from lingxi.retrieval.store import ArticleArchived, BatchError, BatchOp, KbStore, sqlite_url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = KbStore(sqlite_url(tmp_path / "kb.db")).create_schema()
        yield s
        s.dispose()
        return
    s = KbStore(request.getfixturevalue("pg_schema_url")).create_schema()
    try:
        yield s
    finally:
        s.dispose()


def _content(title: str = "如何申请退款？", body: str = "在订单详情点击申请售后。") -> ArticleContent:
    return ArticleContent(title=title, body=body, variants=["怎么退款"], category=["售后", "退款"])


def _publish(store: KbStore, article_id: str) -> None:
    a = store.get(article_id)
    a = store.transition(article_id, "in_review", a.version, "ed")
    store.transition(article_id, "published", a.version, "rev")


def test_every_change_is_a_version_with_author_and_diff(store):
    a = store.create(_content(), "alice", "kb-refund")
    assert (a.version, a.status, a.live_version) == (1, "draft", None)
    b = store.update("kb-refund", _content(body="第一步：打开订单详情。"), 1, "bob")
    assert b.version == 2 and b.updated_by == "bob"
    versions = store.versions("kb-refund")
    assert [(v.version, v.author) for v in versions] == [(2, "bob"), (1, "alice")]
    changes = diff_content(store.version("kb-refund", 1).content, store.version("kb-refund", 2).content)
    assert [c.field for c in changes] == ["body"]
    assert any(line.startswith("+第一步") for line in changes[0].unified)
    # an edit that changes nothing is not a new version
    assert store.update("kb-refund", _content(body="第一步：打开订单详情。"), 2, "bob").version == 2


def test_status_machine_and_live_version(store):
    store.create(_content(), "alice", "kb-a")
    rev0 = store.revision()
    with pytest.raises(InvalidTransition) as err:
        store.transition("kb-a", "published", 1, "rev")
    assert err.value.details["allowed"] == ["in_review", "archived"]
    _publish(store, "kb-a")
    assert store.revision() == rev0 + 1
    live = store.get("kb-a")
    assert live.status == "published" and live.live_version == 3

    # editing a published article makes a draft; customers keep seeing the published text
    edited = store.update("kb-a", _content(title="退款申请指南"), live.version, "alice")
    assert edited.status == "draft" and edited.live_version == 3
    assert store.live()["kb-a"].title == "如何申请退款？"
    assert store.revision() == rev0 + 1  # a draft edit does not change what search serves
    _publish(store, "kb-a")
    assert store.live()["kb-a"].title == "退款申请指南"

    archived = store.transition("kb-a", "archived", store.get("kb-a").version, "rev")
    assert archived.live_version is None and "kb-a" not in store.live()
    with pytest.raises(ArticleArchived):
        store.update("kb-a", _content(title="x"), archived.version, "alice")
    current, changed = store.changes_since(rev0)
    assert current == store.revision() and changed == {"kb-a"}


def test_restore_of_a_live_article_republishes_old_content(store):
    store.create(_content(title="旧标题"), "alice", "kb-r")
    _publish(store, "kb-r")
    v = store.update("kb-r", _content(title="错误的新标题"), store.get("kb-r").version, "alice")
    _publish(store, "kb-r")
    assert store.live()["kb-r"].title == "错误的新标题"
    restored = store.restore("kb-r", 1, store.get("kb-r").version, "reviewer")
    assert restored.title == "旧标题" and restored.status == "published"
    assert store.live()["kb-r"].title == "旧标题"
    assert store.versions("kb-r")[0].note == "restored version 1"
    with pytest.raises(ArticleNotFound):
        store.restore("kb-r", 99, restored.version, "reviewer")
    assert v.version < restored.version


def test_stale_version_is_rejected_never_overwritten(store):
    store.create(_content(), "alice", "kb-c")
    store.update("kb-c", _content(body="alice 的修改"), 1, "alice")
    with pytest.raises(VersionConflict) as err:
        store.update("kb-c", _content(body="bob 的修改"), 1, "bob")
    assert err.value.details["current_version"] == 2
    assert store.get("kb-c").body == "alice 的修改"


def test_concurrent_edits_of_one_article_let_exactly_one_win(store):
    store.create(_content(), "alice", "kb-race")
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def edit(i: int) -> None:
        barrier.wait()
        try:
            store.update("kb-race", _content(body=f"编辑 {i}"), 1, f"user{i}")
            outcomes.append("ok")
        except VersionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["ok"]
    article = store.get("kb-race")
    assert article.version == 2
    assert [v.version for v in store.versions("kb-race")] == [2, 1]


def test_unknown_ids_and_duplicates(store):
    with pytest.raises(ArticleNotFound):
        store.get("nope")
    with pytest.raises(ArticleNotFound):
        store.update("nope", _content(), 1, "x")
    store.create(_content(), "alice", "kb-dup")
    with pytest.raises(ArticleExists):
        store.create(_content(), "alice", "kb-dup")


def test_batch_is_all_or_nothing(store):
    store.create(_content(), "alice", "kb-existing")
    ops = [BatchOp(content=_content(title="新文章一"), article_id="kb-new-1", status="published"),
           BatchOp(content=_content(title="改"), article_id="kb-existing", expected_version=7)]
    with pytest.raises(BatchError) as err:
        store.apply_batch(ops, "importer")
    assert err.value.position == 1 and err.value.code == "version_conflict"
    with pytest.raises(ArticleNotFound):
        store.get("kb-new-1")
    rev = store.revision()
    ops[1] = BatchOp(content=_content(title="改"), article_id="kb-existing", expected_version=1)
    out = store.apply_batch(ops, "importer")
    assert [a.status for a in out] == ["published", "draft"]
    assert store.revision() == rev + 1 and set(store.live()) == {"kb-new-1"}
