"""Small helpers shared by the benchmark scripts (ports, latency summaries)."""

from __future__ import annotations

import socket

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latency_summary(ms: list[float]) -> dict[str, float]:
    """Median, p99 and mean in milliseconds, rounded for reports."""
    arr = np.asarray(ms)
    return {"p50_ms": round(float(np.median(arr)), 3), "p99_ms": round(float(np.percentile(arr, 99)), 3),
            "mean_ms": round(float(arr.mean()), 3), "n": int(len(arr))}


def start_server(argv: list[str], env: dict[str, str], log_path: str, timeout_s: float = 300.0):
    """Start ``python -m lingxi.serving.cli …`` (``argv`` after the module), wait for ``/readyz``.

    Returns ``(process, base_url)``; the server's log goes to ``log_path``. The port is the one in
    ``argv`` (``--port N``).
    """
    import subprocess
    import sys
    import time

    import httpx

    port = argv[argv.index("--port") + 1]
    log = open(log_path, "wb")  # noqa: SIM115 - stays open for the server's lifetime
    proc = subprocess.Popen([sys.executable, "-m", "lingxi.serving.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=log, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not become ready in {timeout_s:.0f} s; see {log_path}")
