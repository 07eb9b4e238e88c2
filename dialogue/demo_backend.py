"""A deterministic stand-in for the demo shop's order/refund backend (no database, no randomness).

``lingxi serve`` mounts it at ``/v1/demo-shop`` so the demo flows work end to end over real HTTP;
conversation tests use :func:`transport` (the same answers through an httpx mock transport) or
their own canned replies.

Orders: ids whose digits end in ``0000`` do not exist (404); the last digit picks the state.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import httpx

_STATES = [
    ("已发货", "顺丰速运", "SF", "【北京】快件已到达北京顺义集散中心，正在派送途中"),
    ("运输中", "中通快递", "ZTO", "【上海】快件已从上海转运中心发出，下一站杭州"),
    ("已签收", "京东物流", "JDV", "【广州】您的快件已签收，签收人：本人"),
    ("待发货", "—", "", "商家正在打包，预计24小时内发货"),
    ("派送中", "圆通速递", "YT", "【深圳】快递员正在派送，电话 13800000000"),
]


def order(order_id: str) -> tuple[int, dict[str, Any] | None]:
    digits = re.sub(r"\D", "", order_id)
    if not digits or digits.endswith("0000"):
        return 404, None
    state, carrier, prefix, trace = _STATES[int(digits[-1]) % len(_STATES)]
    tracking = f"{prefix}{digits[-10:].rjust(10, '0')}" if prefix else ""
    return 200, {"order_id": order_id, "status": state, "carrier": carrier, "tracking_no": tracking or "—",
                 "latest_trace": trace}


def refund(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    oid = str(body.get("order_id") or "")
    if not oid:
        return 422, {"error": "order_id required"}
    digest = hashlib.sha1(f"{oid}|{body.get('reason')}".encode()).hexdigest()[:8].upper()
    return 201, {"refund_id": f"RF{digest}", "order_id": oid, "status": "审核中"}


def handle(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any] | None]:
    m = re.search(r"/orders/([^/?#]+)$", path)
    if method == "GET" and m:
        return order(m.group(1))
    if method == "POST" and path.rstrip("/").endswith("/refunds"):
        return refund(body or {})
    return 404, None


def transport() -> httpx.MockTransport:
    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        status, data = handle(request.method, request.url.path, body)
        return httpx.Response(status, json=data if data is not None else {"error": "not found"})

    return httpx.MockTransport(respond)
