"""`lingxi validate`: the demo domain is clean; a broken copy reports every planted problem at its file:line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lingxi.datasets.domain import demo_domain_path
from lingxi.datasets.validate import ValidateConfig, conditions_imply, validate_domain

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN = FIXTURES / "broken_domain"
BROKEN_KB = FIXTURES / "broken_kb.yml"


def planted() -> list[tuple[str, str, int]]:
    """(check, file, line) for every ``PLANTED: <check>`` marker: an inline marker points at its own
    line, a marker on a comment line at the next line that is not a comment."""
    out = []
    for path in [*sorted(BROKEN.rglob("*.yml")), BROKEN_KB]:
        lines = path.read_text("utf-8").splitlines()
        for i, line in enumerate(lines):
            found = re.search(r"PLANTED: (\w+)", line)
            if not found:
                continue
            target = i
            if line.lstrip().startswith("#"):
                target = next(j for j in range(i + 1, len(lines)) if not lines[j].lstrip().startswith("#"))
            name = str(path.relative_to(BROKEN)) if path.is_relative_to(BROKEN) else str(path)
            out.append((found.group(1), name, target + 1))
    return out


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lingxi.serving.cli", "validate", *argv], capture_output=True,
                          text=True, timeout=300)


def test_demo_domain_has_no_errors(tmp_path):
    proc = run_cli(str(demo_domain_path()), "--json", str(tmp_path / "v.json"))
    report = json.loads((tmp_path / "v.json").read_text("utf-8"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["counts"]["ERROR"] == 0 and "0 error(s)" in proc.stdout


def test_broken_copy_reports_every_planted_problem(lingxi_home):
    marks = planted()
    assert len({m[0] for m in marks}) >= 10  # the fixture plants at least ten different problems
    report = validate_domain(BROKEN, BROKEN_KB)
    found = {(f.check, f.file, f.line) for f in report.findings}
    missing = [m for m in marks if m not in found]
    assert not missing, f"not reported: {missing}\nfindings:\n" + "\n".join(map(str, report.findings))
    severity = {f.check: f.severity for f in report.findings}
    for check in ("schema", "missing_article", "contradictory_duplicate", "unknown_eval_label"):
        assert severity[check] == "ERROR", check
    for check in ("few_examples", "near_duplicate", "rule_shadowed", "unreachable_step", "unstartable_flow"):
        assert severity[check] == "WARNING", check
    near = next(f for f in report.findings if f.check == "near_duplicate")
    assert "我要申请退款了" in near.message and "'我要申请退款'" in near.message  # both texts shown
    proc = run_cli(str(BROKEN), "--kb", str(BROKEN_KB))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(r"ERROR +rules\.yml:\d+: rule 'login_failed_help' refers to article", proc.stdout)


def test_schema_error_in_a_domain_file_names_file_and_line(tmp_path):
    domain = tmp_path / "d"
    shutil.copytree(BROKEN, domain)
    intents = domain / "intents.yml"
    text = intents.read_text("utf-8").replace("  - name: greet\n", "  - name: typo_intent\n    exampels: [一, 二]\n\n"
                                                "  - name: greet\n")
    intents.write_text(text, "utf-8")
    bad_line = text.splitlines().index("    exampels: [一, 二]") + 1
    report = validate_domain(domain, BROKEN_KB, similarity_check=False)
    schema = [f for f in report.findings if f.check == "schema" and f.file == "intents.yml"]
    assert schema and schema[0].line == bad_line and "exampels" in schema[0].message
    assert run_cli(str(tmp_path / "nowhere")).returncode == 2


def test_without_a_kb_references_are_reported_unchecked():
    report = validate_domain(BROKEN, None, ValidateConfig(), similarity_check=False)
    assert not [f for f in report.findings if f.check == "missing_article"]
    assert [f for f in report.findings if f.check == "articles_unchecked"]


@pytest.mark.parametrize("b, a, expected", [
    (None, None, True),
    ({"channels": ["app"]}, None, True),
    (None, {"channels": ["app"]}, False),
    ({"channels": ["app"]}, {"channels": ["app", "web"]}, True),
    ({"channels": ["app", "web"]}, {"channels": ["app"]}, False),
    ({"visitor_tags_all": ["vip", "new"]}, {"visitor_tags_any": ["vip"]}, True),
    ({"visitor_tags_any": ["vip"]}, {"visitor_tags_all": ["vip"]}, False),
])
def test_rule_condition_implication(b, a, expected):
    import msgspec

    from lingxi.datasets.domain import RuleConditions

    def conv(c: dict | None) -> RuleConditions | None:
        return None if c is None else msgspec.convert(c, RuleConditions)

    assert conditions_imply(conv(b), conv(a)) is expected
