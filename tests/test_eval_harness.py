"""The eval harness end to end: run folders, sweeps, holdout discipline, reports (in a real browser),
comparison, MLflow logging, and the conversations / latency / retrieval suites."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lingxi.evals.compare import compare_runs
from lingxi.evals.intent import run_intent_eval
from lingxi.evals.runs import RunError, read_jsonl, write_jsonl, write_results
from lingxi.nlu.decision import Thresholds, decide

CHROMIUM = Path("/usr/bin/chromium")
ROWS = {  # Chinese labels on purpose: figures must render them
    "问候": ["你好", "您好", "在吗", "hello", "嗨", "哈喽", "早上好", "hi there", "有人吗", "晚上好"],
    "退款": ["我要退款", "怎么退钱", "申请退款", "退款流程", "能退款吗", "refund please", "钱退给我", "退款怎么弄",
           "退款多久到账", "不想要了要退款"],
    "物流": ["快递到哪了", "物流查询", "包裹在哪", "查快递", "where is my parcel", "物流信息", "快递几天到", "发货了吗",
           "我的快递怎么还没到", "查一下物流"],
}
OOS_ROWS = [("今天股票怎么样", "val"), ("明天天气如何", "val"), ("帮我写首诗", "test"), ("讲个笑话", "test"),
            ("推荐一部电影", "test")]


def _write_set(path: Path, rows: dict[str, list[str]] = ROWS) -> Path:
    lines = []
    for intent, texts in rows.items():
        for i, text in enumerate(texts):
            split = "test" if i >= 7 else ("val" if i == 6 else "train")
            lines.append({"text": text, "intent": intent, "split": split})
    lines += [{"text": t, "intent": "oos", "split": s} for t, s in OOS_ROWS]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in lines) + "\n", "utf-8")
    return path


@pytest.fixture(scope="module")
def intent_run(tmp_path_factory, demo_encoder):
    """One real intent run (with a learning curve) shared by the report, sweep and compare tests."""
    base = tmp_path_factory.mktemp("intent-run")
    data = _write_set(base / "mini.jsonl")
    out = base / "run"
    results = run_intent_eval(str(data), out, encoder=demo_encoder, percentages=[50, 100])
    return data, out, results


# --------------------------------------------------------------------------- threshold sweeps


def test_vectorised_decisions_match_the_served_decision():
    from lingxi.evals.sweep import decisions, score

    rng = np.random.default_rng(3)
    classes = ["a", "b", "c", "oos", "clarify:x"]
    probs = rng.dirichlet(np.ones(len(classes)) * 0.6, size=400)
    similarity = rng.uniform(0.6, 1.0, size=400)
    scored = score(probs, classes, ["a"] * 400, similarity)
    for t in (Thresholds(0.2, 0.5, 0.1), Thresholds(0.0, 0.0, 0.0), Thresholds(0.45, 0.7, 0.3), Thresholds(0.9, 0.95, 0),
              Thresholds(0.3, 0.6, 0.1, similarity_weight=5.0)):
        kinds = decisions(scored, t)
        assert list(kinds) == [decide(row, classes, t, float(sim)).kind for row, sim in zip(probs, similarity, strict=True)]
    with_discount = decisions(scored, Thresholds(0.3, 0.6, 0.1, similarity_weight=5.0))
    plain = decisions(scored, Thresholds(0.3, 0.6, 0.1))
    assert (with_discount == "out_of_scope").sum() > (plain == "out_of_scope").sum()


def test_results_record_provenance_and_every_prediction(intent_run):
    data, out, results = intent_run
    saved = json.loads((out / "results.json").read_text("utf-8"))
    for key in ("schema_version", "suite", "dataset", "dataset_fingerprint", "split", "seed", "created_at",
                "git_commit", "command"):
        assert key in saved, key
    assert saved["suite"] == "intent" and saved["seed"] == 0 and "fitted on val" in saved["split"]
    assert saved["model"]["version"].startswith("eval-")
    predictions = read_jsonl(out / "predictions.jsonl")
    n_test = sum(1 for line in data.read_text("utf-8").splitlines() if '"test"' in line)
    assert len(predictions) == n_test == saved["n_test"]
    assert {p["id"] for p in predictions} == set(range(n_test))
    errors = read_jsonl(out / "errors.jsonl")
    assert len(errors) == sum(p["predicted"] != p["gold"] for p in predictions)
    assert saved["accuracy"] == pytest.approx(1 - len(errors) / n_test)


def test_sweep_marks_the_fitted_point_and_agrees_with_the_headline(intent_run):
    _, _, results = intent_run
    sweep = results["threshold_sweep"]
    assert sweep["fitted_on"] == "val" and set(sweep["splits"]) == {"val", "test"}
    assert sweep["chosen"] == {k: v for k, v in results["thresholds"].items() if k in sweep["chosen"]}
    for split in sweep["splits"].values():
        for param, rows in split.items():
            chosen = [r for r in rows if r["chosen"]]
            assert len(chosen) == 1 and chosen[0][param] == pytest.approx(sweep["chosen"][param], abs=1e-4)
    at_point = next(r for r in sweep["splits"]["test"]["reject"] if r["chosen"])
    for key in ("in_scope_accuracy", "oos_recall", "oos_precision", "clarify_rate"):
        assert at_point[key] == pytest.approx(results[key], abs=1e-4), key
    curve = results["learning_curve"]
    assert [p["percent"] for p in curve] == [50, 100] and curve[0]["n_train"] < curve[1]["n_train"]
    assert curve[1]["accuracy"] == results["accuracy"]


def test_kfold_pools_every_row_once(tmp_path, demo_encoder):
    data = _write_set(tmp_path / "k.jsonl")
    results = run_intent_eval(str(data), tmp_path / "run", encoder=demo_encoder, folds=3, percentages=[50, 100],
                              report=False)
    predictions = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    n_rows = len(data.read_text("utf-8").splitlines())
    assert sorted(p["id"] for p in predictions) == list(range(n_rows)) and {p["fold"] for p in predictions} == {0, 1, 2}
    assert len(results["folds"]) == 3 and results["split"].startswith("3-fold")
    assert results["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in results["folds"]]))
    assert [p["percent"] for p in results["learning_curve"]] == [50, 100]
    assert sum(r["support"] for r in results["per_intent"].values()) == n_rows


def test_nothing_is_fitted_on_the_test_split(tmp_path, demo_encoder):
    """Scrambling the test labels must not move temperature or thresholds (they come from val)."""
    data = _write_set(tmp_path / "a.jsonl")
    rows = [json.loads(line) for line in data.read_text("utf-8").splitlines()]
    labels = [r["intent"] for r in rows if r["split"] == "test"]
    shuffled = labels[3:] + labels[:3]
    assert shuffled != labels
    it = iter(shuffled)
    scrambled = [{**r, "intent": next(it)} if r["split"] == "test" else r for r in rows]
    other = tmp_path / "b.jsonl"
    other.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in scrambled) + "\n", "utf-8")
    a = run_intent_eval(str(data), tmp_path / "ra", encoder=demo_encoder, report=False)
    b = run_intent_eval(str(other), tmp_path / "rb", encoder=demo_encoder, report=False)
    assert a["thresholds"] == b["thresholds"] and a["temperature"] == b["temperature"]
    assert a["dataset_fingerprint"] != b["dataset_fingerprint"] and a["accuracy"] != b["accuracy"]


# --------------------------------------------------------------------------- report


def test_report_is_self_contained(intent_run):
    _, out, results = intent_run
    page = (out / "report.html").read_text("utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(results["files"]["figures"]) >= 5
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page
    assert "退款" in page and results["dataset_fingerprint"] in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed: cannot render the report headless")
def test_report_renders_in_headless_chromium(intent_run, tmp_path):
    _, out, results = intent_run
    probe = ('<script>window.addEventListener("load",function(){var r=[].map.call(document.images,function(i){'
             'return [i.complete,i.naturalWidth,i.naturalHeight]});var p=document.createElement("pre");'
             'p.id="probe";p.textContent=JSON.stringify(r);document.body.appendChild(p);});</script>')
    page = tmp_path / "probe.html"
    page.write_text((out / "report.html").read_text("utf-8").replace("</body>", probe + "</body>"), "utf-8")
    proc = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">([^<]*)</pre>', proc.stdout)
    assert found, proc.stderr[-2000:]
    images = json.loads(found.group(1))
    assert len(images) == len(results["files"]["figures"])
    assert all(done and width > 100 and height > 100 for done, width, height in images), images


def test_chinese_labels_render_with_a_cjk_font_or_warn_without_one(tmp_path):
    script = (
        "import warnings, sys\n"
        "warnings.simplefilter('always')\n"
        "import lingxi.evals.fonts as fonts\n"
        "if sys.argv[1] == 'none':\n"
        "    fonts.find_cjk_font = lambda: None\n"
        "from lingxi.evals import plots\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    png = plots.confusion_png(['退款', '物流', '退款'], ['退款', '退款', '物流'])\n"
        "print(len(png), fonts.setup_matplotlib())\n"
        "print('\\n'.join(str(w.message) for w in caught))\n"
    )
    from lingxi.evals.fonts import NO_FONT_WARNING, find_cjk_font

    none = subprocess.run([sys.executable, "-c", script, "none"], capture_output=True, text=True, timeout=120)
    assert none.returncode == 0, none.stderr
    size, family = none.stdout.splitlines()[0].split()
    assert int(size) > 1000 and family == "None"
    assert NO_FONT_WARNING in none.stdout + none.stderr and "missing from font" not in none.stdout
    if find_cjk_font() is None:
        pytest.skip("no CJK font on this machine (install fonts-noto-cjk); the fallback path was checked")
    found = subprocess.run([sys.executable, "-c", script, "system"], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[0].split()[1] != "None"
    assert "missing from font" not in found.stdout and NO_FONT_WARNING not in found.stdout


# --------------------------------------------------------------------------- compare


def _synthetic_run(folder: Path, gold: list[str], predicted: list[str], fingerprint: str = "f1") -> Path:
    write_results(folder, {"suite": "intent", "dataset": "synthetic", "dataset_fingerprint": fingerprint,
                           "split": "test", "seed": 0, "model": {"version": folder.name}})
    write_jsonl(folder / "predictions.jsonl",
                [{"id": i, "text": f"text {i}", "gold": g, "predicted": p, "top": p if p != "oos" else "a",
                  "confidence": 0.9, "decision": "answer"} for i, (g, p) in enumerate(zip(gold, predicted, strict=True))])
    return folder


def test_compare_finds_a_real_regression_and_lists_flips(tmp_path):
    rng = np.random.default_rng(0)
    gold = list(rng.choice(["a", "b", "c", "oos"], size=300))
    base = [g if rng.random() < 0.9 else "b" for g in gold]
    worse = list(base)
    broken = [i for i, (g, p) in enumerate(zip(gold, base, strict=True)) if g == p and g == "a"][:25]
    for i in broken:
        worse[i] = "c"
    run_a = _synthetic_run(tmp_path / "A", gold, base)
    run_b = _synthetic_run(tmp_path / "B", gold, worse)
    c = compare_runs(run_a, run_b, tmp_path / "cmp")
    acc = next(d for d in c["deltas"] if d["metric"] == "accuracy")
    assert acc["delta"] == pytest.approx(-len(broken) / len(gold)) and acc["ci_high"] < 0 and acc["significant"]
    assert c["mcnemar"]["only_a"] == len(broken) and c["mcnemar"]["only_b"] == 0 and c["mcnemar"]["p_value"] < 0.001
    assert sorted(f["id"] for f in c["flipped"]) == broken and {f["change"] for f in c["flipped"]} == {"broken"}
    by_intent = {r["intent"]: r for r in c["per_intent"]}
    assert by_intent["a"]["broken"] == len(broken) and by_intent["a"]["delta_f1"] < 0 and c["losses"] >= 1
    assert not next(g for g in c["gate"] if g["name"] == "accuracy")["passed"]
    assert (tmp_path / "cmp" / "compare.html").read_text("utf-8").count("data:image/png;base64,") == 2
    same = compare_runs(run_a, run_a)
    assert all(d["delta"] == 0 for d in same["deltas"]) and not same["flipped"] and all(g["passed"] for g in same["gate"])
    cli = subprocess.run([sys.executable, "-m", "lingxi.serving.cli", "eval", "compare", str(run_a), str(run_b),
                          "--fail-on-regression", "--rounds", "200"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "McNemar" in cli.stdout and "gate [FAIL] accuracy" in cli.stdout


def test_compare_refuses_runs_over_different_data(tmp_path):
    run_a = _synthetic_run(tmp_path / "A", ["a", "b"], ["a", "b"], fingerprint="one")
    run_b = _synthetic_run(tmp_path / "B", ["a", "b"], ["a", "a"], fingerprint="two")
    with pytest.raises(RunError, match="different data"):
        compare_runs(run_a, run_b)
    cli = subprocess.run([sys.executable, "-m", "lingxi.serving.cli", "eval", "compare", str(run_a),
                          str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and "missing/results.json: no results.json" in cli.stderr and "Traceback" not in cli.stderr


def test_compare_two_real_runs(intent_run, tmp_path, demo_encoder):
    from lingxi.nlu.intent import HeadConfig
    from lingxi.training.train import TrainConfig

    data, out, results = intent_run
    weaker = run_intent_eval(str(data), tmp_path / "centroid", encoder=demo_encoder, report=False,
                             config=TrainConfig(head=HeadConfig(name="centroid", params={}, ngrams=False)))
    c = compare_runs(out, tmp_path / "centroid")
    acc = next(d for d in c["deltas"] if d["metric"] == "accuracy")
    assert acc["a"] == pytest.approx(results["accuracy"]) and acc["b"] == pytest.approx(weaker["accuracy"])
    fixed = sum(f["change"] == "fixed" for f in c["flipped"])
    assert (c["mcnemar"]["only_b"], c["mcnemar"]["only_a"]) == (fixed, len(c["flipped"]) - fixed)


# --------------------------------------------------------------------------- MLflow, CLI input errors


def test_runs_are_logged_to_mlflow(intent_run, tmp_path, lingxi_home):
    import mlflow

    from lingxi.evals.tracking import log_eval_run

    _, out, results = intent_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_eval_run(copy, dict(results), uri)
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.metrics["accuracy"] == pytest.approx(results["accuracy"])
    assert run.data.params["dataset_fingerprint"] == results["dataset_fingerprint"]
    assert run.data.tags["lingxi.model_version"] == results["model"]["version"]
    names = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/results.json", "eval/report.html", "eval/predictions.jsonl"} <= names
    curve = client.get_metric_history(run_id, "learning_curve.accuracy")
    assert sorted(m.step for m in curve) == [50, 100]
    assert json.loads((copy / "results.json").read_text("utf-8"))["mlflow_run_id"] == run_id


@pytest.mark.parametrize("argv, message", [
    (["--percentages", "0"], "--percentages must be in (0, 100]"),
    (["--shots", "5", "--percentages", "50"], "either --shots or --percentages"),
    (["--folds", "1"], "--folds must be at least 2"),
])
def test_bad_eval_options_fail_cleanly(tmp_path, argv, message):
    data = _write_set(tmp_path / "d.jsonl")
    proc = subprocess.run([sys.executable, "-m", "lingxi.serving.cli", "eval", "intent", "--dataset", str(data),
                           "--out", str(tmp_path / "o"), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- other suites


def test_retrieval_run_has_recall_curve_misses_and_report(tmp_path, demo_encoder):
    from lingxi.evals.retrieval import run_retrieval_eval

    folder = tmp_path / "kb"
    folder.mkdir()
    docs = {"kb-refund": "退款多久到账 银行卡1-7个工作日", "kb-invoice": "电子发票怎么开 在订单详情申请开票",
            "kb-password": "忘记密码 在登录页点忘记密码重置", "kb-shipping": "运费多少 满99包邮",
            "kb-vip": "会员权益 专属客服 积分翻倍"}
    queries = [("退款几天能到", ["kb-refund"]), ("怎么开发票", ["kb-invoice"]), ("密码想不起来了", ["kb-password"]),
               ("包邮吗", ["kb-shipping"]), ("火星移民签证", ["kb-vip"]), ("银行卡退款", ["kb-refund", "kb-vip"])]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps({"doc_id": k, "text": v}, ensure_ascii=False)
                                                   for k, v in docs.items()), "utf-8")
    (folder / "queries.jsonl").write_text("\n".join(
        json.dumps({"query_id": f"q{i}", "text": t, "relevant_doc_ids": rel, "fold": i % 2}, ensure_ascii=False)
        for i, (t, rel) in enumerate(queries)), "utf-8")
    results = run_retrieval_eval(str(folder), tmp_path / "out", encoder=demo_encoder, cache_dir=tmp_path / "cache")
    for mode, curve in results["recall_curve"].items():
        assert len(curve) == 10 and curve == sorted(curve)
        for k in (1, 5, 10):
            assert curve[k - 1] == pytest.approx(results["modes"][mode][f"recall@{k}"], abs=1e-4)
    per_query = read_jsonl(tmp_path / "out" / "per_query.jsonl")
    misses = read_jsonl(tmp_path / "out" / "errors.jsonl")
    assert {m["query_id"] for m in misses} == {q["id"] for q in per_query if not q["hybrid_relevant_ranks"]}
    assert results["suite"] == "retrieval" and results["dataset_fingerprint"] and results["model"]["version"]
    assert "data:image/png;base64," in (tmp_path / "out" / "report.html").read_text("utf-8")
    assert compare_runs(tmp_path / "out", tmp_path / "out")["mcnemar"]["p_value"] == 1.0


def test_conversations_suite_reports_failed_turns_with_lines(trained_demo, lingxi_home, tmp_path):
    from lingxi.datasets.domain import demo_domain_path
    from lingxi.evals.conversations import run_conversations_eval

    tests = tmp_path / "convs.yml"
    tests.write_text(
        "conversations:\n"
        "  - name: 打招呼\n"
        "    turns:\n"
        "      - user: 你好\n"
        "        expect: {intent: greet}\n"
        "  - name: 故意失败\n"
        "    turns:\n"
        "      - user: 你好\n"
        "        expect: {intent: refund_apply}\n", "utf-8")
    results = run_conversations_eval(tmp_path / "out", str(tests), str(demo_domain_path()),
                                     str(lingxi_home / "models"))
    assert (results["passed"], results["failed"], results["n_turns"]) == (1, 1, 2)
    assert results["model"]["version"] == trained_demo.bundle.version
    failures = read_jsonl(tmp_path / "out" / "errors.jsonl")
    assert len(failures) == 1 and failures[0]["line"] == 8 and "refund_apply" in failures[0]["problems"][0]
    assert "data:image/png;base64," in (tmp_path / "out" / "report.html").read_text("utf-8")


def test_latency_suite(trained_demo, lingxi_home, tmp_path):
    from lingxi.evals.latency import run_latency_eval

    r = run_latency_eval(tmp_path / "out", models_dir=str(lingxi_home / "models"), requests=30, warmup=3)
    assert r["n"] == 30 and 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
    assert set(r["stages"]) == {"rules", "encode", "classify", "entities"} and r["throughput_per_s"] > 0
    assert len(read_jsonl(tmp_path / "out" / "predictions.jsonl")) == 30
    assert r["model"]["version"] == trained_demo.bundle.version and r["cpu_count"]
