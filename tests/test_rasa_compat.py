"""``POST /model/parse`` through the real app and the trained demo model, checked against the request and
response shapes of Rasa's published HTTP API (RasaHQ/rasa ``docs/static/spec/rasa.yml``: the
``/model/parse`` request body and the ``ParseResult``, ``Intent`` and ``Entity`` schemas)."""

import jsonschema_rs
import pytest
from litestar.testing import TestClient

from lingxi.serving.app import create_app
from lingxi.serving.loading import ModelHolder
from lingxi.serving.settings import ApiKey, Settings

# Transcribed from Rasa's OpenAPI document (components/schemas), refs rewritten to JSON Schema $defs.
RASA_PARSE_RESULT = {
    "$defs": {
        "Entity": {
            "type": "object",
            "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}, "value": {"type": "string"},
                           "entity": {"type": "string"}, "confidence": {"type": "number"}},
            "required": ["start", "end", "value", "entity"],
        },
        "Intent": {
            "type": "object",
            "properties": {"confidence": {"type": "number"}, "name": {"type": "string"}},
            "required": ["confidence", "name"],
        },
    },
    "type": "object",
    "properties": {
        "entities": {"type": "array", "items": {"$ref": "#/$defs/Entity"}},
        "intent": {"$ref": "#/$defs/Intent"},
        "intent_ranking": {"type": "array", "items": {"$ref": "#/$defs/Intent"}},
        "text": {"type": "string"},
    },
    "required": ["text"],
}
# the spec's example request body for /model/parse
RASA_REQUEST_EXAMPLE = {"text": "Hello, I am Rasa!", "message_id": "b2831e73-1407-4ba0-a861-0f30a42a2a5a"}


def assert_rasa_shape(body: dict) -> None:
    jsonschema_rs.validate(RASA_PARSE_RESULT, body)
    # what every Rasa server also returns and clients read
    assert set(body) >= {"text", "intent", "entities", "intent_ranking"}
    for ent in body["entities"]:
        assert isinstance(ent["value"], str)
        assert set(ent) >= {"entity", "value", "start", "end", "confidence_entity", "extractor"}
        assert body["text"][ent["start"]:ent["end"]]
    confidences = [r["confidence"] for r in body["intent_ranking"]]
    assert confidences == sorted(confidences, reverse=True) or body["intent"]["name"] == "nlu_fallback"
    assert not any(r["name"] == "oos" or r["name"].startswith("clarify:") for r in body["intent_ranking"])


@pytest.fixture(scope="module")
def holder(trained_demo, demo_encoder, lingxi_home):
    h = ModelHolder(lingxi_home / "models", "demo-shop")
    h._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder
    assert h.load_latest() is not None
    return h


@pytest.fixture(scope="module")
def client(holder, lingxi_home):
    with TestClient(create_app(Settings(home=str(lingxi_home), max_text_chars=200), holder)) as c:
        yield c


def test_spec_request_example_gets_a_spec_shaped_result(client):
    r = client.post("/model/parse", json=RASA_REQUEST_EXAMPLE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_rasa_shape(body)
    assert body["text"] == RASA_REQUEST_EXAMPLE["text"]
    assert body["message_id"] == RASA_REQUEST_EXAMPLE["message_id"]


def test_intent_matches_v1_parse_and_entities_are_strings_with_details(client):
    text = "订单DD202311230001234567明天下午三点前能送到吗，运费12元，电话13812345678"
    rasa = client.post("/model/parse", json={"text": text}).json()
    lingxi = client.post("/v1/parse", json={"text": text}).json()
    assert_rasa_shape(rasa)
    if lingxi["decision"] != "out_of_scope":
        assert rasa["intent"]["name"] == lingxi["intent"]["name"]
        assert rasa["intent"]["confidence"] == pytest.approx(lingxi["intent"]["confidence"], abs=1e-3)
    by_type = {e["entity"]: e for e in rasa["entities"]}
    assert {"time", "amount-of-money", "phone-number", "order_id"} <= set(by_type), rasa["entities"]
    time = by_type["time"]
    assert time["additional_info"]["grain"] in {"hour", "minute"}
    assert time["value"] == time["additional_info"]["value"]  # ISO-8601 string, the structure beside it
    money = by_type["amount-of-money"]
    assert money["value"] == "12" and money["additional_info"]["unit"] == "CNY"
    assert by_type["phone-number"]["value"] == "13812345678"


def test_rejected_messages_are_nlu_fallback(client):
    texts = ["帮我订一张去上海的高铁票", "明天去杭州的动车还有座吗", "今天股市大盘怎么走", "推荐一部好看的电影",
             "how do I bake sourdough bread"]
    rejected = 0
    for text in texts:
        lingxi = client.post("/v1/parse", json={"text": text}).json()
        rasa = client.post("/model/parse", json={"text": text}).json()
        assert_rasa_shape(rasa)
        if lingxi["decision"] == "out_of_scope":
            rejected += 1
            assert rasa["intent"]["name"] == "nlu_fallback"
            assert rasa["intent_ranking"][0]["name"] == "nlu_fallback"
            assert 0 < rasa["intent"]["confidence"] < 1
            assert [r["name"] for r in rasa["intent_ranking"][1:]] == \
                [r["name"] for r in lingxi["intent_ranking"] if r["name"] != "oos"][:len(rasa["intent_ranking"]) - 1]
        else:
            assert rasa["intent"]["name"] != "nlu_fallback"
    assert rejected >= 2


@pytest.mark.parametrize(
    ("payload", "query", "status", "code"),
    [
        ({"text": ""}, "", 422, "empty_text"),
        ({"text": "长" * 201}, "", 422, "text_too_long"),
        ({"message_id": "x"}, "", 400, None),
        ({"text": 42}, "", 400, "invalid_request"),
        ({"text": "你好", "message_id": ""}, "", 422, "invalid_field"),
        ({"text": "你好"}, "?emulation_mode=LUIS", 400, "unsupported_emulation_mode"),
        ({"text": "你好"}, "?emulation_mode=klingon", 400, None),
    ],
)
def test_bad_requests_are_4xx_with_a_code(client, payload, query, status, code):
    r = client.post(f"/model/parse{query}", json=payload)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code


def test_unknown_fields_are_ignored_like_rasa(client):
    r = client.post("/model/parse", json={"text": "怎么退货", "message_id": "m-1", "sender": "web"})
    assert r.status_code == 200, r.text
    assert_rasa_shape(r.json())


def test_same_keys_as_v1_parse(holder, lingxi_home):
    keys = [ApiKey(name="widget", role="read", key="read-key-123")]
    with TestClient(create_app(Settings(home=str(lingxi_home), api_keys=keys), holder)) as c:
        for path in ("/v1/parse", "/model/parse"):
            assert c.post(path, json={"text": "怎么退货"}).status_code == 401
            assert c.post(path, json={"text": "怎么退货"}, headers={"X-API-Key": "wrong"}).status_code == 401
            assert c.post(path, json={"text": "怎么退货"}, headers={"X-API-Key": "read-key-123"}).status_code == 200


def test_route_is_in_the_openapi_document(client):
    doc = client.get("/schema/openapi.json").json()
    op = doc["paths"]["/model/parse"]["post"]
    assert op["operationId"] == "parseModelMessage"
