"""The chat widget on the demo shop page, in a real Chromium against the real server.

Each test checks what the widget shows against what the API answered in the same run (captured from
the browser's own requests), so nothing here depends on hard-coded bot texts.
"""

from __future__ import annotations

import json
import time

import pytest

pytest.register_assert_rewrite("browser_support")
from browser_support import ARTIFACTS, api, at_time, expect, is_message_post, say, shot, widget_gzip_bytes  # noqa: E402

pytest_plugins = ["browser_support"]  # fixtures: live_server, browser, page

WIDGET = "#lingxi-chat"
MORNING = "2026-11-23T10:00:00+08:00"  # a Monday inside service hours (9:00-22:00)
NIGHT = "2026-11-23T23:00:00+08:00"


def open_widget(page, live, fragment: str = ""):
    page.goto(live.demo_url(fragment))
    page.get_by_role("button", name="打开在线客服").click()
    expect(page.locator(f"{WIDGET} .msg.bot").first).to_be_visible()
    return page.get_by_role("textbox", name="输入消息")


def conversation_id(page) -> str:
    saved = page.evaluate("JSON.parse(sessionStorage.getItem('lingxi-widget:' + location.origin))")
    return saved["conversationId"]


def test_demo_page_loads_the_widget_fast_and_small(page, live_server):
    raw, gz = widget_gzip_bytes()
    page.goto(live_server.demo_url())
    page.wait_for_function("performance.getEntriesByName('lingxi-widget-ready').length > 0")
    ready_ms = page.evaluate("performance.getEntriesByName('lingxi-widget-ready')[0].startTime")
    t0 = time.perf_counter()
    page.get_by_role("button", name="打开在线客服").click()
    expect(page.locator(f"{WIDGET} .msg.bot").first).to_be_visible()
    welcome_ms = (time.perf_counter() - t0) * 1000
    print(f"\nwidget.js: {raw} bytes, {gz} bytes gzipped; demo page: widget interactive {ready_ms:.0f} ms "
          f"after navigation start; click → welcome shown {welcome_ms:.0f} ms")
    shot(page, "widget-welcome")
    metrics = {"widget_js_bytes": raw, "widget_js_gzip_bytes": gz, "widget_ready_ms": round(ready_ms),
               "open_to_welcome_ms": round(welcome_ms)}
    (ARTIFACTS / "widget-metrics.json").write_text(json.dumps(metrics, indent=2))
    assert gz < 30_000, "the widget should stay a small script"
    assert ready_ms < 5_000 and welcome_ms < 5_000
    assert not page.errors.errors


def test_vague_question_offers_options_and_an_option_gets_the_answer(page, live_server):
    open_widget(page, live_server)
    reply = say(page, "我账号出问题了")
    assert reply["decision"] == "clarify"
    options = reply["messages"][-1]["buttons"]
    assert len(options) >= 2
    for option in options:
        expect(page.get_by_role("button", name=option["title"], exact=True)).to_be_enabled()
    chosen = options[0]
    with page.expect_response(is_message_post) as response:
        page.get_by_role("button", name=chosen["title"], exact=True).click()
    answer = response.value.json()
    assert answer["intent"] == chosen["payload"].lstrip("/"), "the option resolves the intent"
    log = page.locator(f"{WIDGET} .log")
    expect(log.locator(".msg.user .bubble").last).to_have_text(chosen["title"])
    for message in answer["messages"]:
        if message.get("text"):
            expect(log.get_by_text(message["text"], exact=True).last).to_be_visible()
    expect(page.get_by_role("button", name=chosen["title"], exact=True).first).to_be_disabled()
    shot(page, "widget-clarify-answer")
    assert not page.errors.errors


def test_typing_shows_article_suggestions_and_opens_one(page, live_server):
    box = open_widget(page, live_server)
    refund = "q=%E9%80%80%E6%AC%BE"  # 退款
    with page.expect_response(lambda r: "/v1/kb/suggest" in r.url and refund in r.url) as response:
        box.press_sequentially("退款", delay=40)
    suggestions = response.value.json()["suggestions"]
    assert suggestions, "the demo knowledge base has refund articles"
    options = page.get_by_role("option")
    expect(options).to_have_count(len(suggestions))
    expect(options.first).to_contain_text(suggestions[0]["text"])
    shot(page, "widget-typeahead")
    box.press("ArrowDown")
    expect(options.first).to_have_attribute("aria-selected", "true")
    first = suggestions[0]
    opened = f"/v1/kb/articles/{first['article_id']}"
    with page.expect_response(lambda r: opened in r.url) as article_response:
        box.press("Enter")
    article = article_response.value.json()
    card = page.locator(f"{WIDGET} article.card").last
    expect(card.locator("h3")).to_have_text(first["title"])
    expect(card.locator(".body")).to_have_text(article["body"])
    with page.expect_response(lambda r: r.url.endswith("/v1/feedback")) as feedback:
        card.get_by_role("button", name="已解决").click()
    assert feedback.value.status == 202
    expect(card).to_contain_text("感谢反馈")
    assert not page.errors.errors


def test_a_shop_event_triggers_a_proactive_message(page, live_server):
    page.goto(live_server.demo_url())
    behaviour_post = lambda r: "/v1/conversations/" in r.url and r.url.endswith("/events")  # noqa: E731
    with page.expect_response(behaviour_post) as response:
        page.get_by_role("button", name="模拟：包裹派送失败").click()
    result = response.value.json()
    assert result["decision"] == "proactive"
    proactive = next(m for m in result["messages"] if m["kind"] == "proactive")
    teaser = page.locator(f"{WIDGET} .teaser")
    expect(teaser).to_contain_text(proactive["text"])
    expect(page.locator(f"{WIDGET} .launcher .badge")).to_be_visible()
    shot(page, "widget-proactive-teaser")
    teaser.get_by_role("button", name=proactive["text"]).click()
    expect(page.locator(f"{WIDGET} .msg.proactive .bubble")).to_have_text(proactive["text"])
    for button in proactive["buttons"]:
        expect(page.get_by_role("button", name=button["title"], exact=True)).to_be_enabled()


def test_dwelling_on_checkout_brings_an_offer_of_help(page, live_server):
    page.clock.install()  # the page's timers run on a clock the test can move
    page.goto(live_server.demo_url("#/checkout"))
    page.wait_for_function("window.LingxiChat !== undefined")
    page.clock.fast_forward(65_000)  # past the 30 s and 60 s dwell checkpoints, with no action on the page
    teaser = page.locator(f"{WIDGET} .teaser")
    expect(teaser).to_be_visible()
    tracker = api(live_server, "GET", f"/v1/conversations/{conversation_id(page)}?events=all").json()
    fired = [e["trigger"] for e in tracker["events"] if e["event"] == "trigger"]
    said = [e["text"] for e in tracker["events"] if e["event"] == "bot" and e.get("kind") == "proactive"]
    assert fired and said
    dwells = [e for e in tracker["events"] if e["event"] == "behaviour" and e["kind"] == "dwell"]
    assert dwells and dwells[-1]["page"] == "/checkout" and dwells[-1]["seconds"] >= 60
    expect(teaser).to_contain_text(said[-1])
    shot(page, "widget-proactive-checkout")


def test_a_help_question_gets_an_article_card_and_a_vote_is_stored_for_it(page, live_server):
    at_time(page, MORNING)
    open_widget(page, live_server)
    reply = say(page, "如何关闭App推送和短信通知")
    assert reply["decision"] == "knowledge", reply["trace"]
    card_sent = next(m["article"] for m in reply["messages"] if m.get("article"))
    card = page.locator(f"{WIDGET} article.card[data-article-id='{card_sent['id']}']").last
    expect(card.locator("h3")).to_have_text(card_sent["title"])
    with page.expect_response(lambda r: f"/v1/kb/articles/{card_sent['id']}" in r.url):
        card.get_by_role("button", name="查看全文").click()
    with page.expect_response(lambda r: r.url.endswith("/v1/feedback")  # not the click's own report
                              and '"vote"' in (r.request.post_data or "")) as feedback:
        card.get_by_role("button", name="未解决").click()
    assert feedback.value.status == 202
    sent = json.loads(feedback.value.request.post_data)["events"]
    vote = next(e for e in sent if e["type"] == "vote")
    assert vote["article_id"] == card_sent["id"] and vote["resolved"] is False
    assert vote["search_id"] == card_sent["search_id"], "the vote counts against the bot's own impression"
    store = live_server.app.state.events
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server's impression goes through its event writer
        stored = store.query("default", types=["vote", "impression"])
        kinds = {(e.type, e.payload.article_id, e.payload.search_id) for e in stored}
        if {("vote", card_sent["id"], card_sent["search_id"]),
                ("impression", card_sent["id"], card_sent["search_id"])} <= kinds:
            break
        time.sleep(0.2)
    assert ("vote", card_sent["id"], card_sent["search_id"]) in kinds
    assert ("impression", card_sent["id"], card_sent["search_id"]) in kinds
    kb = live_server.app.state.kb
    kb.feedback.advance()
    assert kb.feedback.stats(card_sent["id"]).not_resolved == 1, "a vote on a card the server showed counts"
    shot(page, "widget-article-answer-vote")
    assert not page.errors.errors


def test_idling_after_an_answer_never_shows_a_handoff_notice(page, live_server):
    page.clock.install()
    at_time(page, MORNING)
    open_widget(page, live_server)
    say(page, "支持哪些支付方式")
    page.clock.fast_forward(65_000)  # dwell and idle reports go out; none of them says anything
    page.wait_for_timeout(500)
    expect(page.locator(f"{WIDGET} .state")).to_be_hidden()
    expect(page.locator(f"{WIDGET} .msg.system")).to_have_count(0)
    assert page.locator(f"{WIDGET} .panel").get_attribute("data-mode") == "bot"


def test_at_night_a_question_during_the_message_step_is_answered(page, live_server):
    at_time(page, NIGHT)
    open_widget(page, live_server)
    first = say(page, "转人工")
    reply = first if first["active_flow"] == "leave_message" else say(page, "转人工")
    assert reply["active_flow"] == "leave_message"
    answer = say(page, "How do I get an invoice?")
    assert answer["decision"] in ("answer", "knowledge") and answer["active_flow"] == "leave_message", answer["trace"]
    texts = [m["text"] for m in answer["messages"] if m.get("text")]
    assert texts and all(not any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts), texts
    log = page.locator(f"{WIDGET} .log")
    expect(log.get_by_text(texts[0], exact=True).last).to_be_visible()
    shot(page, "widget-offhours-question-answered")


def test_asking_for_a_human_shows_the_handoff_state(page, live_server):
    at_time(page, MORNING)
    open_widget(page, live_server)
    first = say(page, "转人工")
    reply = first if first["handoff"] else say(page, "转人工")  # self-service first: the second ask is honoured
    assert reply["handoff"]["mode"] == "live"
    state = page.locator(f"{WIDGET} .state")
    expect(state).to_contain_text("正在为您转接人工客服，已等待")
    silent = say(page, "你好，还在吗")
    assert silent["silent"] is True
    # honest: the message went to the agents; nobody claims an agent is already there
    expect(page.locator(f"{WIDGET} .msg.system").last).to_contain_text("已转给人工客服，客服接入后")
    shot(page, "widget-handoff-live")


def test_asking_for_a_human_at_night_offers_to_leave_a_message(page, live_server):
    at_time(page, NIGHT)
    open_widget(page, live_server)
    first = say(page, "转人工")
    reply = first if first["active_flow"] == "leave_message" else say(page, "转人工")
    assert reply["active_flow"] == "leave_message"
    state = page.locator(f"{WIDGET} .state")
    expect(state).to_contain_text("非工作时间")
    say(page, "我的订单三天了还没发货，麻烦尽快处理")
    done = say(page, "13800138000")
    assert done["handoff"]["mode"] == "message"
    expect(state).to_contain_text("留言已提交")
    shot(page, "widget-handoff-offline")


def test_markup_is_shown_as_text_and_never_runs(page, live_server):
    evil = '<img src=x onerror="window.__lingxi_xss=1;alert(1)">'
    created = api(live_server, "POST", "/v1/kb/articles", role="editor", json={
        "title": f"{evil}标题", "body": f"<script>window.__lingxi_xss=2</script>{evil}",
        "variants": ["怎么注入脚本测试"]}).json()
    for status in ("in_review", "published"):
        created = api(live_server, "POST", f"/v1/kb/articles/{created['id']}/status", role="reviewer",
                      json={"status": status, "version": created["version"]}).json()
    box = open_widget(page, live_server)
    say(page, evil)
    expect(page.locator(f"{WIDGET} .msg.user .bubble").last).to_have_text(evil)
    box.press_sequentially("怎么注入脚本", delay=30)
    option = page.get_by_role("option").filter(has_text="onerror")
    expect(option.first).to_contain_text(evil)
    option.first.click()
    card = page.locator(f"{WIDGET} article.card").last
    expect(card.locator("h3")).to_have_text(f"{evil}标题")
    expect(card.locator(".body")).to_contain_text("<script>")
    shot(page, "widget-markup-as-text")
    assert page.locator(f"{WIDGET} img, {WIDGET} script").count() == 0
    assert page.evaluate("window.__lingxi_xss") is None
    assert not page.errors.dialogs and not page.errors.errors


def test_a_very_long_message_is_refused_before_sending_and_kept(page, live_server):
    box = open_widget(page, live_server)
    sent = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/messages") else None)
    long_text = "我想问一下退款的问题" * 250  # 2,500 characters; the server's limit is 2,000
    box.fill(long_text)
    box.press("Enter")
    expect(page.locator(f"{WIDGET} .status")).to_contain_text("消息太长")
    expect(box).to_have_value(long_text)
    expect(page.locator(f"{WIDGET} .counter")).to_contain_text("2500 / 2000")
    assert sent == []


def test_server_down_keeps_the_typed_text_and_retry_sends_it(page, live_server):
    box = open_widget(page, live_server)
    page.route("**/v1/conversations/*/messages", lambda route: route.abort("connectionrefused"))
    box.fill("我要退款")
    box.press("Enter")
    status = page.locator(f"{WIDGET} .status")
    expect(status).to_contain_text("消息没有发出去")
    expect(box).to_have_value("我要退款")
    expect(page.locator(f"{WIDGET} .msg.user")).to_have_count(0)
    shot(page, "widget-server-down")
    page.unroute("**/v1/conversations/*/messages")
    with page.expect_response(is_message_post) as response:
        status.get_by_role("button", name="重试").click()
    assert response.value.ok
    expect(box).to_have_value("")
    expect(page.locator(f"{WIDGET} .msg.user .bubble")).to_have_text(["我要退款"])
    expect(status).to_be_hidden()


def test_a_slow_server_says_so_and_the_reply_still_arrives(page, live_server):
    box = open_widget(page, live_server)
    held = []
    page.route("**/v1/conversations/*/messages", lambda route: held.append(route))  # held until released
    box.fill("物流到哪了")
    box.press("Enter")
    status = page.locator(f"{WIDGET} .status")
    expect(status).to_contain_text("网络有点慢", timeout=10_000)
    expect(box).to_have_value("物流到哪了")
    with page.expect_response(is_message_post):
        held[0].continue_()
    expect(box).to_have_value("")
    expect(status).to_be_hidden()


def test_the_server_unreachable_when_opening_offers_a_retry(page, live_server):
    page.goto(live_server.demo_url())
    page.route("**/v1/conversations", lambda route: route.abort("connectionrefused"))
    page.get_by_role("button", name="打开在线客服").click()
    status = page.locator(f"{WIDGET} .status")
    expect(status).to_contain_text("暂时连不上")
    page.unroute("**/v1/conversations")
    status.get_by_role("button", name="重试").click()
    expect(page.locator(f"{WIDGET} .msg.bot").first).to_be_visible()
    expect(status).to_be_hidden()


def test_phone_sized_and_keyboard_only(browser, live_server):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    try:
        pg.goto(live_server.demo_url())
        launcher = pg.get_by_role("button", name="打开在线客服")
        launcher.focus()
        pg.keyboard.press("Enter")
        panel = pg.get_by_role("dialog", name="灵犀智能客服")
        expect(panel).to_be_visible()
        box = panel.bounding_box()
        assert box["width"] == 375 and box["height"] == 740, "the chat fills a phone screen"
        active = "document.querySelector('#lingxi-chat').shadowRoot.activeElement?.getAttribute('aria-label')"
        assert "输入消息" in pg.evaluate(active)
        pg.keyboard.type("你好")
        pg.keyboard.press("Enter")
        expect(pg.locator(f"{WIDGET} .msg.user .bubble").last).to_have_text("你好")
        shot(pg, "widget-phone")
        pg.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        assert "打开在线客服" in pg.evaluate(active)
    finally:
        context.close()


def test_the_survey_is_sent_as_csat_feedback(page, live_server):
    open_widget(page, live_server)
    say(page, "发货后多久能到")
    cid = conversation_id(page)
    page.get_by_role("button", name="结束对话").click()
    survey = page.get_by_role("form", name="请为本次服务打分")
    expect(survey).to_be_visible()
    page.keyboard.press("ArrowRight")  # the first star has focus; arrows move along the radio group
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    survey.get_by_placeholder("还有什么想告诉我们的？").fill("回答很快，但是物流太慢了")
    with page.expect_response(lambda r: r.url.endswith("/v1/events")) as response:
        survey.get_by_role("button", name="提交评价").click()
    report = response.value.json()
    assert report["accepted"] == 1, report
    expect(page.locator(f"{WIDGET} .msg.system").last).to_have_text("感谢您的评价！")
    shot(page, "widget-survey-done")
    sent = json.loads(response.value.request.post_data)["events"][0]
    assert sent["type"] == "csat" and sent["conversation_id"] == cid
    assert sent["payload"] == {"stars": 4, "text": "回答很快，但是物流太慢了"}
    summary = api(live_server, "GET", "/v1/insights/csat", role="editor").json()["data"][0]
    assert summary["stars"].get("4", 0) >= 1, "the rating is in the insights"

