"""API keys in the key database: hashed storage, the CLI, /v1/keys, and revocation seen at once everywhere.

Real SQLite key databases shared by several key rings (as several workers would share them), the
real CLI entry point, and litestar apps through the TestClient.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3

import pytest
from litestar import Litestar, Request, get
from litestar.datastructures import State
from litestar.testing import TestClient

from lingxi.serving.auth import KeyRing, principal, require
from lingxi.serving.cli import main
from lingxi.serving.errors import EXCEPTION_HANDLERS
from lingxi.serving.faults import BackendUnavailable
from lingxi.serving.keys import KeyCache, KeyProblem, KeyStore, digest
from lingxi.serving.keys_api import keys_router
from lingxi.serving.settings import ApiKey


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


@get("/whoami", guards=[require("read")], sync_to_thread=False)
def whoami(request: Request) -> dict[str, str]:
    p = principal(request)
    return {"name": p.name, "tenant": p.tenant, "role": p.role, "key_id": p.key_id}


def make_app(url: str, config_keys: list[ApiKey] | None = None) -> Litestar:
    """An app the way a worker builds it: its own store, engine and cache on the shared database."""
    ring = KeyRing(config_keys or [], KeyCache(KeyStore(url)))
    return Litestar(route_handlers=[whoami, keys_router], state=State({"keyring": ring}),
                    exception_handlers=EXCEPTION_HANDLERS)


def test_keys_are_stored_only_as_digests_and_listed_without_secrets(tmp_path, db_url):
    store = KeyStore(db_url).create_schema()
    assert store.version() == 0
    record, key = store.create("web widget", "shop-a", "read", created_by="ops")
    assert key.startswith(f"lx_{record.key_id}_") and len(key) > 50
    assert store.version() == 1 and store.find(digest(key)).key_id == record.key_id
    secret = key.rsplit("_", 1)[1]
    raw = (tmp_path / "keys.db").read_bytes()
    dump = "\n".join(sqlite3.connect(tmp_path / "keys.db").iterdump())
    assert secret.encode() not in raw and secret not in dump and digest(key) in dump

    other, _ = store.create("agent desk", "shop-b", "editor")
    assert [r.key_id for r in store.list("shop-a")] == [record.key_id]
    assert {r.key_id for r in store.list()} == {record.key_id, other.key_id}
    revoked = store.revoke(record.key_id)
    assert revoked.revoked_at is not None and store.version() == 3
    assert store.revoke(record.key_id).revoked_at == revoked.revoked_at and store.version() == 3  # idempotent
    assert [r.key_id for r in store.list()] == [other.key_id]
    assert {r.key_id for r in store.list(include_revoked=True)} == {record.key_id, other.key_id}
    with pytest.raises(KeyProblem) as exc:
        store.revoke(other.key_id, tenant="shop-a")  # another tenant's key is not found
    assert exc.value.code == "key_not_found"
    for bad in [("x", "Shop A", "read"), ("x", "shop-a", "owner"), ("", "shop-a", "read"), ("x", "a/b", "read")]:
        with pytest.raises(KeyProblem):
            store.create(*bad)


def test_a_revoked_key_is_refused_at_once_by_every_worker(db_url):
    admin_store = KeyStore(db_url).create_schema()
    _, key = admin_store.create("widget", "shop-a", "read")
    with contextlib.ExitStack() as stack:
        workers = [stack.enter_context(TestClient(make_app(db_url))) for _ in range(3)]
        for w in workers:  # every worker has seen (and cached) the key
            for _ in range(2):
                r = w.get("/whoami", headers={"X-API-Key": key})
                assert r.status_code == 200 and r.json()["tenant"] == "shop-a"
        record = admin_store.list("shop-a")[0]
        admin_store.revoke(record.key_id)
        for w in workers:  # the very next request, no waiting
            r = w.get("/whoami", headers={"X-API-Key": key})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        # a key created after the caches were filled works at once too
        _, fresh = admin_store.create("widget 2", "shop-a", "read")
        assert all(w.get("/whoami", headers={"X-API-Key": fresh}).status_code == 200 for w in workers)


def test_revoking_through_one_worker_is_seen_by_another_and_tenants_stay_apart(db_url):
    store = KeyStore(db_url).create_schema()
    _, admin_a = store.create("admin a", "shop-a", "admin")
    _, admin_b = store.create("admin b", "shop-b", "admin")
    _, editor_a = store.create("editor a", "shop-a", "editor")
    with TestClient(make_app(db_url)) as one, TestClient(make_app(db_url)) as two:
        made = one.post("/v1/keys", json={"name": "kiosk", "role": "read"}, headers={"X-API-Key": admin_a})
        assert made.status_code == 201
        kiosk, kiosk_id = made.json()["key"], made.json()["record"]["key_id"]
        assert made.json()["record"]["tenant"] == "shop-a"
        assert two.get("/whoami", headers={"X-API-Key": kiosk}).json()["tenant"] == "shop-a"

        listed_b = two.get("/v1/keys", headers={"X-API-Key": admin_b}).json()
        assert [k["name"] for k in listed_b] == ["admin b"] and "key" not in listed_b[0]
        r = two.delete(f"/v1/keys/{kiosk_id}", headers={"X-API-Key": admin_b})  # shop-b cannot touch it
        assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"
        assert one.get("/whoami", headers={"X-API-Key": kiosk}).status_code == 200

        r = one.post("/v1/keys", json={"name": "boss", "role": "admin"}, headers={"X-API-Key": editor_a})
        assert r.status_code == 403  # /v1/keys is for admins
        r = one.post("/v1/keys", json={"name": "bad", "role": "owner"}, headers={"X-API-Key": admin_a})
        assert r.status_code == 400

        assert one.delete(f"/v1/keys/{kiosk_id}", headers={"X-API-Key": admin_a}).status_code == 200
        assert two.get("/whoami", headers={"X-API-Key": kiosk}).status_code == 401
        assert one.get("/whoami", headers={"X-API-Key": kiosk}).status_code == 401


def test_config_file_keys_keep_working_beside_database_keys(db_url):
    store = KeyStore(db_url).create_schema()
    _, db_key = store.create("db key", "shop-a", "read")
    cfg = [ApiKey(name="ops", role="admin", key="config-key-123", tenant="shop-c")]
    with TestClient(make_app(db_url, cfg)) as c:
        assert c.get("/whoami", headers={"Authorization": "Bearer config-key-123"}).json() == {
            "name": "ops", "tenant": "shop-c", "role": "admin", "key_id": "config:ops"}
        assert c.get("/whoami", headers={"X-API-Key": db_key}).json()["tenant"] == "shop-a"
        assert c.get("/whoami").status_code == 401
        assert c.get("/whoami", headers={"X-API-Key": "config-key-1234"}).status_code == 401


def test_open_until_the_first_key_and_never_open_again(db_url):
    store = KeyStore(db_url).create_schema()
    with TestClient(make_app(db_url)) as c:
        assert c.get("/whoami").json()["name"] == "anonymous"  # no key anywhere: open (loopback only)
        r = c.post("/v1/keys", json={"name": "sneaky", "role": "admin"})  # would lock everyone else out
        assert r.status_code == 403 and r.json()["error"]["code"] == "key_required"
        record, key = store.create("first", "default", "admin")
        assert c.get("/whoami").status_code == 401
        store.revoke(record.key_id)
        assert c.get("/whoami").status_code == 401  # revoking the last key does not open the server
        assert c.get("/whoami", headers={"X-API-Key": key}).status_code == 401


def test_an_unreachable_key_database_honours_recent_keys_for_the_grace_period(tmp_path, db_url):
    store = KeyStore(db_url).create_schema()
    record, key = store.create("widget", "shop-a", "read")
    cache = KeyCache(KeyStore(db_url), outage_grace_s=60)
    strict = KeyCache(KeyStore(db_url), outage_grace_s=0)
    assert cache.lookup(digest(key)).key_id == record.key_id
    assert strict.lookup(digest(key)).key_id == record.key_id
    for c in (cache, strict):  # the database goes away: the file cannot be opened any more
        c.store.dispose()
        c.store = KeyStore(f"sqlite:///{tmp_path / 'gone' / 'missing' / 'keys.db'}")  # every engine of it
        c.retry_s = 0.0
    assert cache.lookup(digest(key)).key_id == record.key_id  # checked a moment ago: still honoured
    with pytest.raises(BackendUnavailable):
        cache.lookup(digest("lx_0000_never-seen"))  # nothing to vouch for it
    with pytest.raises(BackendUnavailable):
        strict.lookup(digest(key))  # grace 0: fail closed
    with TestClient(Litestar(route_handlers=[whoami], state=State({"keyring": KeyRing([], strict)}),
                             exception_handlers=EXCEPTION_HANDLERS)) as c:
        r = c.get("/whoami", headers={"X-API-Key": key})
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert r.headers["retry-after"]


def test_the_cli_creates_lists_and_revokes(tmp_path, capsys):
    config = tmp_path / "lingxi.toml"
    config.write_text(f'home = "{tmp_path}"\nkeys_url = "sqlite:///{tmp_path / "cli-keys.db"}"\n', "utf-8")
    assert main(["--config", str(config), "keys", "create", "--name", "widget", "--tenant", "shop-a"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("lx_") and "shown only now" in out.err
    assert main(["--config", str(config), "keys", "create", "--name", "desk", "--tenant", "shop-b", "--role",
                 "editor", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["tenant"] == "shop-b" and made["role"] == "editor" and made["key"].startswith("lx_")

    assert main(["--config", str(config), "keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert "widget" in listing and "desk" in listing and key not in listing and made["key"] not in listing
    key_id = key.split("_")[1]
    assert main(["--config", str(config), "keys", "revoke", key_id, "--tenant", "shop-b"]) == 2
    assert "no key" in capsys.readouterr().err
    assert main(["--config", str(config), "keys", "revoke", key_id]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "keys", "list", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["desk"]
    assert main(["--config", str(config), "keys", "create", "--name", "x", "--tenant", "Bad Tenant"]) == 2
    ring = KeyRing([], KeyCache(KeyStore(f"sqlite:///{tmp_path / 'cli-keys.db'}")))
    assert ring.identify(key) is None and ring.identify(made["key"]).tenant == "shop-b"


def test_the_event_loop_reads_a_sqlite_key_file_itself_and_a_locked_file_goes_to_a_thread(db_url, monkeypatch):
    import threading
    import time

    import anyio

    from lingxi.serving.errors import ApiError

    store = KeyStore(db_url).create_schema()
    _, key = store.create("widget", "shop-a", "read")
    ring = KeyRing([], KeyCache(KeyStore(db_url)))
    assert ring.cache.store.reads_without_waiting and not KeyStore("sqlite://").reads_without_waiting
    hops = []
    real_run_sync = anyio.to_thread.run_sync

    async def counted(fn, *args, **kwargs):
        hops.append(fn)
        return await real_run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)

    def who(presented):
        return anyio.run(ring.authenticate, presented)

    assert who(key).tenant == "shop-a" and len(hops) == 1  # first contact: the schema check runs in a thread
    assert who(key).tenant == "shop-a" and len(hops) == 1  # then on the loop
    store.revoke(store.list("shop-a")[0].key_id)
    with pytest.raises(ApiError) as refused:
        who(key)  # the revocation is seen at once on the loop's read too
    assert refused.value.status == 401 and len(hops) == 1

    _, fresh = store.create("widget 2", "shop-a", "read")
    locked, release = threading.Event(), threading.Event()

    def hold_the_file() -> None:  # an exclusive-mode writer: readers of the file must wait for it
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("UPDATE lingxi_api_key_state SET version = version WHERE id = 1")
        conn.execute("COMMIT")
        locked.set()
        release.wait(5)
        conn.close()

    store.dispose()  # open WAL connections would keep the exclusive lock from being taken
    ring.cache.store.dispose()
    holder = threading.Thread(target=hold_the_file)
    holder.start()
    assert locked.wait(5)
    threading.Timer(0.3, release.set).start()
    t0 = time.monotonic()
    assert who(fresh).name == "widget 2"  # answered by the thread read, once the lock was released
    assert len(hops) == 2 and time.monotonic() - t0 >= 0.25
    holder.join()
