"""``POST /model/parse``: Rasa's NLU parse route and response shape, for clients written against Rasa.

The shape follows Rasa's published HTTP API (``ParseResult``: ``text``, ``intent {name,
confidence}``, ``entities [{entity, value (string), start, end, …}]``, ``intent_ranking``) and what
a Rasa server adds in practice: ``confidence_entity``, ``extractor``, ``additional_info`` with the
structured value (as Rasa's Duckling extractor does), ``response_selector`` for retrieval intents
and ``nlu_fallback`` as the intent of a message Lingxi rejects (Rasa's FallbackClassifier).
``/v1/parse`` keeps Lingxi's richer shape; this module only translates its result.

Mapping choices:

* a rejected message (decision ``out_of_scope``) → intent ``nlu_fallback`` with the model's
  reject threshold as confidence, first in ``intent_ranking`` (what FallbackClassifier does);
* Lingxi's built-in entity types take Duckling's names (``money`` → ``amount-of-money``,
  ``datetime`` → ``time``, ``phone`` → ``phone-number``); the value is a string and the
  structured value goes to ``additional_info``;
* an intent ``<group>.<key>`` with category ``<group>`` (how ``lingxi import rasa`` names
  retrieval intents ``faq/…``) is reported as intent ``<group>`` plus ``response_selector`` with
  ``intent_response_key`` ``<group>/<key>``, as Rasa's ResponseSelector does;
* internal classes (``oos``, vague-message classes ``clarify:…``) never appear in the ranking.
"""

from __future__ import annotations

import json
from typing import Literal

import msgspec
from litestar import Request, post
from litestar.datastructures import State

from lingxi.nlu.parse import EntityOut, IntentMeta, ParseContext, ParseResult
from lingxi.nlu.texts import pick_text

from . import metrics
from .auth import require
from .errors import ApiError
from .events import record_parse

FALLBACK_INTENT = "nlu_fallback"
DUCKLING_NAMES = {"money": "amount-of-money", "datetime": "time", "phone": "phone-number"}
_INTERNAL_PREFIXES = ("clarify:",)
_INTERNAL = {"oos"}


class RasaParseRequest(msgspec.Struct):
    """Rasa's request body. Unknown fields are ignored, as a Rasa server does."""

    text: str
    message_id: str | None = None


class RasaIntent(msgspec.Struct):
    name: str
    confidence: float


class RasaEntity(msgspec.Struct, omit_defaults=True):
    entity: str
    value: str
    start: int
    end: int
    confidence_entity: float
    extractor: str
    additional_info: dict | None = None


class RasaResponse(msgspec.Struct):
    text: str


class RasaSelected(msgspec.Struct):
    responses: list[RasaResponse]
    confidence: float
    intent_response_key: str
    utter_action: str


class RasaRanked(msgspec.Struct):
    confidence: float
    intent_response_key: str


class RasaSelector(msgspec.Struct):
    response: RasaSelected
    ranking: list[RasaRanked]


class RasaParseResult(msgspec.Struct, omit_defaults=True):
    text: str
    intent: RasaIntent
    entities: list[RasaEntity]
    intent_ranking: list[RasaIntent]
    response_selector: dict[str, RasaSelector | list[str]] | None = None
    message_id: str | None = None


def _number_text(x: object) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def rasa_entity(ent: EntityOut) -> RasaEntity:
    """A string value, the structure in ``additional_info`` (Duckling's ``{value, unit, type}`` keys)."""
    value, info = ent.value, None
    if isinstance(value, dict):
        if "amount" in value:
            info = {"value": value.get("amount"), "unit": value.get("currency"), "type": "value", **value}
            value = _number_text(value.get("amount"))
        elif "value" in value:
            info = {"type": "value", **value}
            value = str(value["value"])
        else:
            info = dict(value)
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        info = {"value": value, "type": "value"}
        value = _number_text(value)
    elif not isinstance(value, str):
        value = ent.text
    return RasaEntity(DUCKLING_NAMES.get(ent.entity, ent.entity), value, ent.start, ent.end,
                      round(float(ent.confidence), 4), ent.extractor, info)


def _group(name: str, intents: dict[str, IntentMeta]) -> tuple[str, str] | None:
    """``(faq, faq/ask_x)`` for an imported retrieval intent ``faq.ask_x`` of category ``faq``."""
    meta = intents.get(name)
    if meta and meta.category and name.startswith(f"{meta.category}.") and len(name) > len(meta.category) + 1:
        return meta.category, f"{meta.category}/{name[len(meta.category) + 1:]}"
    return None


def to_rasa(result: ParseResult, intents: dict[str, IntentMeta], reject_threshold: float,
            message_id: str | None = None) -> RasaParseResult:
    """Translate Lingxi's parse result into Rasa's shape (see the module docstring for the choices)."""
    ranked = [r for r in result.intent_ranking
              if r.name not in _INTERNAL and not r.name.startswith(_INTERNAL_PREFIXES)]
    ranking: list[RasaIntent] = []
    selectors: dict[str, RasaSelector | list[str]] = {}
    seen: set[str] = set()
    for r in ranked:
        grouped = _group(r.name, intents)
        name = grouped[0] if grouped else r.name
        if grouped:
            key = grouped[0]
            entry = selectors.get(key)
            if entry is None:
                meta = intents[r.name]
                text = pick_text(meta.response, result.language) if meta.response is not None else ""
                selectors[key] = RasaSelector(
                    RasaSelected([RasaResponse(text)] if text else [], round(r.confidence, 4), grouped[1],
                                 f"utter_{grouped[1]}"), [])
                entry = selectors[key]
            entry.ranking.append(RasaRanked(round(r.confidence, 4), grouped[1]))
        if name in seen:  # a group's members fold into one Rasa intent, at its best member's confidence
            continue
        seen.add(name)
        ranking.append(RasaIntent(name, round(r.confidence, 4)))
    if result.decision == "out_of_scope":
        top = RasaIntent(FALLBACK_INTENT, round(float(reject_threshold), 4))
        ranking.insert(0, top)
    elif ranking:
        top = ranking[0]
        grouped = _group(result.intent.name, intents)
        if result.intent.name not in _INTERNAL and not result.intent.name.startswith(_INTERNAL_PREFIXES):
            top = RasaIntent(grouped[0] if grouped else result.intent.name, round(result.intent.confidence, 4))
    else:
        top = RasaIntent(FALLBACK_INTENT, round(float(reject_threshold), 4))
        ranking = [top]
    if selectors:
        selectors = {"all_retrieval_intents": sorted(selectors), **selectors}
    return RasaParseResult(result.text, top, [rasa_entity(e) for e in result.entities], ranking,
                           selectors or None, message_id)


EmulationMode = Literal["WIT", "LUIS", "DIALOGFLOW"]


@post("/model/parse", guards=[require("read")], tags=["nlu", "rasa"], status_code=200,
      operation_id="parseModelMessage")
async def rasa_parse(data: RasaParseRequest, state: State, request: Request,
                     emulation_mode: EmulationMode | None = None) -> RasaParseResult:
    """Rasa-compatible parse (``POST /model/parse`` of Rasa's HTTP API): intent, entities, ranking;
    ``nlu_fallback`` for a rejected message. Use ``/v1/parse`` for Lingxi's full result."""
    if emulation_mode is not None:
        raise ApiError(400, "unsupported_emulation_mode", f"emulation_mode {emulation_mode!r} is not supported; "
                       "omit it for Rasa's own format")
    from .app import ParseRequest, _holder, _validate  # the same input checks and model lookup as /v1/parse

    ctx: ParseContext = _validate(ParseRequest(text=data.text), state.settings)
    if data.message_id is not None and (not data.message_id.strip() or len(data.message_id) > 128):
        raise ApiError(422, "invalid_field", "`message_id` must be 1..128 characters")
    loaded = _holder(state).current
    if loaded is None:
        raise ApiError(503, "model_not_loaded", "no model is loaded yet; train one with `lingxi train`")
    pipeline = loaded.pipeline
    result = await pipeline.aparse(data.text, ctx)
    metrics.observe_parse(result.decision)
    record_parse(request, state, data.text, result, None, None)
    reject = getattr(getattr(pipeline.model, "thresholds_", None), "reject", 0.0)
    return to_rasa(result, pipeline.intents, reject, data.message_id)
