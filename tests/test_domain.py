from pathlib import Path

import pytest

from lingxi.datasets.domain import DomainError, demo_domain_path, load_domain, load_eval_set


def test_demo_domain_meets_its_size_contract():
    domain = load_domain(demo_domain_path())
    assert len(domain.intents) >= 40
    assert min(len(i.examples) for i in domain.intents) >= 15
    heldout, oos = load_eval_set(demo_domain_path())
    per_intent = {i.name: 0 for i in domain.intents}
    for ex in heldout:
        per_intent[ex.intent] += 1
    assert min(per_intent.values()) >= 5
    assert len(oos) >= 100
    training = {t.strip().lower() for t in domain.training_pairs()[0]}
    assert not training & {e.text.strip().lower() for e in heldout}
    assert not training & {t.strip().lower() for t in oos}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


GOOD_INTENTS = """intents:
  - name: greet
    examples: [你好, 在吗]
  - name: bye
    examples: [再见, 拜拜]
"""


def test_invalid_yaml_names_file_and_line(tmp_path):
    _write(tmp_path, "intents.yml", GOOD_INTENTS + "  - name: [unclosed\n")
    with pytest.raises(DomainError) as err:
        load_domain(tmp_path)
    problem = err.value.problems[0]
    assert problem.file == "intents.yml"
    assert problem.line == 7
    assert "invalid YAML" in problem.message


def test_wrong_type_and_unknown_field_point_at_their_line(tmp_path):
    _write(tmp_path, "intents.yml", GOOD_INTENTS + "  - name: thanks\n    examples: [谢谢, 多谢]\n    colour: red\n")
    with pytest.raises(DomainError) as err:
        load_domain(tmp_path)
    assert "colour" in str(err.value)
    assert err.value.problems[0].line == 8

    _write(tmp_path, "intents.yml", GOOD_INTENTS + "  - name: thanks\n    examples: 42\n")
    with pytest.raises(DomainError) as err:
        load_domain(tmp_path)
    assert err.value.problems[0].line == 7
    assert "intents[2].examples" in str(err.value)


def test_semantic_problems_are_all_reported(tmp_path):
    _write(tmp_path, "intents.yml", GOOD_INTENTS)
    _write(tmp_path, "rules.yml", """rules:
  - id: r1
    match: regex
    patterns: ['退款(']
    response: x
  - id: r2
    match: contains
    patterns: [人工]
    intent: no_such_intent
  - id: r3
    match: contains
    patterns: [晚上]
    response: y
    conditions:
      time_windows:
        - start: "25:00"
          end: "06:00"
""")
    with pytest.raises(DomainError) as err:
        load_domain(tmp_path)
    text = str(err.value)
    assert "rules.yml:4:" in text and "bad regex" in text
    assert "no_such_intent" in text
    assert "start must be HH:MM" in text


def test_duplicate_intent_and_too_few_examples(tmp_path):
    _write(tmp_path, "a.yml", GOOD_INTENTS)
    _write(tmp_path, "b.yml", "intents:\n  - name: greet\n    examples: [嗨, 哈喽]\n  - name: lonely\n    examples: [一个]\n")
    with pytest.raises(DomainError) as err:
        load_domain(tmp_path)
    text = str(err.value)
    assert "b.yml:2:" in text and "already defined at a.yml:2" in text
    assert "b.yml:4:" in text and "at least 2 examples" in text


def test_invalid_utf8_is_reported(tmp_path):
    (tmp_path / "intents.yml").write_bytes(GOOD_INTENTS.encode() + b"  - name: x\n    examples: [\xff\xfe]\n")
    with pytest.raises(DomainError) as err:
        load_domain(tmp_path)
    assert err.value.problems[0].line == 7
    assert "UTF-8" in str(err.value)
