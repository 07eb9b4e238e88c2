"""Prometheus metrics: what the service is doing, scraped at ``GET /metrics``.

Metrics are process-wide by nature (prometheus-client's design), so they live in this module and
every app in a process shares them. With ``lingxi serve --workers N`` the server sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start; each worker then writes its samples to
files there and any worker answers a scrape with the sum over all of them (prometheus-client's
multiprocess mode). Without it (one worker, tests) samples stay in memory.

What is measured:

* ``lingxi_http_request_duration_seconds{method,route,status}`` — latency per route template
* ``lingxi_http_requests_in_flight`` — requests being served (a draining server counts down)
* ``lingxi_parse_decisions_total{decision}`` — ``/v1/parse`` answers by decision
* ``lingxi_dialogue_turns_total{decision}``, ``lingxi_fallbacks_total``,
  ``lingxi_handoffs_total{reason,mode}`` — conversation turns
* ``lingxi_encoder_batch_size``, ``lingxi_encoder_batch_seconds`` — the micro-batcher
* ``lingxi_embedding_cache_lookups_total{result}``, ``lingxi_embedding_cache_hit_ratio`` — the cache
* ``lingxi_model_info{bot,version,source}`` — 1 for the model being served
"""

from __future__ import annotations

import os
import threading

from litestar import Response, get
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from .auth import require

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

disable_created_metrics()  # no ``*_created`` series: they double the output and nobody graphs them

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_LATENCY = Histogram("lingxi_http_request_duration_seconds", "HTTP request latency by route template",
                         ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
IN_FLIGHT = Gauge("lingxi_http_requests_in_flight", "HTTP requests being served",
                  multiprocess_mode="livesum", registry=REGISTRY)
PARSE_DECISIONS = Counter("lingxi_parse_decisions", "/v1/parse results by decision", ["decision"],
                          registry=REGISTRY)
TURNS = Counter("lingxi_dialogue_turns", "conversation turns by decision", ["decision"], registry=REGISTRY)
FALLBACKS = Counter("lingxi_fallbacks", "turns that fell back (the bot did not understand)", registry=REGISTRY)
HANDOFFS = Counter("lingxi_handoffs", "handoffs to a human by reason and mode", ["reason", "mode"],
                   registry=REGISTRY)
BATCH_SIZE = Histogram("lingxi_encoder_batch_size", "texts per micro-batch sent to the encoder",
                       buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=REGISTRY)
BATCH_SECONDS = Histogram("lingxi_encoder_batch_seconds", "time to encode one micro-batch",
                          buckets=_LATENCY_BUCKETS, registry=REGISTRY)
CACHE_LOOKUPS = Counter("lingxi_embedding_cache_lookups", "embedding cache lookups by result", ["result"],
                        registry=REGISTRY)
CACHE_HIT_RATIO = Gauge("lingxi_embedding_cache_hit_ratio", "embedding cache hits / lookups since start",
                        multiprocess_mode="liveall", registry=REGISTRY)
MODEL_INFO = Gauge("lingxi_model_info", "1 for the model being served (0 for one swapped out)",
                   ["bot", "version", "source"], multiprocess_mode="livemax", registry=REGISTRY)

_cache_lock = threading.Lock()
_cache_totals = [0, 0]  # hits, lookups in this process: the ratio gauge is per process


# ------------------------------------------------------------------ recording (called by the app)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_LATENCY.labels(method, route, str(status)).observe(seconds)


def observe_parse(decision: str) -> None:
    PARSE_DECISIONS.labels(decision).inc()


def observe_turn(decision: str, handoff_reason: str | None = None, handoff_mode: str | None = None) -> None:
    TURNS.labels(decision).inc()
    if decision == "fallback":
        FALLBACKS.inc()
    if handoff_reason is not None:
        # "flow:<id>" / "rule:<id>" → "flow" / "rule": keep the label set small
        HANDOFFS.labels(handoff_reason.split(":", 1)[0], handoff_mode or "live").inc()


def observe_batch(size: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    BATCH_SECONDS.observe(seconds)


def observe_cache(hits: int, misses: int) -> None:
    if hits:
        CACHE_LOOKUPS.labels("hit").inc(hits)
    if misses:
        CACHE_LOOKUPS.labels("miss").inc(misses)
    with _cache_lock:
        _cache_totals[0] += hits
        _cache_totals[1] += hits + misses
        CACHE_HIT_RATIO.set(_cache_totals[0] / _cache_totals[1] if _cache_totals[1] else 0.0)


_current_model: list[tuple[str, str, str]] = []


def observe_model(bot: str, version: str, source: str) -> None:
    """The model being served changed: its series goes to 1, the previous one's to 0."""
    labels = (bot, version, source)
    for old in _current_model:
        if old != labels:
            MODEL_INFO.labels(*old).set(0)
    MODEL_INFO.labels(*labels).set(1)
    _current_model[:] = [labels]


def observe_loaded(loaded) -> None:
    """``ModelHolder.on_swap`` hook (a :class:`~lingxi.serving.loading.LoadedModel`)."""
    observe_model(loaded.bundle.bot, loaded.bundle.version, loaded.source)


def worker_exiting() -> None:
    """Drop this process's live gauges from a multiprocess scrape (called at app shutdown)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())


# ------------------------------------------------------------------ exposition


def render() -> bytes:
    """The text exposition of every metric (summed over workers in multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


@get("/metrics", sync_to_thread=False, guards=[require("editor", operator=True)], tags=["ops"],
     media_type="text/plain")
def metrics_endpoint() -> Response[bytes]:
    """Prometheus metrics (text exposition format 0.0.4); server-wide, so operator keys only (a site
    key is public)."""
    return Response(render(), media_type=CONTENT_TYPE_LATEST)
