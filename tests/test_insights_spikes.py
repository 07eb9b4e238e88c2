"""Hot-topic spike detection on synthetic traffic, and the alert webhook against a real local HTTP server."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lingxi.training.spikes import SpikeConfig, detect_spikes, poisson_sf, send_alerts

HOUR = 3600.0
NOW = 1_800_000_000.0
INTENTS = [f"intent_{i}" for i in range(12)]


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method: fine for the small rates used here."""
    limit, k, p = pow(2.718281828459045, -lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def traffic(days: int, seed: int, surge: dict[str, float] | None = None, rate: float = 20.0):
    """(ts, intent) for ``days`` of hourly Poisson traffic ending at NOW; ``surge`` multiplies some
    intents' rate in the last hour."""
    rng = random.Random(seed)
    items = []
    start = NOW - days * 24 * HOUR
    hours = int(days * 24)
    for h in range(hours):
        last = h == hours - 1
        for intent in INTENTS:
            lam = rate * ((surge or {}).get(intent, 1.0) if last else 1.0)
            for _ in range(_poisson(rng, lam)):
                items.append((start + h * HOUR + rng.random() * HOUR, intent))
    return items


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tripled_intent_over_an_hour_is_detected(seed):
    report = detect_spikes(traffic(7, seed, {"intent_3": 3.0}), NOW)
    assert report.status == "ok"
    assert [t.key for t in report.spikes] == ["intent_3"]
    spike = report.spikes[0]
    assert spike.ratio > 2 and spike.p_value < 1e-6


@pytest.mark.parametrize("seed", range(10))
def test_flat_traffic_raises_no_alert(seed):
    report = detect_spikes(traffic(7, 100 + seed), NOW)
    assert report.status == "ok" and report.tested == len(INTENTS)
    assert report.spikes == []


def test_too_little_history_says_so_instead_of_alerting():
    items = traffic(0.5, 7, {"intent_3": 5.0})  # twelve hours, with a big surge at the end
    report = detect_spikes(items, NOW)
    assert report.status == "insufficient_history"
    assert report.spikes == [] and "history" in report.message
    assert report.history_buckets < SpikeConfig().min_baseline_buckets
    # the same data with a known earlier start of collection (a quiet bot) is judged
    judged = detect_spikes(items, NOW, history_start=NOW - 3 * 24 * HOUR)
    assert judged.status == "ok"


def test_a_new_topic_bursting_from_nothing_is_a_spike_but_a_trickle_is_not():
    items = traffic(3, 11)
    burst = [(NOW - HOUR + i * 60, "new_promo_question") for i in range(40)]
    trickle = [(NOW - HOUR + i * 600, "rare_question") for i in range(3)]
    report = detect_spikes(items + burst + trickle, NOW)
    assert [t.key for t in report.spikes] == ["new_promo_question"]


def test_poisson_tail_matches_a_direct_sum():
    import math

    for k, lam in ((0, 3.0), (1, 0.5), (7, 3.0), (30, 10.0), (5, 20.0)):
        direct = 1.0 - sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(k))
        assert poisson_sf(k, lam) == pytest.approx(direct, rel=1e-9, abs=1e-15)


class _Hook(BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received = []
    _Hook.status = 200
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook
    server.shutdown()


def test_alert_webhook_receives_the_spikes(webhook):
    url, hook = webhook
    report = detect_spikes(traffic(7, 5, {"intent_8": 3.0}), NOW)
    result = send_alerts(url, report, tenant="acme", kind="intent", timeout_s=2)
    assert result.delivered and result.status_code == 200
    (body,) = hook.received
    assert body["tenant"] == "acme" and [s["key"] for s in body["spikes"]] == ["intent_8"]


def test_webhook_failures_are_reported_not_raised(webhook):
    url, hook = webhook
    report = detect_spikes(traffic(7, 5, {"intent_8": 3.0}), NOW)
    hook.status = 500
    assert send_alerts(url, report, tenant="t", kind="intent").error == "HTTP 500"
    closed = send_alerts("http://127.0.0.1:9/none", report, tenant="t", kind="intent", timeout_s=0.5)
    assert not closed.delivered and closed.error
    assert "http" in send_alerts("ftp://x/y", report, tenant="t", kind="intent").error
    flat = detect_spikes(traffic(7, 6), NOW)
    assert send_alerts(url, flat, tenant="t", kind="intent").delivered is False
