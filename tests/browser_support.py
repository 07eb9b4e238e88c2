"""Shared pieces of the browser tests (``tests/test_browser_*.py``): the real app served by uvicorn in a
thread, Debian's Chromium driven by Playwright, screenshots in ``test-artifacts/``.

Nothing is faked on the server: the trained demo model, the real knowledge base, dialogue store,
event store and registry, behind configured API keys of each role. The browser is ``/usr/bin/chromium``
(Playwright never downloads one); the tests skip, saying why, when it or the built front-end is missing.
"""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = Path(os.environ.get("LINGXI_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "serving" / "web" / "dist"
ARTIFACTS = ROOT / "test-artifacts"

KEYS = {"read": "site-key-browser-test", "agent": "agent-key-browser-test", "editor": "editor-key-browser-test",
        "reviewer": "reviewer-key-browser-test", "admin": "admin-key-browser-test"}


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    if not (DIST / "widget.js").is_file() or not (DIST / "console" / "index.html").is_file():
        return "the web front-end is not built (make install with Node.js >= 20.19 builds serving/web/dist)"
    return None


def widget_gzip_bytes() -> tuple[int, int]:
    raw = (DIST / "widget.js").read_bytes()
    return len(raw), len(gzip.compress(raw, 9))


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    base: str
    home: Path
    app: object
    tracking_uri: str

    def demo_url(self, fragment: str = "") -> str:
        return f"{self.base}/demo?key={KEYS['read']}{fragment}"


@pytest.fixture(scope="session")
def browser_ready() -> None:
    """Skip (before any model is trained) when there is no browser or no built front-end."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def live_server(browser_ready, trained_demo, demo_encoder, lingxi_home, demo_arbitration,
                tmp_path_factory) -> Iterator[LiveServer]:
    """The real app on a free loopback port (uvicorn in a thread), sharing the session's model.

    One server for all browser tests: building the demo knowledge base's index is the slow part of a
    start. Tests therefore make their own conversations and never assume an empty store. The answer
    arbitration fitted for the model (``demo_arbitration``, saved beside the bundle) loads at start."""
    import uvicorn

    from lingxi.serving.app import create_app
    from lingxi.serving.loading import ModelHolder
    from lingxi.serving.settings import ApiKey, Settings

    home = tmp_path_factory.mktemp("browser-home")
    port = _free_port()
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    settings = Settings(home=str(home), port=port, log_level="WARNING", mlflow_tracking_uri=tracking_uri,
                        rate_limit_per_s=0, api_keys=[ApiKey(name=f"{role}-key", role=role, key=key)
                                                      for role, key in KEYS.items()])
    holder = ModelHolder(lingxi_home / "models", "demo-shop")
    holder._encoders[repr(trained_demo.bundle.encoders)] = demo_encoder  # the session's weights
    assert holder.load_latest() is not None
    app = create_app(settings, holder)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name="browser-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the test server did not start")
        time.sleep(0.1)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", home, app, tracking_uri)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def browser(live_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class PageErrors:
    """JavaScript errors and dialogs (alert/confirm) seen by a page: a test fails if any appear."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@pytest.fixture
def page(browser):
    """A fresh browser context (no storage carried over) with a desktop viewport."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    context.set_default_timeout(20_000)
    pg = context.new_page()
    pg.errors = PageErrors(pg)
    yield pg
    context.close()


def api(live: LiveServer, method: str, path: str, role: str = "admin", **kwargs):
    """A direct API call (test setup and checks), with the key of ``role``."""
    import httpx

    return httpx.request(method, live.base + path, headers={"X-API-Key": KEYS[role]}, timeout=120, **kwargs)


# ------------------------------------------------------------------ talking to the widget


def expect(locator):
    """Playwright's ``expect``, imported late so the module loads without playwright (tests skip)."""
    from playwright.sync_api import expect as _expect

    return _expect(locator)


def is_message_post(response) -> bool:
    return response.request.method == "POST" and response.url.endswith("/messages")


def say(page, text: str) -> dict:
    """Type ``text`` into the open widget and return the server's reply to it."""
    box = page.get_by_role("textbox", name="输入消息")
    with page.expect_response(is_message_post) as response:
        box.fill(text)
        box.press("Enter")
    assert response.value.ok, response.value.text()
    expect(box).to_have_value("")
    return response.value.json()


def at_time(page, iso: str) -> None:
    """Stamp the widget's conversation requests with a fixed time (business hours are the server's rule)."""
    import json

    def stamp(route):
        body = route.request.post_data_json or {}
        body["timestamp"] = iso
        route.continue_(post_data=json.dumps(body))

    page.route("**/v1/conversations", stamp)
    page.route("**/v1/conversations/*/messages", stamp)
