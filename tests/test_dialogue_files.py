"""Flow / dialogue files: the demo loads; broken files are rejected at load with file and line."""

from __future__ import annotations

import textwrap

import pytest

from lingxi.datasets.dialogue_files import load_conversation_tests, load_dialogue
from lingxi.datasets.domain import DomainError, demo_domain_path, load_domain


def test_demo_dialogue_files_load_and_match_the_domain():
    domain = load_domain(demo_domain_path())
    spec = load_dialogue(demo_domain_path(), set(domain.intent_names), {r.id for r in domain.rules})
    assert {"password_recovery", "order_logistics", "refund", "leave_message"} <= set(spec.flows)
    assert spec.handoff.offline_flow == "leave_message"
    assert any(t.id == "checkout_dwell" for t in spec.triggers)
    tests = load_conversation_tests(demo_domain_path() / "tests")
    assert len(tests) >= 25


def _domain(tmp_path, body: str):
    (tmp_path / "flows").mkdir(parents=True)
    (tmp_path / "flows" / "f.yml").write_text(textwrap.dedent(body), "utf-8")
    return tmp_path


def _problems(tmp_path, body: str) -> list[str]:
    with pytest.raises(DomainError) as err:
        load_dialogue(_domain(tmp_path, body))
    return [str(p) for p in err.value.problems]


BASE_SLOTS = """
slots:
  - name: order_id
    type: entity
    entity: order_id
"""


def test_dangling_step_is_rejected_with_file_and_line(tmp_path):
    problems = _problems(tmp_path, BASE_SLOTS + """
flows:
  - id: f
    steps:
      - id: ask
        ask: order_id
        prompt: 订单号？
        next: nowhere
""")
    assert problems == ["flows/f.yml:10: flow 'f': step 'ask': next 'nowhere' is not a step of this flow (dangling)"]


def test_unknown_slot_is_rejected(tmp_path):
    problems = _problems(tmp_path, BASE_SLOTS + """
flows:
  - id: f
    steps:
      - id: a
        ask: phone
        prompt: 手机号？
      - id: b
        say: 好的 {colour}
""")
    assert "flows/f.yml:10: flow 'f': step 'a' asks for unknown slot 'phone'" in problems
    assert "flows/f.yml:13: flow 'f': step 'b': template uses unknown slot 'colour'" in problems


def test_cycle_without_an_ask_is_rejected_but_a_retry_loop_with_an_ask_is_fine(tmp_path):
    problems = _problems(tmp_path, BASE_SLOTS + """
flows:
  - id: loop
    steps:
      - id: a
        say: 一
      - id: b
        branch:
          - when: {slot: order_id, is_set: false}
            goto: a
          - goto: c
      - id: c
        end: true
  - id: ok
    steps:
      - id: ask
        ask: order_id
        prompt: 订单号？
      - id: again
        branch:
          - when: {slot: order_id, is_set: false}
            goto: ask
""")
    assert problems == ["flows/f.yml:10: flow 'loop': steps a → b → a form a cycle without an ask (would loop forever)"]


def test_unknown_keys_actions_and_step_kinds(tmp_path):
    problems = _problems(tmp_path, BASE_SLOTS + """
flows:
  - id: f
    steps:
      - id: a
        action: lookup_order
      - id: b
        say: hi
        ask: order_id
""")
    assert "flows/f.yml:10: flow 'f': step 'a' calls unknown action 'lookup_order'" in problems
    assert any("flows/f.yml:12:" in p and "exactly one of" in p for p in problems)
    problems = _problems(tmp_path / "x", "flows:\n  - id: f\n    colour: red\n    steps: []\n")
    assert problems == ["flows/f.yml:3: flows[0]: Object contains unknown field `colour`"]


def test_flow_trigger_intents_are_checked_against_the_domain(tmp_path):
    _domain(tmp_path, BASE_SLOTS + """
flows:
  - id: f
    trigger: {intents: [no_such_intent]}
    steps:
      - id: a
        end: true
""")
    with pytest.raises(DomainError, match="trigger intent 'no_such_intent' is not an intent"):
        load_dialogue(tmp_path, known_intents={"greet"})


def test_conversation_test_turns_need_exactly_one_action(tmp_path):
    f = tmp_path / "t.yml"
    f.write_text("conversations:\n  - name: x\n    turns:\n      - user: hi\n        payload: /x\n", "utf-8")
    with pytest.raises(DomainError, match=r"t.yml:4: a turn needs exactly one of"):
        load_conversation_tests(f)
