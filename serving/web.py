"""The built front-end over HTTP: ``/widget.js`` (the chat widget), ``/demo`` (a demo shop page with the
widget embedded) and ``/console`` (the operator console), with their assets under ``/web/``.

The sources live in ``serving/web/`` and are built by ``make install`` (Vite) into ``serving/web/dist``.
When Node.js was not available the build was skipped: these routes then answer 404 with code
``web_not_built`` and say how to build, while the API works as usual. The pages only call the public
API with the key the visitor or operator gives them; nothing here has privileges of its own.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

from litestar import Request, Response, Router, get
from litestar.datastructures import State
from litestar.static_files import create_static_files_router

from lingxi.nlu.texts import pick_text

from .auth import principal, require
from .errors import ApiError

DIST = Path(__file__).resolve().parent / "web" / "dist"

# The console holds an operator's key: it runs only its own scripts and talks only to this server.
CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
               "form-action 'self'")


def _built(relative: str) -> Path:
    path = DIST / relative
    if not path.is_file():
        raise ApiError(404, "web_not_built",
                       "the web front-end is not built: run `make install` (needs Node.js >= 20.19 and npm)")
    return path


@lru_cache(maxsize=4)
def _gzipped(path: str, mtime_ns: int) -> bytes:
    """The file compressed once per build (the key includes its modification time)."""
    return gzip.compress(Path(path).read_bytes(), 9)


@get("/widget.js", sync_to_thread=False, include_in_schema=False)
def widget_script(request: Request) -> Response[bytes]:
    """The embeddable widget, gzipped when the browser accepts it; a short cache so a rebuilt widget
    reaches shops within minutes."""
    path = _built("widget.js")
    headers = {"Cache-Control": "public, max-age=300", "Vary": "Accept-Encoding",
               "X-Content-Type-Options": "nosniff"}
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        headers["Content-Encoding"] = "gzip"
        body = _gzipped(str(path), path.stat().st_mtime_ns)
    else:
        body = path.read_bytes()
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


def _page(relative: str, csp: str | None = None) -> Response[bytes]:
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "same-origin"}
    if csp:
        headers["Content-Security-Policy"] = csp
    return Response(_built(relative).read_bytes(), media_type="text/html; charset=utf-8", headers=headers)


@get(["/demo", "/demo/"], sync_to_thread=False, include_in_schema=False)
def demo_page() -> Response[bytes]:
    """A demo shop with the widget embedded the way a shop would embed it."""
    return _page("demo/index.html")


@get(["/console", "/console/"], sync_to_thread=False, include_in_schema=False)
def console_page() -> Response[bytes]:
    """The operator console (a single page; it asks for an API key and uses it against the API)."""
    return _page("console/index.html", CONSOLE_CSP)


@get("/v1/session", guards=[require("read")], sync_to_thread=False, tags=["auth"])
def session(request: Request, state: State) -> dict[str, object]:
    """The console's context: who the presented key is (name, role, tenant), which bot this server
    serves, and that bot's intents (name and label, for triage forms). The console shows the role
    and marks what it may not do; the API enforces roles either way."""
    who = principal(request)
    loaded = getattr(getattr(state, "models", None), "current", None)
    intents = [{"name": i.name, "label": pick_text(i.label)} for i in loaded.bundle.intents] if loaded else []
    return {"name": who.name, "role": who.role, "tenant": who.tenant, "bot": state.settings.bot,
            "intents": intents}


web_router = Router(path="/", route_handlers=[
    widget_script, demo_page, console_page, session,
    create_static_files_router(path="/web", directories=[DIST], include_in_schema=False),
])
