"""A real local webhook receiver for the handoff tests: verifies signatures, deduplicates by event
id, can fail a share of its requests and be restarted on the same port."""

from __future__ import annotations

import http.server
import socket
import threading
from collections import Counter

import msgspec

from lingxi.serving.handoff_out import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """``fail_every``: answer 503 to every n-th request (before looking at it); 0 never."""

    def __init__(self, secrets: dict[str, str], fail_every: int = 0, port: int | None = None) -> None:
        self.secrets = secrets
        self.fail_every = fail_every
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.requests = 0
        self.failed = 0
        self.bad_signatures = 0
        self.accepted: Counter[str] = Counter()  # 2xx answers per event id
        self.first: dict[str, dict] = {}  # event id -> body, the first time it was seen
        self.order: list[str] = []  # event ids in the order first seen
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests += 1
                    fail = receiver.fail_every and receiver.requests % receiver.fail_every == 0
                    if fail:
                        receiver.failed += 1
                if fail:
                    return self._answer(503)
                try:
                    body = msgspec.json.decode(raw)
                    secret = receiver.secrets[body["tenant"]]
                except (msgspec.DecodeError, KeyError, TypeError):
                    return self._answer(400)
                ok = verify(secret, raw, self.headers.get(SIGNATURE_HEADER, ""), self.headers.get(TIMESTAMP_HEADER, ""))
                if not ok or self.headers.get(EVENT_ID_HEADER) != body.get("event_id"):
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    return self._answer(401)
                with receiver.lock:
                    eid = body["event_id"]
                    if eid not in receiver.first:
                        receiver.first[eid] = body
                        receiver.order.append(eid)
                    receiver.accepted[eid] += 1
                return self._answer(200)

            def _answer(self, code: int):
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
