"""The demo's YAML conversation tests through the real NLU pipeline, via the runner and the CLI."""

from __future__ import annotations

import textwrap

from lingxi.datasets.dialogue_files import load_conversation_tests
from lingxi.datasets.domain import demo_domain_path
from lingxi.dialogue.tenancy import tenant_scope
from lingxi.dialogue.testing import format_report, run_tests


def test_every_demo_conversation_test_passes(demo_pipeline, demo_spec, demo_knowledge, demo_arbitration):
    """As served: the demo knowledge base in every turn and the fitted answer arbitration."""
    tests = load_conversation_tests(demo_domain_path() / "tests")
    with tenant_scope("default"):
        reports = run_tests(tests, demo_pipeline, demo_spec, demo_knowledge, demo_arbitration)
    failed = [r for r in reports if not r.passed]
    assert not failed, format_report(failed)
    assert len(reports) >= 25
    names = " ".join(r.name for r in reports)
    for topic in ("找回密码", "查询物流", "申请退款", "插问", "澄清", "VIP", "非工作时间", "节假日", "行为触发",
                  "跨渠道", "情绪", "连续两次", "释放"):
        assert topic in names, topic


def test_a_wrong_expectation_fails_with_a_readable_diff(demo_pipeline, demo_spec, tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text(textwrap.dedent("""
        conversations:
          - name: 退款被当成问答
            turns:
              - user: 我要退款
                expect: {decision: answer, bot: 退款会原路退回, slots: {order_id: DD1}}
    """), "utf-8")
    reports = run_tests(load_conversation_tests(path), demo_pipeline, demo_spec)
    assert not reports[0].passed
    text = format_report(reports)
    assert f"FAIL  退款被当成问答  ({path}:3)" in text
    assert "turn 1 (line 5) user: 我要退款" in text
    assert "decision: expected 'answer', got 'flow'" in text
    assert "bot: /退款会原路退回/ not found in:" in text and "| 好的，我来帮您申请退款" in text
    assert "slots.order_id: expected 'DD1', got None" in text
    assert "trace: " in text and "0 passed, 1 failed" in text


def test_cli_runs_the_builtin_demo_tests(trained_demo, lingxi_home, capsys, tmp_path):
    from lingxi.serving.dialogue_cli import main

    assert main(["conversations"]) == 0
    out = capsys.readouterr().out
    assert " 0 failed" in out and "PASS  申请退款-完整流程" in out
    broken = tmp_path / "t.yml"
    broken.write_text("conversations:\n  - name: x\n    turns:\n      - user: 你好\n"
                      "        expect: {decision: fallback}\n", "utf-8")
    assert main(["conversations", str(broken)]) == 1
    assert "decision: expected 'fallback', got 'welcome'" in capsys.readouterr().out
    bad = tmp_path / "bad.yml"
    bad.write_text("conversations:\n  - name: x\n    turns:\n      - said: 你好\n", "utf-8")
    assert main(["conversations", str(bad)]) == 2
    assert f"{bad}:4: conversations[0].turns[0]: Object contains unknown field `said`" in capsys.readouterr().err
