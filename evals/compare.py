"""``lingxi eval compare RUN_A RUN_B``: is B really better than A on the same examples?

Both runs must be of the same suite over the same examples (equal dataset fingerprints and
prediction ids). The comparison is paired, example by example, with the engine of the promotion
gate (:mod:`lingxi.evals.stats`, :func:`lingxi.training.gate.regression_checks`):

* per metric: A, B, B − A and a 95% paired-bootstrap interval; McNemar's exact test for accuracy
  (intent), top-10 hits (retrieval) or turns passed (conversations);
* intent: per-intent F1 wins and losses, and every example that flipped (right in one run, wrong
  in the other); retrieval: queries whose first relevant rank moved;
* what the gate would say about B as a challenger to A.

Writes ``compare.json`` and ``compare.html`` into ``--out`` when given. Exit status 0, or 1 with
``--fail-on-regression`` when the gate's checks fail; 2 when the runs cannot be compared.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lingxi.datasets.public import OOS

from . import plots
from .ir_metrics import metrics_from_ranks
from .metrics import per_intent_report
from .report import Page, num, pct, provenance_table
from .runs import PREDICTIONS, RunError, read_jsonl, read_results
from .stats import mcnemar, paired_bootstrap

COMPARE_JSON = "compare.json"
COMPARE_HTML = "compare.html"


def _load(run: str | Path) -> tuple[dict, list[dict]]:
    results = read_results(run)
    folder = Path(run).parent if Path(run).suffix == ".json" else Path(run)
    name = (results.get("files") or {}).get("predictions") or PREDICTIONS
    return results, read_jsonl(folder / name)


def _align(a: list[dict], b: list[dict], label_a: str, label_b: str) -> tuple[list[dict], list[dict]]:
    ids_a = [str(r.get("id")) for r in a]
    index_b = {str(r.get("id")): r for r in b}
    if len(index_b) != len(b) or len(set(ids_a)) != len(a):
        raise RunError("predictions have duplicate ids; cannot pair examples")
    missing = [i for i in ids_a if i not in index_b]
    if missing or len(a) != len(b):
        raise RunError(f"{label_a} and {label_b} scored different examples ({len(a)} vs {len(b)} rows, "
                       f"{len(missing)} ids of A not in B): compare runs over the same data")
    pairs_b = [index_b[i] for i in ids_a]
    for ra, rb in zip(a, pairs_b, strict=True):
        if ra.get("text", ra.get("said")) != rb.get("text", rb.get("said")):
            raise RunError(f"example {ra.get('id')!r} has different texts in the two runs")
    return a, pairs_b


def _macro_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> Callable[[np.ndarray], float]:
    """Macro-F1 over the labels present in a resample (integer-coded labels, bincount: fast enough for
    a thousand bootstrap rounds)."""
    def f(idx: np.ndarray) -> float:
        g, p = gold[idx], pred[idx]
        tp = np.bincount(g[g == p], minlength=n_labels)
        support = np.bincount(g, minlength=n_labels) + np.bincount(p, minlength=n_labels)
        present = support > 0
        return float((2 * tp[present] / support[present]).mean()) if present.any() else 0.0
    return f


def _rate(values: np.ndarray, mask: np.ndarray | None = None) -> Callable[[np.ndarray], float]:
    def f(idx: np.ndarray) -> float:
        v = values[idx] if mask is None else values[idx][mask[idx]]
        return float(v.mean()) if len(v) else float("nan")
    return f


def _deltas(metrics: dict[str, tuple[Callable, Callable]], n: int, rounds: int, seed: int) -> list[dict]:
    out = []
    for name, (fa, fb) in metrics.items():
        d = paired_bootstrap(name, lambda i, fa=fa, fb=fb: (fa(i), fb(i)), n, rounds, seed).to_dict()
        d["significant"] = bool(d["ci_low"] > 0 or d["ci_high"] < 0)
        out.append(d)
    return out


def _compare_intent(a: list[dict], b: list[dict], rounds: int, seed: int) -> dict:
    from lingxi.training.gate import GateConfig, regression_checks

    gold = np.array([r["gold"] for r in a], dtype=object)
    if any(r["gold"] != g for r, g in zip(b, gold, strict=True)):
        raise RunError("the two runs disagree on gold labels: not the same examples")
    pa = np.array([r["predicted"] for r in a], dtype=object)
    pb = np.array([r["predicted"] for r in b], dtype=object)
    ok_a, ok_b = pa == gold, pb == gold
    is_oos = gold == OOS
    in_scope = ~is_oos
    codes = {label: i for i, label in enumerate(sorted(set(gold) | set(pa) | set(pb)))}
    g_i, a_i, b_i = (np.array([codes[x] for x in arr]) for arr in (gold, pa, pb))
    clar_a = np.array([r.get("decision") == "clarify" for r in a])
    clar_b = np.array([r.get("decision") == "clarify" for r in b])
    metrics: dict[str, tuple[Callable, Callable]] = {
        "accuracy": (_rate(ok_a), _rate(ok_b)),
        "macro_f1": (_macro_f1(g_i, a_i, len(codes)), _macro_f1(g_i, b_i, len(codes))),
    }
    if in_scope.any():
        metrics["in_scope_accuracy"] = (_rate(ok_a, in_scope), _rate(ok_b, in_scope))
    if is_oos.any():
        metrics["oos_recall"] = (_rate(ok_a, is_oos), _rate(ok_b, is_oos))
        said_oos_a, said_oos_b = pa == OOS, pb == OOS
        metrics["oos_precision"] = (_rate(is_oos, said_oos_a), _rate(is_oos, said_oos_b))
    metrics["clarify_rate"] = (_rate(clar_a), _rate(clar_b))
    deltas = _deltas(metrics, len(gold), rounds, seed)
    test = mcnemar(ok_a, ok_b)
    rep_a = per_intent_report(list(gold), list(pa))
    rep_b = per_intent_report(list(gold), list(pb))
    per_intent = []
    for label in sorted(set(rep_a) | set(rep_b)):
        ra, rb = rep_a.get(label), rep_b.get(label)
        rows = gold == label
        per_intent.append({
            "intent": label, "support": int(rows.sum()),
            "f1_a": ra["f1"] if ra else 0.0, "f1_b": rb["f1"] if rb else 0.0,
            "delta_f1": round((rb["f1"] if rb else 0.0) - (ra["f1"] if ra else 0.0), 6),
            "fixed": int((rows & ~ok_a & ok_b).sum()), "broken": int((rows & ok_a & ~ok_b).sum())})
    flipped = [{"id": ra["id"], "text": ra["text"], "gold": ra["gold"], "a_predicted": ra["predicted"],
                "b_predicted": rb["predicted"], "a_confidence": ra.get("confidence"),
                "b_confidence": rb.get("confidence"), "change": "fixed" if okb else "broken"}
               for ra, rb, oka, okb in zip(a, b, ok_a, ok_b, strict=True) if oka != okb]
    gate = regression_checks(ok_a, ok_b, is_oos, GateConfig(bootstrap_rounds=rounds))
    return {"n": len(gold), "deltas": deltas, "mcnemar": {"metric": "accuracy", **test.to_dict()},
            "per_intent": per_intent,
            "wins": sum(1 for r in per_intent if r["delta_f1"] > 0),
            "losses": sum(1 for r in per_intent if r["delta_f1"] < 0),
            "flipped": flipped, "gate": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in gate]}


def _compare_retrieval(a: list[dict], b: list[dict], rounds: int, seed: int) -> dict:
    out_deltas, flipped = [], []
    per_mode = {}
    for mode in ("hybrid", "dense", "bm25"):
        key = f"{mode}_relevant_ranks"
        if key not in a[0] or key not in b[0]:
            continue
        ma = [metrics_from_ranks(r[key], r["n_relevant"]) for r in a]
        mb = [metrics_from_ranks(r[key], r["n_relevant"]) for r in b]
        per_mode[mode] = (ma, mb)
        metrics = {f"{mode} {k}": (_rate(np.array([m[k] for m in ma])), _rate(np.array([m[k] for m in mb])))
                   for k in ("recall@1", "recall@10", "mrr@10", "ndcg@10")}
        out_deltas += _deltas(metrics, len(a), rounds, seed)
    if "hybrid" not in per_mode:
        raise RunError("per_query.jsonl has no relevant ranks (re-run `lingxi eval retrieval` with this version)")
    ma, mb = per_mode["hybrid"]
    hit_a = np.array([m["hit@10"] > 0 for m in ma])
    hit_b = np.array([m["hit@10"] > 0 for m in mb])
    for ra, rb in zip(a, b, strict=True):
        fa, fb = ra.get("hybrid_first_relevant_rank"), rb.get("hybrid_first_relevant_rank")
        if fa != fb:
            better = (fb or 99) < (fa or 99)
            flipped.append({"id": ra["id"], "text": ra["text"], "a_rank": fa, "b_rank": fb,
                            "change": "improved" if better else "worsened"})
    return {"n": len(a), "deltas": out_deltas, "mcnemar": {"metric": "hybrid hit@10", **mcnemar(hit_a, hit_b).to_dict()},
            "flipped": flipped, "per_intent": [], "gate": []}


def _compare_conversations(a: list[dict], b: list[dict], rounds: int, seed: int) -> dict:
    ok_a = np.array([bool(r["passed"]) for r in a])
    ok_b = np.array([bool(r["passed"]) for r in b])
    flipped = [{"id": ra["id"], "text": ra["said"], "a_passed": ra["passed"], "b_passed": rb["passed"],
                "b_problems": rb.get("problems"), "change": "fixed" if rb["passed"] else "broken"}
               for ra, rb in zip(a, b, strict=True) if ra["passed"] != rb["passed"]]
    return {"n": len(a), "deltas": _deltas({"turn_pass_rate": (_rate(ok_a), _rate(ok_b))}, len(a), rounds, seed),
            "mcnemar": {"metric": "turns passed", **mcnemar(ok_a, ok_b).to_dict()}, "flipped": flipped,
            "per_intent": [], "gate": []}


def _compare_latency(a: list[dict], b: list[dict], rounds: int, seed: int) -> dict:
    ms_a = np.array([float(r["ms"]) for r in a])
    ms_b = np.array([float(r["ms"]) for r in b])

    def p(q: float, arr: np.ndarray) -> Callable[[np.ndarray], float]:
        return lambda idx: float(np.percentile(arr[idx], q))

    deltas = _deltas({"p50_ms": (p(50, ms_a), p(50, ms_b)), "p95_ms": (p(95, ms_a), p(95, ms_b))}, len(a), rounds, seed)
    return {"n": len(a), "deltas": deltas, "mcnemar": None, "flipped": [], "per_intent": [], "gate": []}


COMPARERS = {"intent": _compare_intent, "retrieval": _compare_retrieval, "conversations": _compare_conversations,
             "latency": _compare_latency}


def compare_runs(run_a: str | Path, run_b: str | Path, out_dir: str | Path | None = None, rounds: int = 1000,
                 seed: int = 0, allow_different_data: bool = False) -> dict:
    """Compare two run folders; returns the comparison (also written to ``out_dir`` when given)."""
    res_a, pred_a = _load(run_a)
    res_b, pred_b = _load(run_b)
    suite = res_a.get("suite")
    if suite != res_b.get("suite"):
        raise RunError(f"cannot compare a {suite!r} run with a {res_b.get('suite')!r} run")
    if suite not in COMPARERS:
        raise RunError(f"{run_a}: results.json has no known `suite` (re-run it with this version of lingxi eval)")
    fa, fb = res_a.get("dataset_fingerprint"), res_b.get("dataset_fingerprint")
    if fa != fb and not allow_different_data:
        raise RunError(f"different data: dataset fingerprint {fa} ({res_a.get('dataset')}) vs {fb} "
                       f"({res_b.get('dataset')}); a paired comparison needs the same examples")
    if not pred_a:
        raise RunError(f"{run_a}: no predictions to compare")
    a, b = _align(pred_a, pred_b, str(run_a), str(run_b))
    body = COMPARERS[suite](a, b, rounds, seed)
    comparison = {"suite": suite, "a": _describe(run_a, res_a), "b": _describe(run_b, res_b),
                  "same_data": fa == fb, "bootstrap_rounds": rounds, "seed": seed, **body}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / COMPARE_JSON).write_text(json.dumps(comparison, ensure_ascii=False, indent=2), "utf-8")
        (out / COMPARE_HTML).write_text(compare_page(comparison, res_a, res_b).html(), "utf-8")
    return comparison


def _describe(run: str | Path, results: dict) -> dict:
    model = results.get("model") or {}
    return {"run": str(run), "dataset": results.get("dataset"), "fingerprint": results.get("dataset_fingerprint"),
            "model_version": model.get("version") if isinstance(model, dict) else None,
            "created_at": results.get("created_at")}


def compare_page(c: dict, res_a: dict, res_b: dict) -> Page:
    page = Page(f"Lingxi eval compare · {c['suite']} · {c['a']['dataset']}",
                f"A = {c['a']['run']} · B = {c['b']['run']} · {c['n']} paired examples")
    gate = c.get("gate") or []
    if gate:
        page.cards([("promotion gate (B as challenger)", "PASS" if all(g["passed"] for g in gate) else "FAIL",
                     "; ".join(g["detail"] for g in gate))])
    page.heading("Metrics")
    page.table(["metric", "A", "B", "B − A", "95% CI", "significant"],
               [(d["metric"], num(d["a"], 4), num(d["b"], 4), f"{d['delta']:+.4f}",
                 f"{d['ci_low']:+.4f} .. {d['ci_high']:+.4f}", "yes" if d["significant"] else "no")
                for d in c["deltas"]])
    page.figure(plots.deltas_png(c["deltas"], "A", "B") if c["deltas"] else None,
                "Per-metric deltas with paired-bootstrap 95% intervals (green: B better, red: B worse).", "deltas")
    if c.get("mcnemar"):
        m = c["mcnemar"]
        page.note(f"McNemar ({m['metric']}): only A right {m['only_a']}, only B right {m['only_b']}, "
                  f"exact p = {m['p_value']:.4g}")
    if c.get("per_intent"):
        page.heading(f"Per intent: {c['wins']} wins, {c['losses']} losses for B")
        page.figure(plots.wins_losses_png(c["per_intent"]), "Per-intent F1 change (B − A).", "wins and losses")
        moved = sorted((r for r in c["per_intent"] if r["delta_f1"]), key=lambda r: r["delta_f1"])
        page.table(["intent", "support", "F1 A", "F1 B", "Δ F1", "fixed", "broken"],
                   [(r["intent"], r["support"], pct(r["f1_a"]), pct(r["f1_b"]), f"{r['delta_f1']:+.3f}", r["fixed"],
                     r["broken"]) for r in moved], collapsed="intents whose F1 changed")
    flipped = c.get("flipped") or []
    if flipped:
        page.heading(f"Flipped examples ({len(flipped)})")
        keys = [k for k in flipped[0] if k != "id"]
        page.table(keys, [[f.get(k) if not isinstance(f.get(k), list) else "; ".join(map(str, f[k])) for k in keys]
                          for f in flipped[:500]], collapsed="examples right in one run and wrong in the other")
    provenance_table(page, res_a, "Run A")
    provenance_table(page, res_b, "Run B")
    return page


def summary_text(c: dict) -> str:
    lines = [f"compare {c['suite']}: A={c['a']['run']} ({c['a']['model_version']})  "
             f"B={c['b']['run']} ({c['b']['model_version']}), {c['n']} paired examples"]
    for d in c["deltas"]:
        lines.append(f"  {d['metric']:<22} A {d['a']:.4f}  B {d['b']:.4f}  Δ {d['delta']:+.4f}  "
                     f"95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]{'  *' if d['significant'] else ''}")
    if c.get("mcnemar"):
        m = c["mcnemar"]
        lines.append(f"  McNemar ({m['metric']}): only A {m['only_a']}, only B {m['only_b']}, p={m['p_value']:.4g}")
    if c.get("per_intent"):
        lines.append(f"  per intent: {c['wins']} wins, {c['losses']} losses for B")
    lines.append(f"  flipped examples: {len(c.get('flipped') or [])}")
    for g in c.get("gate") or []:
        lines.append(f"  gate [{'ok' if g['passed'] else 'FAIL'}] {g['name']}: {g['detail']}")
    return "\n".join(lines)


def cmd_eval_compare(args) -> int:
    try:
        c = compare_runs(args.run_a, args.run_b, args.out, rounds=args.rounds, seed=args.seed,
                         allow_different_data=args.allow_different_data)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_text(c))
    if args.out:
        print(f"wrote {Path(args.out) / COMPARE_JSON} and {Path(args.out) / COMPARE_HTML}")
    if args.fail_on_regression and not all(g["passed"] for g in c.get("gate") or []):
        return 1
    return 0


def add_compare_parser(subparsers) -> None:
    """Register ``compare`` under ``lingxi eval``."""
    p = subparsers.add_parser("compare", help="paired comparison of two eval runs (deltas with CIs, McNemar, "
                                              "per-intent wins/losses, flipped examples)")
    p.add_argument("run_a", help="baseline run folder (the --out of a `lingxi eval` run)")
    p.add_argument("run_b", help="candidate run folder")
    p.add_argument("--out", help="write compare.json and compare.html here")
    p.add_argument("--rounds", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-different-data", action="store_true",
                   help="compare even when dataset fingerprints differ (ids and texts must still match)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when B fails the promotion gate's regression checks against A")
    p.set_defaults(func=cmd_eval_compare)
