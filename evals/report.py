"""Self-contained HTML reports: one file, inline CSS, figures embedded as base64 PNG, no scripts.

A report must open offline, be attachable to an MLflow run or an e-mail, and be readable at a
glance: headline numbers first (with the published reference where there is one), then figures,
then the tables a data scientist digs into. Everything from data (texts, labels) is HTML-escaped.

:class:`Page` holds the building blocks; ``*_page`` functions lay out one suite's results.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .runs import REPORT

CSS = """
body{font-family:-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;
margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.sub{color:#666;margin-top:0}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.card .v{font-size:20px;font-weight:600}.card .l{font-size:12px;color:#555}.card .n{font-size:11px;color:#888}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #e3e3e3;padding:3px 7px;text-align:left}
th{background:#f5f5f5}tr.hl td{background:#fff6d5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;vertical-align:top;margin:10px 14px 10px 0;max-width:100%}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:12px;color:#555}
.sev-ERROR{color:#b00020;font-weight:600}.sev-WARNING{color:#a66300}.sev-INFO{color:#555}
.note{font-size:13px;color:#444;background:#f7f7f7;padding:6px 10px;border-left:3px solid #ccc}
details summary{cursor:pointer;font-size:13px;color:#333}
"""


def pct(value: object, digits: int = 1) -> str:
    return "—" if not isinstance(value, int | float) or isinstance(value, bool) else f"{value:.{digits}%}"


def num(value: object, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


class Page:
    """A report under construction: ``add`` raw blocks or use the helpers, then ``html()``."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.blocks: list[str] = []

    def add(self, block: str) -> Page:
        self.blocks.append(block)
        return self

    def heading(self, text: str) -> Page:
        return self.add(f"<h2>{esc(text)}</h2>")

    def note(self, text: str) -> Page:
        return self.add(f'<p class="note">{esc(text)}</p>')

    def cards(self, items: Iterable[tuple[str, str, str]]) -> Page:
        """(label, value, small note) cards for headline numbers."""
        cells = "".join(f'<div class="card"><div class="v">{esc(v)}</div><div class="l">{esc(label)}</div>'
                        f'<div class="n">{esc(n)}</div></div>' for label, v, n in items)
        return self.add(f'<div class="cards">{cells}</div>')

    def kv(self, pairs: Mapping[str, object]) -> Page:
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs.items() if v is not None)
        return self.add(f"<table>{rows}</table>")

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[object]],
              highlight: Callable[[Sequence[object]], bool] | None = None, collapsed: str | None = None) -> Page:
        """A table; numbers are right-aligned; ``collapsed`` wraps it in a <details> with that summary."""
        head = "".join(f"<th>{esc(h)}</th>" for h in headers)
        body = []
        for row in rows:
            cls = ' class="hl"' if highlight and highlight(row) else ""
            cells = "".join(f'<td class="num">{esc(c)}</td>' if _numeric(c) else f"<td>{esc(c)}</td>" for c in row)
            body.append(f"<tr{cls}>{cells}</tr>")
        table = f"<table><tr>{head}</tr>{''.join(body)}</table>"
        if collapsed:
            table = f"<details><summary>{esc(collapsed)}</summary>{table}</details>"
        return self.add(table)

    def figure(self, png: bytes | None, caption: str, alt: str) -> Page:
        if not png:
            return self
        data = base64.b64encode(png).decode("ascii")
        return self.add(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
                        f"<figcaption>{esc(caption)}</figcaption></figure>")

    def html(self) -> str:
        return (f'<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{esc(self.title)}</title><style>{CSS}</style></head><body>"
                f"<h1>{esc(self.title)}</h1><p class=\"sub\">{esc(self.subtitle)}</p>"
                f"{''.join(self.blocks)}</body></html>")


def _numeric(cell: object) -> bool:
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return True
    return isinstance(cell, str) and cell.rstrip("%").replace(".", "", 1).replace(",", "").lstrip("+-").isdigit()


def write_report(out_dir: str | Path, page: Page) -> Path:
    path = Path(out_dir) / REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.html(), "utf-8")
    return path


def provenance_table(page: Page, results: Mapping[str, object], title: str = "Run") -> None:
    model = results.get("model") or {}
    page.heading(title)
    page.kv({"suite": results.get("suite"), "dataset": results.get("dataset"), "source": results.get("source"),
             "dataset fingerprint": results.get("dataset_fingerprint"), "split / protocol": results.get("split"),
             "seed": results.get("seed"), "model version": model.get("version") if isinstance(model, dict) else model,
             "model": _model_summary(model), "created": results.get("created_at"),
             "lingxi": f"{results.get('lingxi_version')} @ {results.get('git_commit') or 'unknown commit'}",
             "command": results.get("command"), "MLflow run": results.get("mlflow_run_id"),
             "seconds": results.get("seconds")})


def _model_summary(model: object) -> str | None:
    if not isinstance(model, dict):
        return None
    parts = []
    if model.get("encoder"):
        parts.append(f"encoder {model['encoder']}")
    head = model.get("head")
    if isinstance(head, dict):
        parts.append(f"head {head.get('name')}" + (" + char n-grams" if head.get("ngrams") else ""))
    if model.get("bundle"):
        parts.append(f"bundle {model['bundle']}")
    return ", ".join(parts) or None


# --------------------------------------------------------------------------- intent


HEADLINE = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("weighted_f1", "weighted F1"),
            ("in_scope_accuracy", "in-scope accuracy"), ("in_scope_top1_accuracy", "in-scope top-1"),
            ("oos_recall", "OOS recall"), ("oos_precision", "OOS precision"), ("oos_f1", "OOS F1"),
            ("clarify_rate", "clarify rate"))


def intent_page(results: Mapping, figures: Mapping[str, bytes], errors: Sequence[Mapping],
                display: Mapping[str, str] | None = None) -> Page:
    labels = display or {}

    def name(label: str) -> str:
        return labels.get(label, label)

    page = Page(f"Lingxi eval · intent · {results.get('dataset')}",
                f"{results.get('split')} · seed {results.get('seed')} · model {(results.get('model') or {}).get('version')}")
    std = results.get("std") or {}
    page.cards((label, pct(results.get(key)), f"± {std[key]:.1%} over folds" if key in std else "")
               for key, label in HEADLINE if results.get(key) is not None)
    ece = results.get("ece")
    page.cards([("expected calibration error", num(ece), "in-scope rows, 15 bins")] if ece is not None else [])
    refs = results.get("reference") or []
    if refs:
        page.heading("Published reference figures")
        page.table(["method", "metric", "published", "this run", "source"],
                   [(r["method"], r["metric"], r["text"], pct(results.get(r["compare_to"]), 2)
                     if r.get("compare_to") else "—", r["source"]) for r in refs])
    unknown = results.get("unknown_test_labels") or []
    if unknown:
        page.note(f"{len(unknown)} test label(s) unknown to the model, all counted as errors: {', '.join(unknown)}")
    if results.get("skipped_lines"):
        page.note(f"{len(results['skipped_lines'])} malformed source line(s) skipped, e.g. {results['skipped_lines'][0]}")

    page.heading("Confusion")
    page.figure(figures.get("confusion"), "Confusion matrix, or the most-confused gold → predicted pairs when "
                "there are many labels (rejections count as `oos`).", "confusion")
    pairs = results.get("most_confused") or []
    if pairs:
        page.table(["gold", "predicted", "errors", "example"],
                   [(name(p["gold"]), name(p["predicted"]), p["n"], p.get("example", "")) for p in pairs[:30]],
                   collapsed=f"most-confused pairs ({len(pairs)})")

    page.heading("Calibration and confidence")
    page.figure(figures.get("reliability"), "Reliability diagram: how often the top intent is right at each "
                "confidence level.", "reliability diagram")
    page.figure(figures.get("confidence"), "Confidence of the top intent for right answers, wrong answers and "
                "out-of-scope messages.", "confidence histogram")

    sweep = results.get("threshold_sweep") or {}
    if sweep:
        page.heading("Threshold sweep")
        chosen = sweep.get("chosen") or {}
        weight = chosen.get("similarity_weight") or 0
        page.note(f"Operating point fitted on {sweep.get('fitted_on')}: reject {chosen.get('reject')}"
                  + (f" (on the similarity-discounted confidence p1·exp({weight:g}·(cos−1)))" if weight else "")
                  + f", answer {chosen.get('answer')}, margin {chosen.get('margin')}. Sweeps vary one threshold "
                  "with the others fixed; the test rows are for reading the trade-off only, never for choosing it.")
        page.figure(figures.get("threshold_sweep"), "Threshold sweep; dashed line and dots = fitted operating point.",
                    "threshold sweep")
        for split, tables in (sweep.get("splits") or {}).items():
            rows = tables.get("reject") or []
            page.table(["reject", "in-scope acc", "OOS recall", "OOS precision", "OOS F1", "clarify rate",
                        "answer accuracy"],
                       [(r["reject"], pct(r["in_scope_accuracy"]), pct(r["oos_recall"]), pct(r["oos_precision"]),
                         pct(r["oos_f1"]), pct(r["clarify_rate"]), pct(r["answer_accuracy"]))
                        for r in rows if r["chosen"] or round(r["reject"] * 20, 6) % 1 == 0],
                       highlight=lambda row, rs=rows: any(r["chosen"] and r["reject"] == row[0] for r in rs),
                       collapsed=f"{split}: sweep of the reject threshold (highlighted = fitted)")
            rows = tables.get("margin") or []
            page.table(["margin", "in-scope acc", "clarify rate", "answer rate", "answer accuracy"],
                       [(r["margin"], pct(r["in_scope_accuracy"]), pct(r["clarify_rate"]), pct(r["answer_rate"]),
                         pct(r["answer_accuracy"])) for r in rows],
                       highlight=lambda row, rs=rows: any(r["chosen"] and r["margin"] == row[0] for r in rs),
                       collapsed=f"{split}: sweep of the answer margin (highlighted = fitted)")

    for key, fig, label, x in (("learning_curve", "learning_curve", "Learning curve", "percent"),
                               ("few_shot", "few_shot", "Few-shot", "shots")):
        points = results.get(key) or []
        if points:
            page.heading(label)
            page.figure(figures.get(fig), f"{label}: test metrics by training-set size.", label)
            page.table([x, "training rows", "accuracy", "macro-F1", "in-scope acc", "OOS recall"],
                       [(p[x], p.get("n_train"), pct(p.get("accuracy")), pct(p.get("macro_f1")),
                         pct(p.get("in_scope_accuracy")), pct(p.get("oos_recall"))) for p in points])

    folds = results.get("folds") or []
    if folds:
        page.heading("Folds")
        page.table(["fold", "accuracy", "macro-F1", "in-scope acc", "OOS recall", "reject threshold"],
                   [(f["fold"], pct(f.get("accuracy")), pct(f.get("macro_f1")), pct(f.get("in_scope_accuracy")),
                     pct(f.get("oos_recall")), (f.get("thresholds") or {}).get("reject")) for f in folds])

    per_intent = results.get("per_intent") or {}
    if per_intent:
        page.heading(f"Per intent ({len(per_intent)})")
        rows = sorted(per_intent.items(), key=lambda kv: (kv[1]["f1"], kv[0]))
        page.table(["intent", "precision", "recall", "F1", "support", "confused with"],
                   [(name(k), pct(v["precision"]), pct(v["recall"]), pct(v["f1"]), v["support"],
                     ", ".join(f"{name(c)} ×{n}" for c, n in v["confused_with"].items())) for k, v in rows],
                   collapsed="per-intent precision / recall / F1, worst first")

    if errors:
        page.heading(f"Errors ({len(errors)})")
        worst = sorted(errors, key=lambda e: -float(e.get("confidence") or 0))[:200]
        page.table(["text", "gold", "predicted", "confidence", "decision"],
                   [(e["text"], name(e["gold"]), name(e["predicted"]), num(e.get("confidence")), e.get("decision"))
                    for e in worst], collapsed="most confident errors first (all in errors.jsonl)")
    provenance_table(page, results)
    return page


# --------------------------------------------------------------------------- retrieval


def retrieval_page(results: Mapping, figures: Mapping[str, bytes], misses: Sequence[Mapping]) -> Page:
    page = Page(f"Lingxi eval · retrieval · {results.get('dataset')}",
                f"{results.get('protocol')} · {results.get('n_queries')} queries · {results.get('n_docs')} documents")
    hybrid = (results.get("modes") or {}).get("hybrid", {})
    page.cards((k, num(hybrid.get(k)), "hybrid") for k in ("recall@1", "recall@10", "mrr@10", "ndcg@10"))
    page.heading("Modes")
    keys = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "hit@1", "hit@10")
    page.table(["mode", *keys], [(m, *(num(v.get(k)) for k in keys)) for m, v in (results.get("modes") or {}).items()])
    page.figure(figures.get("recall_at_k"), "Recall@k for k = 1..10 per retrieval mode.", "recall at k")
    for chosen in results.get("fusion") or []:
        page.note(f"Fusion {chosen.get('label')} tuned on {chosen.get('tuned_on')} "
                  f"({chosen.get('n_tune_queries')} queries), applied to {chosen.get('applied_to')}.")
    if misses:
        page.heading(f"Misses ({len(misses)})")
        page.table(["query", "relevant", "hybrid top 3"],
                   [(m["text"], ", ".join(m["relevant"]), ", ".join(m["top"])) for m in misses[:200]],
                   collapsed="queries with no relevant document in the hybrid top 10 (all in errors.jsonl)")
    provenance_table(page, results)
    return page


# --------------------------------------------------------------------------- conversations, latency


def conversations_page(results: Mapping, figures: Mapping[str, bytes], failures: Sequence[Mapping]) -> Page:
    page = Page("Lingxi eval · conversations", f"{results.get('dataset')} · model {(results.get('model') or {}).get('version')}")
    page.cards([("conversations passed", f"{results['passed']}/{results['n_conversations']}", ""),
                ("turns passed", pct(results.get("turn_pass_rate")), f"{results['n_turns']} turns")])
    page.figure(figures.get("conversations"), "Turns passed and failed per conversation.", "conversation tests")
    if failures:
        page.heading(f"Failed turns ({len(failures)})")
        page.table(["conversation", "file:line", "turn", "said", "problems"],
                   [(f["conversation"], f"{f['file']}:{f['line']}", f["turn"], f["said"], "; ".join(f["problems"]))
                    for f in failures])
    provenance_table(page, results)
    return page


def latency_page(results: Mapping, figures: Mapping[str, bytes]) -> Page:
    page = Page("Lingxi eval · latency", f"{results.get('n')} messages · model {(results.get('model') or {}).get('version')}")
    page.cards([("p50", f"{results['p50_ms']:.1f} ms", "per message"), ("p95", f"{results['p95_ms']:.1f} ms", ""),
                ("p99", f"{results['p99_ms']:.1f} ms", ""),
                ("throughput", f"{results['throughput_per_s']:.0f}/s", "one thread, one message at a time"),
                ("batch encode", f"{results['batch_throughput_per_s']:.0f}/s", f"batches of {results['batch_size']}")])
    page.figure(figures.get("latency"), "Latency per message and the median per pipeline stage.", "latency")
    page.note(f"Machine: {results.get('cpu_count')} CPU(s), load average {results.get('load_avg_1m')} at the start. "
              "Timings on a shared machine are noisy; compare runs made under the same load.")
    page.table(["stage", "p50 ms", "p99 ms"],
               [(k, num(v["p50_ms"], 2), num(v["p99_ms"], 2)) for k, v in (results.get("stages") or {}).items()])
    provenance_table(page, results)
    return page
