"""`lingxi eval intent` on a labelled JSONL file and on a public set, through the real harness."""

import json
import subprocess
import sys

import pytest

from lingxi.datasets.public import DatasetError, datasets_root, load_intent_dataset
from lingxi.evals.intent import run_intent_eval

ROWS = {
    "greet": ["你好", "您好", "在吗", "hello", "嗨", "哈喽", "早上好", "hi there"],
    "refund": ["我要退款", "怎么退钱", "申请退款", "退款流程", "能退款吗", "refund please", "钱退给我", "退款怎么弄"],
    "track": ["快递到哪了", "物流查询", "包裹在哪", "查快递", "where is my parcel", "物流信息", "快递几天到", "发货了吗"],
}


@pytest.fixture()
def jsonl(tmp_path):
    path = tmp_path / "mini.jsonl"
    lines = []
    for intent, texts in ROWS.items():
        for i, text in enumerate(texts):
            split = "test" if i >= 6 else ("val" if i == 5 else "train")
            lines.append({"text": text, "intent": intent, "split": split})
    lines += [{"text": t, "intent": "oos", "split": s} for t, s in
              [("今天股票怎么样", "val"), ("帮我写首诗", "test"), ("讲个笑话", "test")]]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in lines) + "\n", "utf-8")
    return path


def test_results_json_has_the_stable_keys(jsonl, tmp_path, demo_encoder):
    out = tmp_path / "out"
    results = run_intent_eval(str(jsonl), out, encoder=demo_encoder)
    saved = json.loads((out / "results.json").read_text("utf-8"))
    for key in ("accuracy", "macro_f1", "in_scope_accuracy", "oos_precision", "oos_recall", "oos_f1"):
        assert key in saved
        assert saved[key] is None or 0.0 <= saved[key] <= 1.0
    assert saved["dataset"] == "mini" and saved["seed"] == 0 and "model" in saved and "split" in saved
    assert saved["accuracy"] == results["accuracy"]
    assert saved["in_scope_accuracy"] >= 0.5  # 3 easy intents: a broken pipeline would be near 1/3
    errors = (out / "errors.jsonl").read_text("utf-8").splitlines()
    n_test = sum(1 for line in jsonl.read_text("utf-8").splitlines() if '"test"' in line)
    assert len(errors) == round((1 - saved["accuracy"]) * n_test)


def test_malformed_line_is_reported_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "intent": "x", "split": "train"}\n{"text": "b", "intent": \n', "utf-8")
    with pytest.raises(DatasetError, match=r"bad.jsonl:2:"):
        load_intent_dataset(str(bad))
    missing = subprocess.run([sys.executable, "-m", "lingxi.serving.cli", "eval", "intent", "--dataset",
                              str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "nope.jsonl: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.skipif(not (datasets_root() / "xsid-zh").is_dir(), reason="shared datasets not found (../shared/datasets)")
def test_public_chinese_set_xsid(tmp_path, demo_encoder):
    results = run_intent_eval("xsid-zh", tmp_path, encoder=demo_encoder)
    assert results["dataset"] == "xsid-zh" and results["oos_recall"] is None
    assert results["accuracy"] > 0.8  # 16 intents; measured 0.924 with the default model


def test_every_cli_verb_has_help():
    for verb in (["--help"], ["train", "--help"], ["serve", "--help"], ["parse", "--help"],
                 ["eval", "--help"], ["eval", "intent", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "lingxi.serving.cli", *verb], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and "usage: lingxi" in proc.stdout, verb


def test_skip_bad_lines_counts_instead_of_failing(tmp_path):
    path = tmp_path / "some_bad.jsonl"
    good = [{"text": f"t{i}", "intent": "a" if i % 2 else "b", "split": "test" if i > 7 else "train"} for i in range(10)]
    lines = [json.dumps(r) for r in good] + ['{"text": "", "intent": "a", "split": "train"}', "{broken"]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    with pytest.raises(DatasetError, match=r"some_bad.jsonl:1[12]:"):
        load_intent_dataset(str(path))
    data = load_intent_dataset(str(path), skip_bad_lines=True)
    assert len(data.rows) == 10
    assert sorted(s.split(": ")[0].rsplit(":", 1)[1] for s in data.skipped) == ["11", "12"]
