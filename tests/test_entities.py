"""Entity extraction: every built-in type, span integrity, ambiguity rules, robustness, speed.

``NOW`` is Tuesday 2026-11-24 10:00 in Asia/Shanghai; every expected date below is relative to it.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import FrozenInstanceError, asdict
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from lingxi.nlu.entities import Entity, EntityExtractor

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=SH)
assert NOW.weekday() == 1  # a Tuesday


@pytest.fixture(scope="module")
def ex() -> EntityExtractor:
    return EntityExtractor()


def run(ex: EntityExtractor, text: str, now: datetime = NOW) -> list[Entity]:
    """Extract and check the invariants every result must satisfy."""
    ents = ex.extract(text, now=now)
    last_end = 0
    for e in ents:
        assert text[e.start:e.end] == e.text, e
        assert e.start >= last_end, f"overlap or unsorted: {ents}"
        assert 0.0 < e.confidence <= 1.0
        last_end = e.end
        json.dumps(asdict(e))  # values must be JSON-serialisable
    return ents


def only(ex: EntityExtractor, text: str, kind: str, now: datetime = NOW) -> list[Entity]:
    return [e for e in run(ex, text, now) if e.entity == kind]


def one(ex: EntityExtractor, text: str, kind: str, now: datetime = NOW) -> Entity:
    found = only(ex, text, kind, now)
    assert len(found) == 1, f"{text!r}: expected one {kind}, got {run(ex, text, now)}"
    return found[0]


# ----------------------------------------------------------------------------- the dataclass


def test_entity_is_frozen_and_defaults() -> None:
    e = Entity("phone", "13812345678", "13812345678", 0, 11)
    assert e.confidence == 1.0 and e.extractor == "rules"
    with pytest.raises(FrozenInstanceError):
        e.start = 3  # type: ignore[misc]


# ----------------------------------------------------------------------------- datetime

DATETIMES = [
    # text, surface, ISO value, grain
    ("明天下午三点", "明天下午三点", "2026-11-25T15:00:00+08:00", "hour"),
    ("后天", "后天", "2026-11-26T00:00:00+08:00", "day"),
    ("上周五", "上周五", "2026-11-20T00:00:00+08:00", "day"),
    ("下周一上午10点半", "下周一上午10点半", "2026-11-30T10:30:00+08:00", "minute"),
    ("3月5号", "3月5号", "2027-03-05T00:00:00+08:00", "day"),  # nearest: 101 days ahead vs 264 back
    ("11月20号", "11月20号", "2026-11-20T00:00:00+08:00", "day"),  # nearest: 4 days back
    ("2024年3月5日", "2024年3月5日", "2024-03-05T00:00:00+08:00", "day"),
    ("二〇二四年三月五日", "二〇二四年三月五日", "2024-03-05T00:00:00+08:00", "day"),
    ("12月31日晚上8点", "12月31日晚上8点", "2026-12-31T20:00:00+08:00", "hour"),
    ("十二月三十一日", "十二月三十一日", "2026-12-31T00:00:00+08:00", "day"),
    ("今晚8点", "今晚8点", "2026-11-24T20:00:00+08:00", "hour"),
    ("明天3点", "明天3点", "2026-11-25T15:00:00+08:00", "hour"),  # 1-6 without am/pm: afternoon
    ("明天8点", "明天8点", "2026-11-25T08:00:00+08:00", "hour"),
    ("今天凌晨3点", "今天凌晨3点", "2026-11-24T03:00:00+08:00", "hour"),
    ("晚上12点", "晚上12点", "2026-11-25T00:00:00+08:00", "hour"),
    ("半夜2点", "半夜2点", "2026-11-25T02:00:00+08:00", "hour"),
    ("中午1点", "中午1点", "2026-11-24T13:00:00+08:00", "hour"),
    ("三点一刻", "三点一刻", "2026-11-24T15:15:00+08:00", "minute"),
    ("请在下午3点15分前送达", "下午3点15分", "2026-11-24T15:15:00+08:00", "minute"),
    ("14:30前送到", "14:30", "2026-11-24T14:30:00+08:00", "minute"),
    ("周一到周五", "周一", "2026-11-23T00:00:00+08:00", "day"),  # calendar week: this Monday
    ("周日", "周日", "2026-11-29T00:00:00+08:00", "day"),
    ("星期天下午", "星期天下午", "2026-11-29T13:00:00+08:00", "part_of_day"),
    ("下周末", "下周末", "2026-12-05T00:00:00+08:00", "day"),
    ("下周", "下周", "2026-11-30T00:00:00+08:00", "week"),
    ("下个月5号", "下个月5号", "2026-12-05T00:00:00+08:00", "day"),
    ("明年3月5号", "明年3月5号", "2027-03-05T00:00:00+08:00", "day"),
    ("24年3月", "24年3月", "2024-03-01T00:00:00+08:00", "month"),
    ("2024年", "2024年", "2024-01-01T00:00:00+08:00", "year"),
    ("20号", "20号", "2026-11-20T00:00:00+08:00", "day"),
    ("截止到5日", "5日", "2026-12-05T00:00:00+08:00", "day"),  # at the very end of the text
    ("三天后", "三天后", "2026-11-27T00:00:00+08:00", "day"),
    ("半小时后", "半小时后", "2026-11-24T10:30:00+08:00", "minute"),
    ("一个半小时后", "一个半小时后", "2026-11-24T11:30:00+08:00", "minute"),
    ("两周前", "两周前", "2026-11-10T00:00:00+08:00", "day"),
    ("2024-03-05 14:00", "2024-03-05 14:00", "2024-03-05T14:00:00+08:00", "minute"),
    ("2024/3/5 下午3点", "2024/3/5 下午3点", "2024-03-05T15:00:00+08:00", "hour"),
    ("2024-03-05t14:00:00z", "2024-03-05t14:00:00z", "2024-03-05T22:00:00+08:00", "minute"),
    # English: customers type either case (parse.py passes width-folded, not case-folded, text)
    ("tomorrow at 3pm", "tomorrow at 3pm", "2026-11-25T15:00:00+08:00", "hour"),
    ("Tomorrow at 3PM", "Tomorrow at 3PM", "2026-11-25T15:00:00+08:00", "hour"),
    ("last friday", "last friday", "2026-11-20T00:00:00+08:00", "day"),
    ("next monday", "next monday", "2026-11-30T00:00:00+08:00", "day"),
    ("on friday at 10am", "on friday at 10am", "2026-11-27T10:00:00+08:00", "hour"),
    ("can you come at 3 tomorrow", "at 3 tomorrow", "2026-11-25T15:00:00+08:00", "hour"),
    ("3:30pm tomorrow", "3:30pm tomorrow", "2026-11-25T15:30:00+08:00", "minute"),
    ("tonight at 8", "tonight at 8", "2026-11-24T20:00:00+08:00", "hour"),
    ("at noon tomorrow", "at noon tomorrow", "2026-11-25T12:00:00+08:00", "hour"),
    ("march 5th", "march 5th", "2027-03-05T00:00:00+08:00", "day"),
    ("5 March 2024", "5 March 2024", "2024-03-05T00:00:00+08:00", "day"),
    ("next week", "next week", "2026-11-30T00:00:00+08:00", "week"),
    ("in 2 days", "in 2 days", "2026-11-26T00:00:00+08:00", "day"),
    ("3 days ago", "3 days ago", "2026-11-21T00:00:00+08:00", "day"),
    ("call me in half an hour", "in half an hour", "2026-11-24T10:30:00+08:00", "minute"),
]


@pytest.mark.parametrize(("text", "surface", "iso", "grain"), DATETIMES)
def test_datetime(ex: EntityExtractor, text: str, surface: str, iso: str, grain: str) -> None:
    e = only(ex, text, "datetime")[0]
    assert e.text == surface
    assert (e.value["value"], e.value["grain"]) == (iso, grain)
    assert set(e.value) == ({"value", "grain", "part_of_day"} if grain == "part_of_day" else {"value", "grain"})


@pytest.mark.parametrize(("text", "iso", "pod"), [
    ("今晚", "2026-11-24T18:00:00+08:00", "evening"),
    ("明早", "2026-11-25T06:00:00+08:00", "morning"),
    ("昨晚", "2026-11-23T18:00:00+08:00", "evening"),
    ("周五下午", "2026-11-27T13:00:00+08:00", "afternoon"),
    ("this morning", "2026-11-24T09:00:00+08:00", "morning"),
    ("tomorrow evening", "2026-11-25T18:00:00+08:00", "evening"),
])
def test_part_of_day(ex: EntityExtractor, text: str, iso: str, pod: str) -> None:
    e = one(ex, text, "datetime")
    assert e.text == text
    assert e.value == {"value": iso, "grain": "part_of_day", "part_of_day": pod}


def test_datetime_inside_a_sentence_has_exact_span(ex: EntityExtractor) -> None:
    text = "你好，我想改到下周一上午10点半送，订单2023112412345678"
    ents = run(ex, text)
    assert [(e.entity, e.text) for e in ents] == [("datetime", "下周一上午10点半"), ("order_id", "2023112412345678")]
    assert ents[0].start == text.index("下周一")


def test_bare_hour_prefers_the_coming_afternoon(ex: EntityExtractor) -> None:
    # said at 10:00: "3点" is 15:00, "8点" has passed this morning so it is 20:00, "11点" still ahead
    assert one(ex, "3点可以吗", "datetime").value["value"] == "2026-11-24T15:00:00+08:00"
    assert one(ex, "8点到", "datetime").value["value"] == "2026-11-24T20:00:00+08:00"
    assert one(ex, "11点到", "datetime").value["value"] == "2026-11-24T11:00:00+08:00"
    # the whole message is a time: an answer to "几点方便？"
    assert one(ex, "三点", "datetime").value["value"] == "2026-11-24T15:00:00+08:00"


@pytest.mark.parametrize("text", [
    "我有三点建议",  # "三点" inside an unrelated phrase
    "第三点是价格",
    "这个一点都不好用",
    "能便宜一点吗",
    "差一点就买了",
    "百分之三点五",
    "下午好",  # a bare part of day says too little
    "然后天气不错",  # 后天 inside 然后天气
    "以前天天加班",
    "然后年底再说",
    "马上月底了",
    "5号楼",
    "地铁3号线",
    "一日三餐",
    "用了10年了",
    "这周围没有快递点",
    "may i change my address",
    "call me at 5 or so",
    "one moment",
])
def test_datetime_negatives(ex: EntityExtractor, text: str) -> None:
    assert only(ex, text, "datetime") == []


def test_yixia_is_not_next_week(ex: EntityExtractor) -> None:
    # "查一下周五" is "look up Friday", not "next Friday"
    e = one(ex, "帮我查一下周五的订单", "datetime")
    assert e.text == "周五" and e.value["value"] == "2026-11-27T00:00:00+08:00"
    assert one(ex, "下周五", "datetime").value["value"] == "2026-12-04T00:00:00+08:00"


def test_invalid_calendar_dates_are_dropped(ex: EntityExtractor) -> None:
    assert only(ex, "2月30日", "datetime") == []
    assert only(ex, "13月5号", "datetime") == []
    assert only(ex, "2024-02-30", "datetime") == []
    assert only(ex, "25点", "datetime") == []


def test_now_handling() -> None:
    ex = EntityExtractor()
    naive = datetime(2026, 11, 24, 10, 0)  # read as Asia/Shanghai
    aware_utc = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # the same instant
    for now in (naive, aware_utc):
        assert one(ex, "明天下午三点", "datetime", now).value["value"] == "2026-11-25T15:00:00+08:00"
    e = one(ex, "明天", "datetime", None)  # default: the current time, in the extractor's zone
    assert e.value["value"].endswith("+08:00")


def test_other_timezone() -> None:
    ex = EntityExtractor(timezone="America/New_York")
    now = datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("America/New_York"))
    e = one(ex, "tomorrow at 3pm", "datetime", now)
    assert e.value["value"] == "2026-11-25T15:00:00-05:00"
    # exact arithmetic for hours across the DST change (2026-11-01 02:00 in New York)
    before = datetime(2026, 11, 1, 0, 30, tzinfo=ZoneInfo("America/New_York"))
    assert one(ex, "in 2 hours", "datetime", before).value["value"] == "2026-11-01T01:30:00-05:00"


# ----------------------------------------------------------------------------- phone / order id


@pytest.mark.parametrize(("text", "surface"), [
    ("我的手机号13812345678", "13812345678"),
    ("电话138-1234-5678谢谢", "138-1234-5678"),
    ("打138 1234 5678", "138 1234 5678"),
    ("+86 13812345678", "+86 13812345678"),
    ("+86-138-1234-5678", "+86-138-1234-5678"),
    ("8613812345678", "8613812345678"),
])
def test_phone(ex: EntityExtractor, text: str, surface: str) -> None:
    e = one(ex, text, "phone")
    assert e.text == surface and e.value == "13812345678"


def test_eleven_digits_that_are_not_a_phone(ex: EntityExtractor) -> None:
    assert only(ex, "编号12345678901", "phone") == []  # 12x is not a mobile prefix
    assert only(ex, "213812345678", "phone") == []  # inside a longer digit run
    assert only(ex, "1381234567", "phone") == []  # ten digits


def test_order_number_is_not_a_phone(ex: EntityExtractor) -> None:
    # a 16-digit order number contains "13812345678" but must not yield a phone
    ents = run(ex, "订单号2023113812345678查一下")
    assert [(e.entity, e.text) for e in ents] == [("order_id", "2023113812345678")]
    # and an 11-digit mobile number is a phone, not an order id
    ents = run(ex, "13812345678")
    assert [e.entity for e in ents] == ["phone"]


@pytest.mark.parametrize("text", ["2023112412345678", "DD20231124001234", "dd20231124001234", "SF1234567890123"])
def test_generic_order_id(ex: EntityExtractor, text: str) -> None:
    e = one(ex, f"订单{text}还没到", "order_id")
    assert e.text == text and e.value == text


@pytest.mark.parametrize("text", ["20231124", "iphone15promax256gb", "abcdefghijklmnop1234567"])
def test_not_an_order_id(ex: EntityExtractor, text: str) -> None:
    assert only(ex, text, "order_id") == []


# ----------------------------------------------------------------------------- email / money / number


def test_email(ex: EntityExtractor) -> None:
    text = "我的邮箱是abc.def+cs@qq.com，电话13812345678"
    ents = run(ex, text)
    assert [(e.entity, e.text) for e in ents] == [("email", "abc.def+cs@qq.com"), ("phone", "13812345678")]
    assert only(ex, "13812345678@163.com", "phone") == []  # the email wins the overlap


MONEY = [
    ("¥199", 199.0, "CNY"),
    ("￥199", 199.0, "CNY"),
    ("199元", 199.0, "CNY"),
    ("一百九十九块", 199.0, "CNY"),
    ("两千块钱", 2000.0, "CNY"),
    ("3.5万元", 35000.0, "CNY"),
    ("五块五", 5.5, "CNY"),
    ("两块五毛", 2.5, "CNY"),
    ("一元二角", 1.2, "CNY"),
    ("1,299元", 1299.0, "CNY"),
    ("$20", 20.0, "USD"),
    ("us$20", 20.0, "USD"),
    ("20 dollars", 20.0, "USD"),
    ("RMB 100", 100.0, "CNY"),
    ("rmb100", 100.0, "CNY"),
    ("100 rmb", 100.0, "CNY"),
    ("50美元", 50.0, "USD"),
    ("€30", 30.0, "EUR"),
    ("HK$100", 100.0, "HKD"),
]


@pytest.mark.parametrize(("text", "amount", "currency"), MONEY)
def test_money(ex: EntityExtractor, text: str, amount: float, currency: str) -> None:
    e = one(ex, f"退款{text}吧", "money")
    assert e.text == text
    assert e.value == {"amount": amount, "currency": currency}


def test_bare_wan_is_money_with_lower_confidence(ex: EntityExtractor) -> None:
    e = one(ex, "3.5万能少点吗", "money")
    assert e.text == "3.5万" and e.value == {"amount": 35000.0, "currency": "CNY"} and e.confidence < 1
    assert only(ex, "跑了3.5万公里", "money") == []


@pytest.mark.parametrize("text", ["三块蛋糕", "我们一块去吧", "元旦快乐", "买了199件", "2024年", "20k"])
def test_money_negatives(ex: EntityExtractor, text: str) -> None:
    assert only(ex, text, "money") == []


def test_known_limitation_yiyuan(ex: EntityExtractor) -> None:
    # "一元二次方程" (quadratic equation) still yields ¥1; the 角 rule at least keeps it from ¥1.2
    assert [e.text for e in only(ex, "一元二次方程求解", "money")] == ["一元"]


def test_number(ex: EntityExtractor) -> None:
    assert [(e.text, e.value) for e in only(ex, "买了3件，每件1,299.5", "number")] == [("3", 3), ("1,299.5", 1299.5)]
    e = one(ex, "一共三十五个", "number")
    assert e.value == 35 and e.text == "三十五"
    # Chinese words that merely contain numerals are not numbers
    assert only(ex, "万一不行千万别急，等一下", "number") == []
    assert only(ex, "iphone15", "number") == []


def test_money_beats_number_and_date_beats_number(ex: EntityExtractor) -> None:
    assert [e.entity for e in run(ex, "199元")] == ["money"]
    assert [e.entity for e in run(ex, "3月5号")] == ["datetime"]


# ----------------------------------------------------------------------------- domain patterns


def test_domain_pattern_replaces_builtin_order_id() -> None:
    ex = EntityExtractor(patterns={"order_id": r"(?i)(?<![0-9a-z])DD\d{10}(?![0-9a-z])"})
    ents = run(ex, "订单dd2023112400和2023112412345678")  # (?i): either case matches
    assert [(e.entity, e.text, e.extractor) for e in ents] == [
        ("order_id", "dd2023112400", "regex"),
        ("number", "2023112412345678", "rules"),  # no longer a generic order id, still a number
    ]


def test_domain_pattern_extends_and_wins_ties() -> None:
    ex = EntityExtractor(patterns={"coupon_code": r"(?i)(?<![0-9a-z])LX[A-Z0-9]{6,10}(?![0-9a-z])",
                                   "tracking_number": r"(?i)(?<![0-9a-z])SF\d{10,15}(?![0-9a-z])"})
    ents = run(ex, "优惠码lx2024vip8，快递sf1234567890123")
    assert [(e.entity, e.text) for e in ents] == [("coupon_code", "lx2024vip8"), ("tracking_number", "sf1234567890123")]


def test_domain_pattern_with_word_boundary() -> None:
    # \b works next to spaces and punctuation; next to Han characters it does not (they are \w),
    # which is why the demo domain file uses ASCII look-arounds
    ex = EntityExtractor(patterns={"order_id": r"\bDD\d{10}\b"})
    assert [e.text for e in run(ex, "order DD2023112400, please")] == ["DD2023112400"]


def test_bad_domain_pattern_is_reported_on_first_use() -> None:
    ex = EntityExtractor(patterns={"broken": "(unclosed"})  # construction stays cheap
    with pytest.raises(ValueError, match="broken"):
        ex.extract("hello")


# ----------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("text", [
    "", " ", "😀👍🏻🇨🇳", "\x00\x01\x02\x1b[31m", "\ud800\udfff", "\u200b\u200d\ufeff", "٣٤٥", "①②③", "?" * 50,
    "9999年12月31日晚上12点", "0000-00-00 99:99", "周8", "32号", "tomorrow at 13pm", "in 99999 days",
])
def test_odd_input_does_not_crash(ex: EntityExtractor, text: str) -> None:
    run(ex, text)


def test_extreme_now_does_not_crash(ex: EntityExtractor) -> None:
    for now in (datetime(9999, 12, 31, 23, 59), datetime(1, 1, 1, 0, 0)):
        run(ex, "明天 后天 下个月5号 明年 in 2 days 晚上12点 3 days ago", now)


def test_non_string_is_a_type_error(ex: EntityExtractor) -> None:
    with pytest.raises(TypeError):
        ex.extract(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("unit", ["1", "a1", "三点", "一", "¥1", "下周", "1 days ago ", "a.", "+86"])
def test_long_input_stays_linear(ex: EntityExtractor, unit: str) -> None:
    # guards against regex backtracking: 100k characters must stay well under a second or two
    text = (unit * (100_000 // len(unit) + 1))[:100_000]
    t = time.perf_counter()
    run(ex, text)
    assert time.perf_counter() - t < 5.0


def test_random_input_keeps_span_invariants(ex: EntityExtractor) -> None:
    pieces = list("0123456789零一二两三四五六七八九十百千万年月日号天周点时分半刻早晚午夜上下今明昨前后个元块¥$:-/., @") + [
        "下午", "晚上", "tomorrow", "at ", "pm", "next ", "monday", "march ", "in ", " days", " ago", "rmb", "😀", "\x00"]
    rng = random.Random(7)
    for _ in range(3000):
        run(ex, "".join(rng.choice(pieces) for _ in range(rng.randint(0, 20))))
