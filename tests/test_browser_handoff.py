"""A handoff that reaches a human, in a real Chromium against the real server: a shopper asks for a
human in service hours, an agent answers from the console's inbox, the reply appears in the widget
without a reload (within 2 s), the agent releases, and the bot answers the next question."""

from __future__ import annotations

import time

import pytest

pytest.register_assert_rewrite("browser_support")
from browser_support import KEYS, at_time, expect, say, shot  # noqa: E402

pytest_plugins = ["browser_support"]  # fixtures: live_server, browser, page

WIDGET = "#lingxi-chat"
MORNING = "2026-11-23T10:00:00+08:00"  # a Monday inside service hours (9:00-22:00)


def test_an_agent_answers_from_the_inbox_and_the_widget_shows_it_live(page, browser, live_server):
    at_time(page, MORNING)
    page.goto(live_server.demo_url())
    page.get_by_role("button", name="打开在线客服").click()
    expect(page.locator(f"{WIDGET} .msg.bot").first).to_be_visible()
    first = say(page, "转人工")
    reply = first if first["handoff"] else say(page, "转人工")  # self-service first: the second ask is honoured
    assert reply["handoff"]["mode"] == "live"
    cid = reply["conversation_id"]
    state = page.locator(f"{WIDGET} .state")
    expect(state).to_contain_text("正在为您转接人工客服，已等待")  # honest: waiting, not "connected"

    agent_ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    agent_ctx.set_default_timeout(20_000)
    console = agent_ctx.new_page()
    try:
        console.goto(f"{live_server.base}/console")
        console.get_by_label("API 密钥 API key").fill(KEYS["agent"])
        console.get_by_role("button", name="进入 Sign in").click()
        expect(console.locator(".who")).to_contain_text(" agent ")
        expect(console.locator("nav a")).to_have_count(1)  # an agent key sees only the inbox
        item = console.locator(f'.inbox-queue a[data-conversation="{cid}"]')
        expect(item).to_be_visible()
        expect(item).to_contain_text("等待")
        item.click()
        expect(console.locator(".inbox-detail h2")).to_have_text(cid)
        expect(console.locator(".inbox-transcript")).to_contain_text("转人工")
        shot(console, "inbox-conversation")

        console.get_by_label("回复 Reply").fill("您好，我是客服小李，马上为您处理")
        sent = time.monotonic()
        console.get_by_role("button", name="发送 Send").click()
        agent_line = page.locator(f"{WIDGET} .msg.agent")
        expect(agent_line).to_contain_text("您好，我是客服小李，马上为您处理", timeout=2000)
        shown_s = time.monotonic() - sent
        print(f"\nagent reply shown in the widget {shown_s * 1000:.0f} ms after Send")
        assert shown_s < 2.0
        expect(state).to_have_text("人工客服已接入")
        shot(page, "widget-agent-reply")

        silent = say(page, "好的，我的订单号是20231124001")
        assert silent["silent"] is True and silent["messages"] == []
        expect(console.locator(".inbox-transcript")).to_contain_text("我的订单号是20231124001")  # live, no reload

        console.get_by_placeholder("备注（选填）Note").fill("已处理")
        console.get_by_role("button", name="交还机器人 Release to the bot").click()
        expect(page.locator(f"{WIDGET} .msg.system").last).to_contain_text("人工客服已结束服务", timeout=3000)
        assert page.locator(f"{WIDGET} .panel").get_attribute("data-mode") == "bot"
        expect(console.locator(f'.inbox-queue a[data-conversation="{cid}"]')).to_have_count(0)

        answer = say(page, "运费怎么算")
        assert not answer.get("silent") and answer["messages"], answer
        text = next(m["text"] for m in answer["messages"] if m.get("text"))
        expect(page.locator(f"{WIDGET} .msg.bot").last).to_contain_text(text[:10])
        shot(page, "widget-after-release")
    finally:
        agent_ctx.close()
    assert not page.errors.errors, page.errors.errors


def test_a_long_wait_with_no_agent_offers_to_leave_a_message(page, live_server):
    at_time(page, MORNING)
    page.goto(live_server.demo_url())
    page.get_by_role("button", name="打开在线客服").click()
    first = say(page, "转人工")
    reply = first if first["handoff"] else say(page, "转人工")
    assert reply["handoff"]["mode"] == "live"
    state = page.locator(f"{WIDGET} .state")
    expect(state).to_contain_text("已等待")
    # the visitor has waited longer than the server's handoff_agent_wait_s (120 s by default): the
    # widget keeps when the wait began, so a reload shows the same wait
    page.evaluate("""() => {
        const key = 'lingxi-widget:' + location.origin;
        const saved = JSON.parse(sessionStorage.getItem(key));
        saved.liveSince = Date.now() - 130000;
        sessionStorage.setItem(key, JSON.stringify(saved));
    }""")
    page.reload()
    page.get_by_role("button", name="打开在线客服").click()
    expect(state).to_contain_text("客服暂时繁忙")
    state.get_by_role("button", name="留言").click()
    expect(page.locator(f"{WIDGET} .msg.system").last).to_contain_text("请直接留下您的问题和联系方式")
    left = say(page, "我的快递丢了，电话13800138000")
    assert left["silent"] is True  # kept for the agents (and announced to the platform), not answered by the bot
    expect(state).to_contain_text("已为您留言")
    shot(page, "widget-wait-leave-message")
    assert not page.errors.errors, page.errors.errors
