"""Type-ahead benchmark (a script, not a test): latency of ``GET /v1/kb/suggest`` on the demo help centre.

``python -m lingxi.evals.bench_suggest [--home DIR]``

Every held-out demo question (``datasets/demo/eval/heldout.yml``) is "typed" one character at a
time and each prefix is sent, as a frontend would on every keystroke. Reports p50/p99 of

* the :class:`~lingxi.retrieval.suggest.Suggester` itself,
* the whole HTTP request through the litestar app (in-process ASGI client, real key guard),
* a baseline measured in the same run: a plain scan that normalises every title and variant
  per keystroke and matches prefix/substring, then RapidFuzz over all of them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402


def keystrokes(limit: int) -> list[str]:
    import yaml

    from lingxi.datasets.domain import demo_domain_path

    raw = yaml.safe_load((demo_domain_path() / "eval" / "heldout.yml").read_text("utf-8"))
    texts = [e["text"] for e in raw["examples"]][:limit]
    return [t[:i] for t in texts for i in range(1, len(t) + 1) if t[:i].strip()]


def stats(ms: list[float]) -> str:
    a = np.array(ms)
    return f"p50 {np.median(a):6.3f} ms   p99 {np.percentile(a, 99):6.3f} ms   (n={len(a)})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", help="Lingxi home with the KB (default: a fresh temp folder seeded with the demo KB)")
    p.add_argument("--questions", type=int, default=300)
    args = p.parse_args(argv)

    from litestar import Litestar
    from litestar.datastructures import State
    from litestar.testing import TestClient
    from rapidfuzz import fuzz, process

    from lingxi.retrieval.service import KbConfig, KbService
    from lingxi.serving.auth import KeyRing
    from lingxi.serving.errors import EXCEPTION_HANDLERS
    from lingxi.serving.kb import kb_router
    from lingxi.serving.settings import ApiKey

    home = Path(args.home or tempfile.mkdtemp(prefix="lingxi-bench-"))
    t = time.time()
    kb = KbService(KbConfig(seed_demo=True), home=home).start()
    articles = list(kb.live[1].values())
    print(f"demo KB: {len(articles)} articles, {kb.suggester.size} suggestion entries (ready in {time.time() - t:.1f}s)")
    prefixes = keystrokes(args.questions)

    # baseline: what a straightforward implementation does per keystroke
    texts = [(a.title, a.id) for a in articles] + [(v, a.id) for a in articles for v in a.variants]
    norm = kb.analyzer.normalize

    def naive(q: str) -> list[str]:
        nq = norm(q)
        normed = [norm(text) for text, _ in texts]
        hits = [texts[i][0] for i, n in enumerate(normed) if nq in n]
        if len(hits) < 8:
            hits += [texts[i][0] for _, _, i in process.extract(nq, normed, scorer=fuzz.partial_ratio, limit=8)]
        return hits[:8]

    for q in prefixes[:50]:  # warm up both
        naive(q)
        kb.suggest(q)
    base_ms, comp_ms = [], []
    for q in prefixes:
        t0 = time.perf_counter()
        naive(q)
        base_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        kb.suggest(q)
        comp_ms.append((time.perf_counter() - t0) * 1000)

    app = Litestar(route_handlers=[kb_router], exception_handlers=EXCEPTION_HANDLERS,
                   state=State({"keyring": KeyRing([ApiKey(name="widget", role="read", key="bench-key")]), "kb": kb}))
    http_ms = []
    with TestClient(app) as client:
        headers = {"X-API-Key": "bench-key"}
        for q in prefixes[:50]:
            client.get("/v1/kb/suggest", params={"q": q}, headers=headers)
        for q in prefixes:
            t0 = time.perf_counter()
            r = client.get("/v1/kb/suggest", params={"q": q}, headers=headers)
            http_ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
    kb.close()
    print(f"{len(prefixes)} keystrokes from {args.questions} held-out demo questions")
    print(f"baseline (normalise + scan + fuzzy every keystroke): {stats(base_ms)}")
    print(f"Suggester.suggest:                                   {stats(comp_ms)}")
    print(f"GET /v1/kb/suggest (in-process HTTP, key guard):     {stats(http_ms)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
