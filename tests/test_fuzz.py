"""schemathesis against the app's own OpenAPI document (small budget; `make fuzz` runs the long one).

Every operation in ``/schema/openapi.json`` gets generated requests — valid ones and, for each
operation, ones that break its schema — sent to the real app in-process (ASGI, with its lifespan).
A response must never be a 5xx (503 is documented: model or backend unavailable), must use a
documented status code and content type, and its body must match the documented schema (errors
included: ``{"error": {...}}``).

(schemathesis' own pytest parametrisation needs pytest < 9, so the operations are walked here with
its Hypothesis strategies instead.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 8  # per operation and mode: ≈ 800 requests in all, well under a minute


@pytest.fixture(scope="module")
def api_schema(trained_demo, demo_encoder, lingxi_home, tmp_path_factory):
    from lingxi.serving.app import create_app, encoder_wrapper
    from lingxi.serving.loading import ModelHolder
    from lingxi.serving.settings import Settings

    home = tmp_path_factory.mktemp("fuzz-home")  # the fuzzer writes articles, keys, events: its own stores
    settings = Settings(home=str(home), models_dir=str(lingxi_home / "models"), kb_seed_demo=False,
                        dialogue_store="memory", rate_limit_per_s=0)
    holder = ModelHolder(settings.models_path, settings.bot, wrap_encoder=encoder_wrapper(settings))
    holder._encoders[repr(trained_demo.bundle.encoders)] = holder.wrap_encoder(demo_encoder)  # session weights
    return schemathesis.openapi.from_asgi("/schema/openapi.json", create_app(settings, holder))


def _fuzz(operation, mode: GenerationMode) -> int:
    """Run one operation's generated cases through the checks; returns how many were sent."""
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(checks=CHECKS)

    try:
        check()
    except Unsatisfiable:  # nothing to break (an operation without parameters or body)
        if mode is GenerationMode.POSITIVE:
            raise
    return sent


def test_no_server_errors_and_responses_match_the_schema(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 40, "the schema lost routes"
    sent = {op.label: _fuzz(op, GenerationMode.POSITIVE) + _fuzz(op, GenerationMode.NEGATIVE) for op in operations}
    assert all(sent.values()), [label for label, n in sent.items() if not n]
