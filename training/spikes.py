"""Hot-topic spikes: is one intent (or one cluster of similar questions) surging right now?

A *topic* is a key per event — an intent name, or a query-cluster id. Time is cut into buckets of
``bucket_s`` (an hour by default). The newest bucket, ending at ``now``, is the **window**; up to
``baseline_buckets`` buckets before it are the **baseline**. For each topic:

* ``expected`` = its mean count per baseline bucket (never below ``min_rate``, so a topic that was
  silent and is suddenly busy can still alert);
* ``p_value`` = the Poisson upper tail ``P(X ≥ observed | expected)``, compared with ``alpha``
  divided by the number of topics tested (Bonferroni: with 200 intents we test 200 times);
* a spike also needs ``observed ≥ min_count``, ``observed / expected ≥ min_ratio`` and, for topics
  noisier than Poisson, a z-score ``(observed − mean) / sd ≥ min_z`` with ``sd`` the larger of the
  baseline's own spread and ``√mean``. Real traffic is over-dispersed; this keeps a naturally
  bursty topic from alerting on every burst.

With fewer than ``min_baseline_buckets`` buckets of history the detector says
``insufficient_history`` and alerts on nothing: a day-old bot has no "normal" to compare with.
The baseline is the trailing buckets, not the same hour of previous days, so a strong daily cycle
can look like a spike at the morning peak; the ratio and z guards soften that (documented limit).

:func:`send_alerts` posts the spikes as JSON to a webhook, with a timeout, and reports delivery.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlparse

import msgspec
import numpy as np

log = logging.getLogger("lingxi.insights")

Status = Literal["ok", "insufficient_history"]


class SpikeConfig(msgspec.Struct, frozen=True, kw_only=True):
    bucket_s: int = 3600
    baseline_buckets: int = 168  # a week of hours
    min_baseline_buckets: int = 24
    alpha: float = 0.001  # family-wise, split across the topics tested
    min_ratio: float = 2.0
    min_count: int = 10
    min_z: float = 3.0
    min_rate: float = 0.5  # floor of the expected count per bucket

    def problems(self) -> list[str]:
        out = []
        if not 60 <= self.bucket_s <= 7 * 86_400:
            out.append("bucket_s must be 60..604800 seconds")
        if not 1 <= self.min_baseline_buckets <= self.baseline_buckets <= 10_000:
            out.append("need 1 <= min_baseline_buckets <= baseline_buckets <= 10000")
        if not 0 < self.alpha < 1:
            out.append("alpha must be in (0, 1)")
        if self.min_ratio < 1 or self.min_count < 1 or self.min_rate <= 0:
            out.append("min_ratio >= 1, min_count >= 1 and min_rate > 0 are required")
        return out


class Topic(msgspec.Struct, kw_only=True):
    key: str
    observed: int
    expected: float
    ratio: float
    p_value: float
    z: float
    spike: bool
    label: str | None = None
    examples: list[str] = []


class SpikeReport(msgspec.Struct, kw_only=True):
    status: Status
    message: str
    window_start: float
    window_end: float
    bucket_s: int
    history_buckets: int  # baseline buckets with data coverage
    tested: int
    spikes: list[Topic]
    topics: list[Topic]  # every topic seen in the window, most surprising first


def poisson_sf(observed: int, mean: float) -> float:
    """``P(X ≥ observed)`` for ``X ~ Poisson(mean)``, stable for large counts (log-space sum)."""
    if observed <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    # P(X >= k) = 1 - sum_{i<k} pmf(i); for k far above the mean sum the upper tail directly instead
    if observed > mean:
        log_pmf = -mean + observed * math.log(mean) - math.lgamma(observed + 1)
        total, term, i = 0.0, log_pmf, observed
        while True:
            total += math.exp(term)
            i += 1
            term += math.log(mean) - math.log(i)
            if term < log_pmf - 40 or i > observed + 10_000:
                break
        return min(1.0, total)
    log_pmf = -mean  # i = 0
    cdf = 0.0
    for i in range(observed):
        cdf += math.exp(log_pmf)
        log_pmf += math.log(mean) - math.log(i + 1)
    return max(0.0, 1.0 - cdf)


def detect_spikes(items: Iterable[tuple[float, str]], now: float, config: SpikeConfig | None = None,
                  history_start: float | None = None) -> SpikeReport:
    """Spikes among ``(timestamp, topic)`` items in the window ``[now - bucket_s, now)``.

    ``history_start``: since when data has been collected (default: the earliest item). History
    before it does not count as "zero traffic".
    """
    cfg = config or SpikeConfig()
    b = cfg.bucket_s
    window_start = now - b
    base_start = window_start - cfg.baseline_buckets * b
    per_topic: dict[str, np.ndarray] = {}
    earliest = math.inf
    for ts, key in items:
        earliest = min(earliest, ts)
        if not base_start <= ts < now:
            continue
        # bucket 0 is the oldest baseline bucket; bucket baseline_buckets is the window
        idx = min(cfg.baseline_buckets, int((ts - base_start) // b))
        counts = per_topic.get(key)
        if counts is None:
            counts = per_topic[key] = np.zeros(cfg.baseline_buckets + 1, np.int64)
        counts[idx] += 1
    start = history_start if history_start is not None else earliest
    covered = 0 if not math.isfinite(start) else int(max(0.0, window_start - max(start, base_start)) // b)
    covered = min(cfg.baseline_buckets, covered)
    common = dict(window_start=window_start, window_end=now, bucket_s=b, history_buckets=covered)
    if covered < cfg.min_baseline_buckets:
        return SpikeReport(status="insufficient_history", tested=0, spikes=[], topics=[],
                           message=f"only {covered} bucket(s) of {b} s history before the window; at least "
                                   f"{cfg.min_baseline_buckets} are needed before spikes can be told from "
                                   "normal traffic", **common)
    topics = []
    tested = [k for k, c in per_topic.items() if c[-1] > 0]
    threshold = cfg.alpha / max(1, len(tested))
    for key in tested:
        counts = per_topic[key]
        base = counts[cfg.baseline_buckets - covered: cfg.baseline_buckets].astype(float)
        observed = int(counts[-1])
        mean = float(base.mean())
        expected = max(mean, cfg.min_rate)
        sd = max(float(base.std()), math.sqrt(expected))
        p = poisson_sf(observed, expected)
        z = (observed - mean) / sd
        spike = (p < threshold and observed >= cfg.min_count and observed / expected >= cfg.min_ratio
                 and z >= cfg.min_z)
        topics.append(Topic(key=key, observed=observed, expected=round(expected, 3),
                            ratio=round(observed / expected, 3), p_value=p, z=round(z, 2), spike=spike))
    topics.sort(key=lambda t: (t.p_value, -t.observed))
    spikes = [t for t in topics if t.spike]
    return SpikeReport(status="ok", tested=len(tested), spikes=spikes, topics=topics,
                       message=f"{len(spikes)} spike(s) among {len(tested)} topic(s) active in the window",
                       **common)


# ------------------------------------------------------------------ alerting


class WebhookResult(msgspec.Struct, kw_only=True):
    delivered: bool
    status_code: int | None = None
    error: str | None = None


def valid_webhook_url(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc) and len(url) <= 2000


def send_alerts(url: str, report: SpikeReport, *, tenant: str, kind: str, timeout_s: float = 5.0,
                client=None) -> WebhookResult:
    """POST ``{"event": "hot_topics", tenant, kind, window, spikes}``; never raises (the result says what happened).

    Nothing is sent when there is no spike. ``client``: an ``httpx.Client`` to reuse (tests, pooling).
    """
    import httpx

    if not report.spikes:
        return WebhookResult(delivered=False, error="no spikes to report")
    if not valid_webhook_url(url):
        return WebhookResult(delivered=False, error="webhook URL must be http(s)://host/...")
    body = {"event": "hot_topics", "tenant": tenant, "kind": kind, "window_start": report.window_start,
            "window_end": report.window_end, "spikes": msgspec.to_builtins(report.spikes)}
    try:
        if client is None:
            with httpx.Client(timeout=timeout_s) as c:
                r = c.post(url, json=body)
        else:
            r = client.post(url, json=body, timeout=timeout_s)
    except httpx.HTTPError as exc:
        log.warning("hot-topic webhook %s failed: %s", url, exc)
        return WebhookResult(delivered=False, error=f"{type(exc).__name__}: {exc}")
    ok = 200 <= r.status_code < 300
    if not ok:
        log.warning("hot-topic webhook %s answered %s", url, r.status_code)
    return WebhookResult(delivered=ok, status_code=r.status_code, error=None if ok else f"HTTP {r.status_code}")
