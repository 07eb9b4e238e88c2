"""The real litestar app through its test client, serving the trained demo model."""

import pytest
from litestar.testing import TestClient

from lingxi.serving.app import create_app
from lingxi.serving.loading import ModelHolder
from lingxi.serving.settings import ApiKey, Settings


@pytest.fixture(scope="module")
def holder(trained_demo, demo_encoder, lingxi_home):
    h = ModelHolder(lingxi_home / "models", "demo-shop")
    h._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder  # share the session's encoder
    assert h.load_latest() is not None
    return h


@pytest.fixture(scope="module")
def open_client(holder, lingxi_home):
    settings = Settings(home=str(lingxi_home), max_text_chars=200)
    with TestClient(create_app(settings, holder)) as client:
        yield client


@pytest.fixture(scope="module")
def keyed_client(holder, lingxi_home):
    keys = [ApiKey(name="widget", role="read", key="read-key-123"),
            ApiKey(name="ops", role="admin", key="admin-key-456")]
    settings = Settings(home=str(lingxi_home), api_keys=keys)
    with TestClient(create_app(settings, holder)) as client:
        yield client


def test_parse_returns_a_rasa_like_result(open_client):
    r = open_client.post("/v1/parse", json={"text": "我账号出问题了", "channel": "web", "conversation_id": "c1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] == "clarify"
    assert set(body["intent"]) >= {"name", "confidence"}
    assert body["clarification"]["question"] == "您是想问以下哪个问题？"
    assert all(o["payload"].startswith("/") for o in body["clarification"]["options"])
    assert body["match"]["match_type"] == "CLARIFY"
    assert body["conversation_id"] == "c1"
    assert body["model"]["name"] == "demo-shop"


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"text": ""}, 422, "empty_text"),
        ({"text": "   \n"}, 422, "empty_text"),
        ({"text": "长" * 201}, 422, "text_too_long"),
        ({"text": 42}, 400, "invalid_request"),
        ({"txt": "你好"}, 400, None),
        ({"text": "你好", "colour": "red"}, 400, "unknown_field"),
        ({"text": "你好", "language": "fr"}, 422, "invalid_language"),
        ({"text": "你好", "visitor_tags": ["vip"] * 51}, 422, "invalid_field"),
        ({"text": "你好", "timestamp": "yesterday"}, 400, "invalid_request"),
    ],
)
def test_bad_input_gets_a_4xx_with_a_stable_code(open_client, payload, status, code):
    r = open_client.post("/v1/parse", json=payload)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code


def test_invalid_json_and_invalid_utf8_are_400(open_client):
    for raw in (b'{"text": ', b'{"text": "\xff\xfe"}', b"not json"):
        r = open_client.post("/v1/parse", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, (raw, r.text)
        assert r.json()["error"]["code"] in ("invalid_json", "invalid_request")
    # and the server keeps serving
    assert open_client.post("/v1/parse", json={"text": "你好"}).status_code == 200


def test_health_schema_and_docs_ui(open_client):
    assert open_client.get("/healthz").json() == {"status": "ok"}
    ready = open_client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model"]["bot"] == "demo-shop"
    schema = open_client.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/v1/parse" in schema.json()["paths"]
    ui = open_client.get("/schema/swagger")
    assert ui.status_code == 200 and "/schema-assets/swagger-ui-bundle.js" in ui.text
    assert open_client.get("/schema-assets/swagger-ui-bundle.js").status_code == 200


def test_keys_are_enforced_with_roles(keyed_client):
    assert keyed_client.get("/healthz").status_code == 200  # health needs no key
    r = keyed_client.post("/v1/parse", json={"text": "你好"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = keyed_client.post("/v1/parse", json={"text": "你好"}, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401
    r = keyed_client.post("/v1/parse", json={"text": "你好"}, headers={"X-API-Key": "read-key-123"})
    assert r.status_code == 200
    r = keyed_client.post("/v1/parse", json={"text": "你好"}, headers={"Authorization": "Bearer admin-key-456"})
    assert r.status_code == 200
    r = keyed_client.post("/v1/admin/reload", headers={"X-API-Key": "read-key-123"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = keyed_client.post("/v1/admin/reload", headers={"X-API-Key": "admin-key-456"})
    assert r.status_code == 200 and r.json()["bot"] == "demo-shop"


def test_unknown_route_and_method(open_client):
    assert open_client.get("/v1/nope").json()["error"]["code"] == "not_found"
    r = open_client.get("/v1/parse")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_not_ready_without_a_model(tmp_path):
    settings = Settings(home=str(tmp_path))
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        r = client.post("/v1/parse", json={"text": "你好"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"
