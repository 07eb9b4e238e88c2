"""Insights API: ``/v1/insights/...`` over the event store, scoped to the caller's tenant.

Routes (all ``GET`` unless said; role ``editor`` or higher, because the answers quote customers'
own words and widget keys have role ``read``):

* ``frequent`` — most frequent intents or questions (``kind``), overall or ``by`` day / channel / tag
  (an intent's tag is its category in the served model);
* ``rates`` — containment, handoff, abandon, fallback and clarification rates, ``by`` channel / intent / day;
* ``articles`` — article performance: impressions, clicks, CTR, votes, resolution rate, flagged;
* ``gaps`` — clusters of unanswered questions with counts, examples and a suggested article title;
* ``csat`` — stars, emoji, comment sentiment and keywords, ``by`` intent / channel;
* ``spikes`` — hot topics per intent or per query cluster (``kind``) against a baseline;
  ``POST spikes/alert`` runs the same check and posts any spike to ``insights_webhook_url``.

Common query parameters: ``since`` / ``until`` (RFC 3339 or epoch seconds; default the last 7
days; at most 92 days apart), ``bot``, ``channel``, ``tz_offset_minutes`` (days in the operator's
time zone, e.g. 480). At most ``insights_max_events`` events are read per answer; ``truncated``
says when the range held more. Bad parameters answer 422 with code ``invalid_parameter``.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import State

from lingxi.training.csat import csat_summary
from lingxi.training.events import EventStore
from lingxi.training.gaps import GapConfig, cluster_texts, knowledge_gaps
from lingxi.training.insights import article_performance, frequent, is_message, rates
from lingxi.training.spikes import SpikeConfig, SpikeReport, detect_spikes, send_alerts, valid_webhook_url

from .auth import principal, require
from .errors import ApiError
from .events import events_of
from .kb import started_kb

MAX_SPAN_S = 92 * 86_400
DEFAULT_SPAN_S = 7 * 86_400


class Insight(msgspec.Struct, kw_only=True):
    tenant: str
    since: float
    until: float
    events_read: int
    truncated: bool
    data: Any


def _bad(message: str) -> ApiError:
    return ApiError(422, "invalid_parameter", message)


def _time(value: str | None, name: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or abs(number) > 1e11:  # nan, inf, or beyond year 5000
            raise _bad(f"`{name}` must be a finite time")
        return number
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise _bad(f"`{name}` must be RFC 3339 (2026-11-24T08:00:00+08:00) or epoch seconds") from None


def _range(since: str | None, until: str | None) -> tuple[float, float]:
    end = _time(until, "until") or time.time()
    start = _time(since, "since")
    start = end - DEFAULT_SPAN_S if start is None else start
    if start >= end:
        raise _bad("`since` must be before `until`")
    if end - start > MAX_SPAN_S:
        raise _bad(f"the range is {(end - start) / 86_400:.0f} days; at most {MAX_SPAN_S // 86_400} are allowed")
    return start, end


def _choice(value: str | None, name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    if value is None or value == "":
        return default
    if value not in allowed:
        raise _bad(f"`{name}` must be one of {', '.join(allowed)}")
    return value


def _int(value: int | None, name: str, lo: int, hi: int, default: int) -> int:
    if value is None:
        return default
    if not lo <= value <= hi:
        raise _bad(f"`{name}` must be {lo}..{hi}")
    return value


def _short(value: str | None, name: str) -> str | None:
    if value is not None and (not value.strip() or len(value) > 128):
        raise _bad(f"`{name}` must be 1..128 characters")
    return value


class _Read(msgspec.Struct):
    events: list
    truncated: bool


def _read(request: Request, state: State, types: tuple[str, ...], start: float, end: float,
          bot: str | None = None, channel: str | None = None) -> _Read:
    store: EventStore = events_of(state)
    limit = getattr(state.settings, "insights_max_events", 200_000)
    events = store.query(principal(request).tenant, types=types, bot=_short(bot, "bot"),
                         channel=_short(channel, "channel"), since=start, until=end, limit=limit + 1)
    return _Read(events[:limit], len(events) > limit)


def _answer(request: Request, start: float, end: float, read: _Read, data: Any) -> Insight:
    return Insight(tenant=principal(request).tenant, since=start, until=end, events_read=len(read.events),
                   truncated=read.truncated, data=data)


def _encoder(request: Request, state: State):
    """The encoder gaps and query clusters are embedded with: a test's, the KB's, or the NLU model's."""
    enc = getattr(state, "insights_encoder", None)
    if enc is not None:
        return enc
    kb = started_kb(request)
    if kb is not None:
        return kb.encoder
    loaded = getattr(getattr(state, "models", None), "current", None)
    if loaded is not None:
        return loaded.pipeline.encoder
    raise ApiError(503, "encoder_not_ready", "no encoder is loaded yet (neither the knowledge base nor a model)")


def _tags_of(state: State):
    loaded = getattr(getattr(state, "models", None), "current", None)
    if loaded is None:
        return None
    categories = {i.name: [i.category] for i in loaded.bundle.intents if i.category}
    return lambda intent: categories.get(intent, [])


@get("/frequent", sync_to_thread=True)
def get_frequent(request: Request, state: State, kind: str | None = None, by: str | None = None,
                 since: str | None = None, until: str | None = None, bot: str | None = None,
                 channel: str | None = None, limit: int | None = None, tz_offset_minutes: int | None = None
                 ) -> Insight:
    """Most frequent intents or questions (``kind`` intent | question), ``by`` day | channel | tag."""
    k = _choice(kind, "kind", ("intent", "question"), "intent")
    g = _choice(by, "by", ("day", "channel", "tag"))
    n = _int(limit, "limit", 1, 500, 20)
    tz = _int(tz_offset_minutes, "tz_offset_minutes", -720, 840, 0)
    start, end = _range(since, until)
    read = _read(request, state, ("parse",), start, end, bot, channel)
    return _answer(request, start, end, read, frequent(read.events, k, g, n, tz, _tags_of(state)))  # type: ignore[arg-type]


@get("/rates", sync_to_thread=True)
def get_rates(request: Request, state: State, by: str | None = None, since: str | None = None,
              until: str | None = None, bot: str | None = None, channel: str | None = None,
              tz_offset_minutes: int | None = None) -> Insight:
    """Containment, handoff, abandon, fallback and clarification rates, ``by`` channel | intent | day."""
    g = _choice(by, "by", ("channel", "intent", "day"))
    tz = _int(tz_offset_minutes, "tz_offset_minutes", -720, 840, 0)
    start, end = _range(since, until)
    read = _read(request, state, ("parse", "handoff", "outcome"), start, end, bot, channel)
    return _answer(request, start, end, read, rates(read.events, g, tz))  # type: ignore[arg-type]


@get("/articles", sync_to_thread=True)
def get_articles(request: Request, state: State, since: str | None = None, until: str | None = None,
                 limit: int | None = None, flagged: bool | None = None) -> Insight:
    """Article performance: impressions, clicks, CTR, votes, resolution rate, flagged (worst first with ``flagged``)."""
    n = _int(limit, "limit", 1, 1000, 50)
    start, end = _range(since, until)
    read = _read(request, state, ("impression", "click", "vote", "reply"), start, end)
    kb = started_kb(request)
    flags = {a: f.reason for a, f in kb.feedback.flags().items()} if kb is not None else {}

    def title(article_id: str) -> str | None:
        if kb is None:
            return None
        found = kb.store.get_many([article_id]).get(article_id)
        return found.title if found else None

    rows = article_performance(read.events, flags, title)
    if flagged:
        rows = [r for r in rows if r.flagged]
    return _answer(request, start, end, read, rows[:n])


@get("/gaps", sync_to_thread=True)
def get_gaps(request: Request, state: State, since: str | None = None, until: str | None = None,
             bot: str | None = None, channel: str | None = None, min_count: int | None = None,
             limit: int | None = None) -> Insight:
    """Knowledge gaps: clusters of unanswered questions with counts, examples and a suggested title."""
    cfg = GapConfig(min_count=_int(min_count, "min_count", 1, 10_000, 2))
    n = _int(limit, "limit", 1, 200, 20)
    start, end = _range(since, until)
    read = _read(request, state, ("parse", "vote"), start, end, bot, channel)
    gaps = knowledge_gaps(read.events, _encoder(request, state), cfg) if read.events else []
    return _answer(request, start, end, read, gaps[:n])


@get("/csat", sync_to_thread=True)
def get_csat(request: Request, state: State, by: str | None = None, since: str | None = None,
             until: str | None = None, bot: str | None = None, channel: str | None = None,
             keywords: str | None = None) -> Insight:
    """CSAT: stars, emoji, comment sentiment and keywords (``keywords`` tfidf | textrank), ``by`` intent | channel."""
    g = _choice(by, "by", ("intent", "channel"))
    method = _choice(keywords, "keywords", ("tfidf", "textrank"), "tfidf")
    start, end = _range(since, until)
    read = _read(request, state, ("parse", "csat"), start, end, bot, channel)
    return _answer(request, start, end, read, csat_summary(read.events, g, keyword_method=method))  # type: ignore[arg-type]


class SpikeAnswer(msgspec.Struct, kw_only=True):
    kind: str
    report: SpikeReport
    webhook: dict | None = None


def _spikes(request: Request, state: State, kind: str | None, bucket_minutes: int | None,
            baseline_hours: int | None, until: str | None, bot: str | None, channel: str | None
            ) -> tuple[str, SpikeReport, _Read]:
    k = _choice(kind, "kind", ("intent", "query"), "intent")
    bucket = _int(bucket_minutes, "bucket_minutes", 5, 1440, 60) * 60
    baseline = _int(baseline_hours, "baseline_hours", 1, 2208, 168) * 3600
    if baseline < bucket:
        raise _bad("`baseline_hours` must cover at least one bucket")
    cfg = SpikeConfig(bucket_s=bucket, baseline_buckets=baseline // bucket,
                      min_baseline_buckets=min(baseline // bucket, max(1, 86_400 // bucket)))
    now = _time(until, "until") or time.time()
    start = now - bucket - baseline
    read = _read(request, state, ("parse",), start, now, bot, channel)
    messages = [e for e in read.events if is_message(e)]
    # history: since the tenant's first event at all, so a quiet start is not mistaken for zero traffic
    first = events_of(state).query(principal(request).tenant, limit=1)
    history_start = first[0].ts if first else None
    if k == "intent":
        items = [(e.ts, e.payload.intent) for e in messages if e.payload.intent and e.payload.decision != "out_of_scope"]
        return k, detect_spikes(items, now, cfg, history_start), read
    texts = [e.payload.text for e in messages]
    distinct = list(dict.fromkeys(texts))[:3000]
    label_of: dict[str, str] = {}
    examples: dict[str, list[str]] = {}
    for members in cluster_texts(distinct, _encoder(request, state)):
        label = distinct[members[0]]
        examples[label] = [distinct[i] for i in members[:3]]
        for i in members:
            label_of[distinct[i]] = label
    items = [(e.ts, label_of[e.payload.text]) for e in messages if e.payload.text in label_of]
    report = detect_spikes(items, now, cfg, history_start)
    for t in report.topics:
        t.label, t.examples = t.key, examples.get(t.key, [])
    return k, report, read


@get("/spikes", sync_to_thread=True)
def get_spikes(request: Request, state: State, kind: str | None = None, bucket_minutes: int | None = None,
               baseline_hours: int | None = None, until: str | None = None, bot: str | None = None,
               channel: str | None = None) -> Insight:
    """Hot topics (``kind`` intent | query cluster) in the last bucket against the baseline before it.

    With too little history the report's ``status`` is ``insufficient_history`` and nothing alerts."""
    k, report, read = _spikes(request, state, kind, bucket_minutes, baseline_hours, until, bot, channel)
    return _answer(request, report.window_start - _int(baseline_hours, "baseline_hours", 1, 2208, 168) * 3600,
                   report.window_end, read, SpikeAnswer(kind=k, report=report))


@post("/spikes/alert", sync_to_thread=True, status_code=200)
def post_spike_alert(request: Request, state: State, kind: str | None = None, bucket_minutes: int | None = None,
                     baseline_hours: int | None = None, bot: str | None = None, channel: str | None = None
                     ) -> Insight:
    """Run the spike check now and POST any spike to the configured webhook (``insights_webhook_url``)."""
    url = getattr(state.settings, "insights_webhook_url", None)
    if not url:
        raise ApiError(409, "webhook_not_configured", "set `insights_webhook_url` (LINGXI_INSIGHTS_WEBHOOK_URL)")
    if not valid_webhook_url(url):
        raise ApiError(409, "webhook_not_configured", "`insights_webhook_url` must be an http(s) URL")
    k, report, read = _spikes(request, state, kind, bucket_minutes, baseline_hours, None, bot, channel)
    timeout = getattr(state.settings, "insights_webhook_timeout_s", 5.0)
    result = send_alerts(url, report, tenant=principal(request).tenant, kind=k, timeout_s=timeout)
    return _answer(request, report.window_start, report.window_end, read,
                   SpikeAnswer(kind=k, report=report, webhook=msgspec.to_builtins(result)))


insights_router = Router(path="/v1/insights", guards=[require("editor")], tags=["insights"],
                         route_handlers=[get_frequent, get_rates, get_articles, get_gaps, get_csat, get_spikes,
                                         post_spike_alert])
