"""The end-to-end bot benchmark: its case format, its judging, and a run through the served engine."""

from __future__ import annotations

import json
import textwrap

import pytest

from lingxi.datasets.bot_cases import Expect, load_cases
from lingxi.datasets.domain import DomainError
from lingxi.evals.bot import check, is_wrong, observe


def result(decision, intent=None, messages=(), **extra):
    return {"decision": decision, "intent": intent, "messages": list(messages), "trace": [], "slots": {}, **extra}


def test_a_turn_result_is_judged_as_a_customer_sees_it():
    card = {"id": "kb-freight-insurance", "title": "运费险是什么？"}
    article = observe(result("knowledge", messages=[{"kind": "article", "text": "运费险…", "article": card}]))
    assert check(Expect(article="kb-freight-insurance"), article) == []
    assert check(Expect(article="kb-refund-rejected"), article) and is_wrong(Expect(article="kb-refund-rejected"),
                                                                             article)
    # an intent answer with its own article's card satisfies an article expectation, and vice versa
    own = {"coupon_use": "kb-coupon-use"}
    answer = observe(result("answer", "coupon_use", [{"kind": "article", "text": "结算时…",
                                                      "article": {"id": "kb-coupon-use"}}]))
    assert check(Expect(article="kb-coupon-use"), answer, own) == []
    only_card = observe(result("knowledge", messages=[{"kind": "article", "article": {"id": "kb-coupon-use"}}]))
    assert check(Expect(intent="coupon_use"), only_card, own) == []
    # a clarification is not a wrong answer, an answer to an out-of-scope request is
    clarify = observe(result("clarify", messages=[{"kind": "clarify", "text": "您是想问以下哪个问题？", "buttons": [
        {"title": "优惠券使用", "payload": "/coupon_use"}, {"title": "运费险", "payload": "/article:kb-freight-insurance"}]}]))
    assert set(clarify.options) == {"coupon_use", "kb-freight-insurance"}
    assert not is_wrong(Expect(intent="vip_points"), clarify)
    assert check(Expect(out_of_scope=True), clarify), "options offered to an out-of-scope request do not pass"
    assert is_wrong(Expect(out_of_scope=True), answer)
    assert check(Expect(out_of_scope=True), observe(result("fallback", messages=[{"kind": "fallback",
                                                                                   "text": "抱歉…"}]))) == []
    english = observe(result("answer", "thanks", [{"kind": "text", "text": "You're welcome!"}]))
    assert check(Expect(language="en"), english) == []
    assert check(Expect(language="en"), answer)


def test_broken_case_files_name_file_and_line(tmp_path):
    (tmp_path / "a.yml").write_text(textwrap.dedent("""\
        cases:
          - {id: one, category: article, say: 你好, expect: {article: kb-x}}
          - {id: one, category: article, say: 再来, expect: {article: kb-x}}
          - {id: two, category: nonsense, say: 嗯, expect: {intent: greet}}
          - {id: three, category: intent, say: 嗯}
        """), "utf-8")
    with pytest.raises(DomainError) as err:
        load_cases(tmp_path)
    text = str(err.value)
    assert "a.yml:3: case id 'one' already used" in text
    assert "a.yml:4: case two: category must be one of" in text
    assert "a.yml:5: case three: no expectation" in text


@pytest.mark.slow
def test_lingxi_eval_bot_runs_cases_through_the_served_engine(trained_demo, demo_arbitration, lingxi_home,
                                                               tmp_path, capsys, monkeypatch):
    from lingxi.serving.cli import main

    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "c.yml").write_text(textwrap.dedent("""\
        defaults: {channel: web, timestamp: "2026-12-08T10:00:00+08:00"}
        cases:
          - {id: notify, category: article, say: 怎么关闭App推送, expect: {article: kb-message-notify}}
          - {id: train, category: out_of_scope, say: 帮我订一张去上海的高铁票, expect: {out_of_scope: true}}
          - id: refund
            category: multi_turn
            turns:
              - {say: 我要退款, expect: {flow: refund}}
              - {say: DD202311240001, expect: {flow: refund, slot: order_id}}
          - id: early-handoff
            category: multi_turn
            turns:
              - {say: 我要投诉你们的快递, expect: {intent: greet}}
              - {say: 如何关闭App推送和短信通知, expect: {article: kb-message-notify}}
        """), "utf-8")
    monkeypatch.setenv("LINGXI_HOME", str(lingxi_home))
    out = tmp_path / "run"
    assert main(["eval", "bot", "--dataset", str(cases), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert results["suite"] == "bot" and results["cases"] == 4
    assert set(results["per_category"]) == {"article", "out_of_scope", "multi_turn"}
    assert results["judged_turns"] == 6 and results["empty_replies"] == 0
    assert (out / "report.html").read_text("utf-8").count("<table") >= 2
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert {p["id"] for p in predictions} == {"notify", "train", "refund", "early-handoff"}
    # a handoff the case did not expect is counted once; the agent hands back and the bot answers on
    early = next(p for p in predictions if p["id"] == "early-handoff")
    assert early["handed_off"] and early["turns"][0]["released"] and not early["turns"][0]["passed"]
    assert early["turns"][1]["passed"], early["turns"][1]
    assert results["routing_turns"] == 0 and results["routing_group_accuracy"] is None
    assert "correct resolution" in capsys.readouterr().out
