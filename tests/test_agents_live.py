"""Agent in and live updates through the real app served by uvicorn (real sockets, so a stream can
be cut and resumed): agent messages with their 403/404/409 cases, release with a note, the SSE
stream under 100 reconnects, and long polling."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from handoff_support import free_port

from lingxi.dialogue.events import HandedOff, SessionStarted, TurnDecided, UserUttered
from lingxi.dialogue.tenancy import tenant_scope
from lingxi.dialogue.tracker import Tracker
from lingxi.serving.capabilities import mint_conversation_token

KEYS = {"read": "site-key-agents-test", "agent": "agent-key-agents-test", "editor": "editor-key-agents-test",
        "shop2-agent": "agent-key-shop2-agents-test"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, object]]:
    import uvicorn

    from lingxi.serving.app import create_app
    from lingxi.serving.settings import ApiKey, Settings

    home = tmp_path_factory.mktemp("agents-home")
    port = free_port()
    keys = [ApiKey(name="site", role="read", key=KEYS["read"]), ApiKey(name="小王", role="agent", key=KEYS["agent"]),
            ApiKey(name="owner", role="editor", key=KEYS["editor"]),
            ApiKey(name="shop2-agent", role="agent", tenant="shop2", key=KEYS["shop2-agent"])]
    settings = Settings(home=str(home), port=port, kb_seed_demo=False, rate_limit_per_s=0, api_keys=keys,
                        log_level="WARNING", handoff_agent_wait_s=90)
    app = create_app(settings)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(30)


def seed(app, cid: str, tenant: str = "default", held: bool = True) -> None:
    """A conversation as the policy leaves it after a live handoff (or, ``held=False``, with the bot)."""
    now = time.time()
    t = Tracker(cid)
    t.extend([SessionStarted(ts=now, channel="web"), UserUttered(ts=now, text="我要投诉你们的快递")])
    if held:
        t.append(HandedOff(ts=now, reason="explicit_request", skill_group="logistics", priority="high",
                           summary="【投诉】快递"))
    t.append(TurnDecided(ts=now, decision="handoff" if held else "answer"))
    with tenant_scope(tenant):
        app.state.dialogue.engine.store.save(t)
        TOKENS[cid] = mint_conversation_token(app.state.dialogue.engine.store, cid)  # as the open returns it


TOKENS: dict[str, str] = {}  # conversation id -> the token its opener (the widget) holds


def call(base, method, path, role="agent", token=None, **kw):
    """A request with ``role``'s key; a site key (``read``) also presents the conversation's token."""
    headers = {"X-API-Key": KEYS[role]}
    cid = path.split("/")[3] if path.startswith("/v1/conversations/") else None
    token = token or (TOKENS.get(cid) if role == "read" else None)
    if token:
        headers["X-Conversation-Token"] = token
    return httpx.request(method, base + path, headers=headers, timeout=30, **kw)


def test_agent_messages_and_their_errors(server):
    base, app = server
    seed(app, "ag-held")
    seed(app, "ag-bot", held=False)
    seed(app, "ag-other", tenant="shop2")
    path = "/v1/conversations/{}/agent-messages"
    r = call(base, "POST", path.format("ag-held"), json={"text": "您好，我是客服小王", "message_id": "m1"})
    assert r.status_code == 201 and r.json()["duplicate"] is False, r.text
    again = call(base, "POST", path.format("ag-held"), json={"text": "您好，我是客服小王", "message_id": "m1"})
    assert again.status_code == 201 and again.json() == {**r.json(), "duplicate": True}
    got = call(base, "GET", "/v1/conversations/ag-held/events", role="read", params={"after": -1, "wait": 0}).json()
    agents = [e for e in got["events"] if e["type"] == "agent"]
    assert [(a["text"], a["agent"]) for a in agents] == [("您好，我是客服小王", "小王")]
    assert got["state"] == {"held_by": "human", "since": got["state"]["since"], "agent_joined": True,
                            "agent_wait_s": 90.0}

    def code(resp):
        return resp.status_code, resp.json()["error"]["code"]

    assert code(call(base, "POST", path.format("ag-bot"), json={"text": "hi"})) == (409, "bot_holds_conversation")
    assert code(call(base, "POST", path.format("nope"), json={"text": "hi"})) == (404, "conversation_not_found")
    assert code(call(base, "POST", path.format("ag-other"), json={"text": "hi"})) == (403, "other_tenant")
    assert code(call(base, "POST", path.format("ag-held"), role="read", json={"text": "hi"})) == (403, "forbidden")
    assert call(base, "POST", path.format("ag-held"), json={"text": "  "}).status_code == 422
    assert call(base, "POST", path.format("ag-held"), json={"text": "x", "bogus": 1}).status_code == 400
    other = call(base, "POST", path.format("ag-other"), role="shop2-agent", json={"text": "shop2 here"})
    assert other.status_code == 201  # the other tenant's agent reaches its own conversation

    taken = call(base, "POST", path.format("ag-bot"), json={"text": "我来帮您", "take_over": True})
    assert taken.status_code == 201 and taken.json()["took_over"] is True
    inbox = call(base, "GET", "/v1/inbox").json()["items"]
    assert {i["conversation_id"] for i in inbox} >= {"ag-held", "ag-bot"}
    assert "ag-other" not in {i["conversation_id"] for i in inbox}
    held = next(i for i in inbox if i["conversation_id"] == "ag-held")
    assert held["priority"] == "high" and held["skill_group"] == "logistics" and held["summary"] == "【投诉】快递"
    assert held["last_user_text"] == "我要投诉你们的快递" and held["waiting_s"] >= 0
    detail = call(base, "GET", "/v1/inbox/ag-held").json()
    assert [e["type"] for e in detail["events"]] == ["user", "handoff", "agent"]
    assert call(base, "GET", "/v1/inbox", role="read").status_code == 403

    rel = call(base, "POST", "/v1/conversations/ag-held/release", json={"note": "已登记赔付"})
    assert rel.status_code == 200 and rel.json()["decision"] == "released"
    assert code(call(base, "POST", path.format("ag-held"), json={"text": "还在吗"})) == (409, "bot_holds_conversation")
    after = call(base, "GET", "/v1/conversations/ag-held/events", role="read", params={"after": 4, "wait": 0}).json()
    assert after["events"][-1]["type"] == "release" and after["events"][-1]["note"] == "已登记赔付"
    assert after["state"]["held_by"] == "bot"
    assert "ag-held" not in {i["conversation_id"] for i in call(base, "GET", "/v1/inbox").json()["items"]}


def _frames(response, limit: int) -> Iterator[tuple[int | None, str]]:
    """SSE frames ``(id, data)`` as a browser's EventSource parses them, at most ``limit`` with an id."""
    seen = 0
    ident, data = None, []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield ident, "\n".join(data)
                if ident is not None:
                    seen += 1
                    if seen >= limit:
                        return
            ident, data = None, []
        elif line.startswith("id:"):
            ident = int(line[3:].strip())
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def test_the_stream_survives_100_reconnects_without_duplicates_or_gaps(server):
    import json

    base, app = server
    seed(app, "sse-1")
    sent: list[str] = []
    stop = threading.Event()

    def agent_writes():
        n = 0
        while not stop.is_set() and n < 400:
            text = f"客服消息 {n}"
            r = call(base, "POST", "/v1/conversations/sse-1/agent-messages", json={"text": text})
            assert r.status_code == 201, r.text
            sent.append(text)
            n += 1
            time.sleep(0.01)

    writer = threading.Thread(target=agent_writes, daemon=True)
    writer.start()
    rng = random.Random(17)
    received: list[tuple[int, str]] = []
    last: int | None = None
    states = 0
    try:
        with httpx.Client(timeout=30, headers={"X-API-Key": KEYS["read"],
                                               "X-Conversation-Token": TOKENS["sse-1"]}) as client:
            for _ in range(100):
                headers = {"Last-Event-ID": str(last)} if last is not None else {}
                with client.stream("GET", base + "/v1/conversations/sse-1/stream", headers=headers) as r:
                    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                    for ident, data in _frames(r, rng.randint(1, 5)):
                        item = json.loads(data)
                        if ident is None:
                            assert item["type"] == "state"
                            states += 1
                            continue
                        assert ident == item["seq"]
                        last = ident
                        if item["type"] == "agent":
                            received.append((ident, item["text"]))
                # leaving the block closes the connection mid-stream: the next loop resumes
    finally:
        stop.set()
        writer.join(30)
    rest = call(base, "GET", "/v1/conversations/sse-1/events", role="read", params={"after": last, "wait": 0}).json()
    received += [(e["seq"], e["text"]) for e in rest["events"] if e["type"] == "agent"]
    seqs = [s for s, _ in received]
    assert seqs == sorted(set(seqs))  # no duplicate, in order
    assert [t for _, t in received] == sent  # nothing missing
    assert len(sent) >= 100 and states >= 100


def test_long_polling_returns_as_soon_as_an_agent_writes(server):
    base, app = server
    seed(app, "lp-1")
    start = call(base, "GET", "/v1/conversations/lp-1/events", role="read", params={"wait": 0}).json()
    timer = threading.Timer(0.5, lambda: call(base, "POST", "/v1/conversations/lp-1/agent-messages",
                                              json={"text": "马上为您处理"}))
    timer.start()
    began = time.monotonic()
    got = call(base, "GET", "/v1/conversations/lp-1/events", role="read",
               params={"after": start["last_seq"], "wait": 10}).json()
    assert time.monotonic() - began < 3
    assert [e["text"] for e in got["events"]] == ["马上为您处理"]
    # a site key reads only the conversation it opened, and cannot tell which other ids exist
    seed(app, "lp-2")
    for cid, token in (("nope", None), ("lp-1", None), ("lp-1", TOKENS["lp-2"])):
        for suffix in ("events", "stream"):
            r = call(base, "GET", f"/v1/conversations/{cid}/{suffix}", role="read", token=token or "forged",
                     params={"wait": 0})
            assert r.status_code == 403 and r.json()["error"]["code"] == "conversation_forbidden", (cid, suffix, r.text)
    assert call(base, "GET", "/v1/conversations/nope/events", role="agent").status_code == 404
    assert call(base, "GET", "/v1/conversations/lp-1/events", role="read", params={"wait": 99}).status_code == 400
    bad = httpx.get(base + "/v1/conversations/lp-1/stream", headers={"X-API-Key": KEYS["read"],
                                                                      "X-Conversation-Token": TOKENS["lp-1"],
                                                                      "Last-Event-ID": "abc"}, timeout=10)
    assert bad.status_code == 422
