"""Backend actions: an HTTP call to the shop's system with a hard deadline, and text templates.

The call runs on a small worker pool and the caller waits at most ``timeout`` seconds for it —
httpx's own timeouts are per connect/read/write, so a server that trickles bytes could otherwise
hold a conversation much longer. A late reply is dropped; the customer gets the action's fallback
text within its timeout.
"""

from __future__ import annotations

import concurrent.futures as cf
import re
from dataclasses import dataclass
from typing import Any

import httpx

from lingxi.datasets.dialogue_files import ActionSpec

_VAR = re.compile(r"\{(\w+)(?:\|(\w+))?\}")


def mask(value: Any) -> str:
    s = str(value)
    if "@" in s:
        name, _, domain = s.partition("@")
        return f"{name[:1]}***@{domain}"
    if len(s) >= 7:
        return f"{s[:3]}****{s[-4:]}"
    return s


def render(text: str, values: dict[str, Any]) -> str:
    """``{slot}`` and ``{slot|mask}``; unknown names render empty."""

    def sub(m: re.Match[str]) -> str:
        value = values.get(m.group(1))
        if value is None:
            return ""
        if m.group(2) == "mask":
            return mask(value)
        if isinstance(value, bool):
            return "是" if value else "否"
        return str(value)

    return _VAR.sub(sub, text)


def _render_json(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _VAR.fullmatch(value)
        if whole and not whole.group(2):
            return values.get(whole.group(1))
        return render(value, values)
    if isinstance(value, dict):
        return {k: _render_json(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, values) for v in value]
    return value


def dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    status: int | None = None
    data: Any = None
    error: str | None = None

    @property
    def not_found(self) -> bool:
        return self.status == 404


class ActionClient:
    """Runs :class:`ActionSpec` calls. ``transport`` lets tests stand in for the shop's backend."""

    def __init__(self, base_url: str = "", transport: httpx.BaseTransport | None = None, max_workers: int = 8) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(transport=transport, follow_redirects=False)
        self._pool = cf.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lingxi-action")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def call(self, spec: ActionSpec, slots: dict[str, Any]) -> ActionResult:
        values = {**slots, "base_url": self.base_url}
        url = render(spec.url, values)
        body = _render_json(spec.body, values) if spec.body is not None else None
        future = self._pool.submit(self._request, spec, url, body)
        try:
            return future.result(timeout=spec.timeout)
        except cf.TimeoutError:
            future.cancel()
            return ActionResult(False, error="timeout")

    def _request(self, spec: ActionSpec, url: str, body: Any) -> ActionResult:
        try:
            resp = self._client.request(spec.method, url, json=body, headers=spec.headers, timeout=spec.timeout)
        except httpx.TimeoutException:
            return ActionResult(False, error="timeout")
        except httpx.HTTPError as exc:
            return ActionResult(False, error=f"{type(exc).__name__}: {exc}"[:200])
        if resp.status_code == 404:
            return ActionResult(True, 404, None)
        if not 200 <= resp.status_code < 300:
            return ActionResult(False, resp.status_code, error=f"HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError:
            return ActionResult(False, resp.status_code, error="reply is not JSON")
        return ActionResult(True, resp.status_code, data)
