"""The front-end routes (``serving/web.py``) and the registry admin routes (``serving/registry_api.py``)
through a real litestar app with real keys and a real (empty, local) MLflow registry; no browser needed.
"""

from __future__ import annotations

import gzip

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient

from lingxi.serving import web
from lingxi.serving.auth import KeyRing
from lingxi.serving.errors import EXCEPTION_HANDLERS
from lingxi.serving.registry_api import registry_router
from lingxi.serving.settings import ApiKey, Settings
from lingxi.serving.web import web_router

KEYS = [ApiKey(name="site", role="read", key="k-read"), ApiKey(name="ed", role="editor", key="k-editor"),
        ApiKey(name="boss", role="admin", key="k-admin"),
        ApiKey(name="other-boss", role="admin", key="k-other", tenant="other-shop")]


def headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from lingxi.training.registry import Registry

    home = tmp_path_factory.mktemp("web-api-registry")
    return Registry(f"sqlite:///{home / 'mlflow.db'}", log_url=f"sqlite:///{home / 'log.db'}")


@pytest.fixture
def client(tmp_path, registry):
    settings = Settings(home=str(tmp_path), api_keys=KEYS)
    state = State({"settings": settings, "keyring": KeyRing(KEYS), "registry": registry})
    app = Litestar(route_handlers=[web_router, registry_router], state=state,
                   exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def dist(tmp_path, monkeypatch):
    """A built front-end folder (what `npm run build` writes)."""
    root = tmp_path / "dist"
    (root / "console").mkdir(parents=True)
    (root / "demo").mkdir()
    (root / "widget.js").write_text("var LingxiChat=(function(){return {};})();" * 50)
    (root / "console" / "index.html").write_text("<!doctype html><title>console</title>")
    (root / "demo" / "index.html").write_text("<!doctype html><title>demo</title>")
    monkeypatch.setattr(web, "DIST", root)
    return root


def test_widget_is_served_gzipped_when_accepted(client, dist):
    plain = client.get("/widget.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/javascript")
    assert plain.content == (dist / "widget.js").read_bytes() and "content-encoding" not in plain.headers
    packed = client.get("/widget.js", headers={"Accept-Encoding": "gzip, br"})
    assert packed.headers["content-encoding"] == "gzip" and packed.headers["vary"] == "Accept-Encoding"
    assert packed.content == (dist / "widget.js").read_bytes()  # the client decompressed it
    assert len(gzip.compress((dist / "widget.js").read_bytes())) < len(plain.content)


def test_pages_are_served_and_the_console_has_a_strict_csp(client, dist):
    console = client.get("/console")
    assert console.status_code == 200 and "console" in console.text
    assert "script-src 'self'" in console.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in console.headers["content-security-policy"]
    assert client.get("/demo").text == (dist / "demo" / "index.html").read_text()


def test_an_unbuilt_front_end_says_how_to_build_it(client, tmp_path, monkeypatch):
    monkeypatch.setattr(web, "DIST", tmp_path / "nothing-here")
    for path in ("/widget.js", "/demo", "/console"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "web_not_built"
        assert "make install" in r.json()["error"]["message"]


def test_session_says_who_the_key_is(client):
    assert client.get("/v1/session").status_code == 401
    r = client.get("/v1/session", headers=headers("k-editor"))
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("name", "role", "tenant", "bot")} == {
        "name": "ed", "role": "editor", "tenant": "default", "bot": "demo-shop"}
    assert r.json()["intents"] == []  # no model loaded in this app


def test_registry_reads_need_an_operator_editor(client):
    assert client.get("/v1/registry/versions", headers=headers("k-read")).status_code == 403
    r = client.get("/v1/registry/versions", headers=headers("k-editor"))
    assert r.status_code == 200 and r.json() == {"bot": "demo-shop", "versions": [], "champion": None,
                                                 "challenger": None}
    foreign = client.get("/v1/registry/versions", headers=headers("k-other"))
    assert foreign.status_code == 403 and "operator tenant" in foreign.json()["error"]["message"]
    assert client.get("/v1/registry/log", headers=headers("k-editor")).json() == []
    gates = client.get("/v1/registry/versions/7/gates", headers=headers("k-editor"))
    assert gates.status_code == 404 and gates.json()["error"]["code"] == "version_not_found"
    bad = client.get("/v1/registry/versions/x1/gates", headers=headers("k-editor"))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_version"


def test_promote_and_rollback_are_refused_with_reasons(client, registry):
    body = {"version": "1", "reason": "ship it"}
    refused = client.post("/v1/registry/promote", json=body, headers=headers("k-editor"))
    assert refused.status_code == 403 and "'admin' is required" in refused.json()["error"]["message"]
    unknown = client.post("/v1/registry/promote", json=body, headers=headers("k-admin"))
    assert unknown.status_code == 409 and unknown.json()["error"]["code"] == "registry_refused"
    assert "has no version '1'" in unknown.json()["error"]["message"]
    for bad, code in (({"version": "one", "reason": "x"}, "invalid_version"),
                      ({"version": "1", "reason": "  "}, "invalid_reason")):
        r = client.post("/v1/registry/promote", json=bad, headers=headers("k-admin"))
        assert r.status_code == 422 and r.json()["error"]["code"] == code
    extra = client.post("/v1/registry/promote", json={**body, "force": True}, headers=headers("k-admin"))
    assert extra.status_code == 400 and extra.json()["error"]["code"] == "unknown_field"
    rollback = client.post("/v1/registry/rollback", json={"reason": "oops"}, headers=headers("k-admin"))
    assert rollback.status_code == 409 and "no promotion to roll back" in rollback.json()["error"]["message"]
    assert registry.alias_version("demo-shop", "champion") is None
