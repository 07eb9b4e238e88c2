"""Rule-based entity extraction for customer-service messages (Chinese first, English too).

Built-in types: ``order_id`` (generic), ``phone`` (mainland mobile), ``email``, ``money``,
``number`` and ``datetime``; a bot's domain file adds named regexes or replaces a built-in
by reusing its name (``{"order_id": r"(?<![0-9a-z])DD\\d{10}(?![0-9a-z])"}``).

Why rules and not a library for Chinese dates: jionlp's ``parse_time``/``extract_time`` was
evaluated (jionlp 1.5.31). It is fast once warm, but importing it prints two banner lines to
stdout, it pulls ~220 MB of packages (jiojio's segmentation models) that this module does not
need, its first call costs ~60 ms, and on customer-service text it is noisy in ways that matter
here: "我有三点建议" becomes 03:00, a bare "3点" said at 10:00 becomes 03:00 rather than 15:00,
"元旦前" resolves to a date in the past. dateparser's ``search_dates`` was ruled out for English
for the same reason ("my order may be lost" -> May, "2023112412345678" -> year 2034, ~1-5 ms a
call). The grammar below is small, shares one resolver for both languages (so "下周一" and
"next monday" agree), and costs tens of microseconds per message.

Values are JSON-serialisable. Datetimes are ``{"value": ISO-8601 with offset, "grain": ...}``
with grain ``minute | hour | part_of_day | day | week | month | year``; money is
``{"amount": float, "currency": "CNY" | "USD" | ...}``.

Conventions chosen for ambiguous input (documented because users will ask):

* Chinese weekdays are calendar weeks starting on Monday: "周一" is this week's Monday even if
  it has passed, "下周一" next week's, "上周五" last week's. English "next X" also means next
  week's X, "last X" the most recent X before today, bare "friday"/"this friday" the next one
  (today included).
* A month/day without a year ("3月5号", "March 5") takes the year that puts it nearest to
  ``now``; a bare day ("5号") the nearest month. Ties go to the future.
* An hour without am/pm: 1-6 means afternoon ("明天3点" -> 15:00, nobody books 03:00); 7-11
  stays morning unless, for a time with no date, the morning has already passed today and the
  evening has not.
* Dates without a time keep grain ``day`` and the value is midnight local time.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import timezone as _dt_timezone
from functools import cached_property, lru_cache
from zoneinfo import ZoneInfo

__all__ = ["Entity", "EntityExtractor"]


@dataclass(frozen=True)
class Entity:
    """One extracted entity; ``text == message[start:end]`` of the message passed to ``extract``."""

    entity: str
    value: object
    text: str
    start: int
    end: int
    confidence: float = 1.0
    extractor: str = "rules"


class _LazyRegex:
    """A pattern compiled on first use: the grammar below takes ~25 ms to compile, which the
    first ``extract()`` (or ``warmup()``) pays instead of every ``import lingxi.nlu``."""

    __slots__ = ("_compiled", "_flags", "_pattern")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._pattern, self._flags = pattern, flags
        self._compiled: re.Pattern[str] | None = None

    def _rx(self) -> re.Pattern[str]:
        if self._compiled is None:
            self._compiled = re.compile(self._pattern, self._flags)
        return self._compiled

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        return self._rx().finditer(text)

    def search(self, text: str) -> re.Match[str] | None:
        return self._rx().search(text)

    def match(self, text: str) -> re.Match[str] | None:
        return self._rx().match(text)


# --------------------------------------------------------------------------- numerals

_CN_DIGITS = "零〇一二两三四五六七八九"
_CN_SMALL = f"[{_CN_DIGITS}十]"  # enough for hours, days, months (≤ 99)
_CN_NUMERAL_CHARS = frozenset(_CN_DIGITS + "十百千万亿壹贰叁肆伍陆柒捌玖拾佰仟")


@lru_cache(maxsize=4096)
def _to_number(s: str) -> int | float | None:
    """Arabic or Chinese numeral -> number; ``None`` when it is not one (cn2an raises then)."""
    s = s.replace(",", "")
    if not s or len(s) > 30:  # a 100k-digit run is not a number anyone said (and float() -> inf)
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        pass
    if not all(c in _CN_NUMERAL_CHARS for c in s):
        return None
    import cn2an  # imported on first Chinese numeral: ~0.1 s, kept out of module import

    try:
        out = cn2an.cn2an(s, "normal")
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return int(out) if float(out).is_integer() else float(out)


def _int(s: str | None) -> int | None:
    if s is None:
        return None
    n = _to_number(s)
    return int(n) if isinstance(n, int) or (isinstance(n, float) and n.is_integer()) else None


# --------------------------------------------------------------------------- simple types
# Boundaries are written as ASCII look-arounds, not \b: Han characters are \w in Python, so
# "订单号2023112412345678" has no \b between 号 and 2.

_EMAIL = _LazyRegex(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-])"
)
_PHONE = _LazyRegex(
    r"(?<![0-9A-Za-z+])(?:(?:\+|00)?86[ -]?)?(?P<num>1[3-9]\d(?:[ -]?\d{4}){2})(?![0-9A-Za-z])"
)
_ORDER_ID = _LazyRegex(r"(?<![0-9A-Za-z])[0-9A-Za-z]{10,24}(?![0-9A-Za-z])")
_NUMBER_AR = _LazyRegex(r"(?<![0-9A-Za-z.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![0-9A-Za-z])")
# a Chinese numeral is only a number when it is unmistakable: starts with a digit (not 万一,
# 千万) and carries a unit (十/百/千/万/亿), so 一下, 一点, 万一 stay words
_NUMBER_CN = _LazyRegex(r"(?:[一二两三四五六七八九]|十)[零〇一二两三四五六七八九十百千万亿]*")

# --------------------------------------------------------------------------- money

_AMT_AR = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_AMT_CN = r"(?:[一二两三四五六七八九壹贰叁肆伍陆柒捌玖]|十|拾)[零〇一二两三四五六七八九十百千万亿壹贰叁肆伍陆柒捌玖拾佰仟]*"
_CN_UNIT = r"块钱|元钱|元|块|圆|人民币|美元|美金|刀|欧元|英镑|港币|港元|日元"
# "两块五" is 2.5; after 元 only the formal "一元二角" (so "一元二次方程" stays ¥1)
_JIAO = r"(?:(?<=块)(?P<jiao>[一二两三四五六七八九1-9])(?![0-9])(?:毛|角)?|(?<=[元圆])(?P<jiao2>[一二两三四五六七八九1-9])[角毛])?"
_MONEY_PREFIX = _LazyRegex(
    rf"(?<![A-Za-z])(?P<cur>us\$|hk\$|[¥￥$€£]|rmb|cny|usd|eur|gbp|hkd|jpy|人民币)\s?"
    rf"(?P<amt>{_AMT_AR})(?P<mult>[万千亿]|[kw](?![A-Za-z]))?(?:\s?(?P<unit>元|块钱|块))?",
    re.IGNORECASE,
)
_MONEY_SUFFIX_AR = _LazyRegex(
    rf"(?<![0-9.,])(?P<amt>{_AMT_AR})\s?(?P<mult>[万千亿]|[kw](?![A-Za-z]))?\s?(?P<unit>{_CN_UNIT}){_JIAO}",
    re.IGNORECASE,
)
_MONEY_SUFFIX_CN = _LazyRegex(rf"(?<![{_CN_DIGITS}十百千万亿壹贰叁肆伍陆柒捌玖拾佰仟])(?P<amt>{_AMT_CN})(?P<unit>{_CN_UNIT}){_JIAO}")
_MONEY_SUFFIX_EN = _LazyRegex(
    rf"(?<![0-9.,A-Za-z])(?P<amt>{_AMT_AR})\s?(?P<mult>k(?![A-Za-z]))?\s?"
    r"(?P<cur>dollars?|bucks?|usd|rmb|yuan|cny|euros?|eur|pounds?|gbp|hkd|jpy)(?![A-Za-z])",
    re.IGNORECASE,
)
# "3.5万" with no currency: money in this domain unless a measure word follows (3.5万公里)
_MONEY_BARE = _LazyRegex(rf"(?<![0-9.,])(?P<amt>{_AMT_AR})(?P<mult>[万亿])")
_NOT_MONEY_AFTER_BARE = frozenset("公里米人个次件步份台只张位名家单条字吨斤粉篇部辆平亩户册本元块圆美欧英港日刀")
# after 块 (also "piece"/"together"): only particles and amounts keep it money, so
# "三块蛋糕" and "一块去" are not money
_OK_AFTER_KUAI = frozenset("钱的吗呢啊吧了啦哦呀么嘛就都还也是不到给退左多一每包运")

_CURRENCY = {
    "¥": "CNY", "￥": "CNY", "rmb": "CNY", "cny": "CNY", "人民币": "CNY", "元": "CNY", "元钱": "CNY",
    "块": "CNY", "块钱": "CNY", "圆": "CNY", "yuan": "CNY",
    "$": "USD", "us$": "USD", "usd": "USD", "美元": "USD", "美金": "USD", "刀": "USD",
    "dollar": "USD", "dollars": "USD", "buck": "USD", "bucks": "USD",
    "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR", "欧元": "EUR",
    "£": "GBP", "gbp": "GBP", "pound": "GBP", "pounds": "GBP", "英镑": "GBP",
    "hk$": "HKD", "hkd": "HKD", "港币": "HKD", "港元": "HKD",
    "jpy": "JPY", "日元": "JPY",
}
_MULT = {"万": 1e4, "w": 1e4, "千": 1e3, "k": 1e3, "亿": 1e8}

# --------------------------------------------------------------------------- datetime, Chinese

# 上/下 after 一/马/以/如 belong to 一下 ("查一下周五"), 马上, 以下, 如下: not next/last week
_NOT_AFTER_YIXIA = r"(?<![一马以如])"
_ZH_OFFSET = (
    rf"(?P<on>(?<![\d{_CN_DIGITS}十百])(?:\d{{1,4}}|[{_CN_DIGITS}十百]{{1,6}})|半)(?P<ohalf>个半)?个?"
    r"(?P<ou>天|小时|钟头|分钟|周|星期|礼拜|月)(?P<odir>以后|之后|后|以前|之前|前)"
)
_ZH_ISO = (
    r"(?<!\d)(?P<iy>(?:19|20)\d\d)(?P<isep>[-/.])(?P<im>\d{1,2})(?P=isep)(?P<id>\d{1,2})(?!\d)"
    r"(?:(?:t|\s*)(?P<ih>\d{1,2})[:：](?P<imin>\d{2})(?:[:：](?P<isec>\d{2}))?(?!\d)"
    r"(?P<itz>z|[+-]\d{2}:?\d{2})?)?"
)
_ZH_YMD = (
    r"(?=\d|[零〇一二两三四五六七八九十今明去前后大本这上下])"
    rf"(?:(?P<y>(?<!\d)\d{{4}}|(?<!\d)\d{{2}}|[{_CN_DIGITS}]{{2,4}})年|(?P<yrel>大前|大后|今|明|去|(?<![然最之以过随落背先从提])(?:前|后))年)?"
    r"(?:(?P<m>(?<!\d)\d{1,2}|十[一二]?|[一二三四五六七八九])月份?"
    rf"|{_NOT_AFTER_YIXIA}(?P<mrel>下下个|上上个|下个|上个|这个|本|下|上)月)?"
    rf"(?:(?P<d>(?<!\d)\d{{1,2}}|{_CN_SMALL}{{1,3}})(?P<dsuf>号|日))?"
)
_ZH_WEEK = (
    rf"(?:{_NOT_AFTER_YIXIA}(?P<wpre>下下个|上上个|下个|上个|这个|下下|上上|下|上|这|本))?(?:周|星期|礼拜)(?P<wd>[一二三四五六日天1-7])"
    rf"|(?:{_NOT_AFTER_YIXIA}(?P<wepre>下个|上个|这个|下|上|这|本))?(?P<wkend>周末)"
    rf"|{_NOT_AFTER_YIXIA}(?P<wkpre>下下个|上上个|下个|上个|这个|下下|上上|下|上|这|本)(?:周|星期|礼拜)(?![一二三四五六日天1-7末围边期年岁全])"
)
_ZH_REL = (
    r"(?P<rel>大前天|大后天|(?<![然最之以过随落背先从提])(?:前天|后天)|昨天|昨日|昨儿|今天|今日|今儿|明天|明日|明儿)"
    r"|(?P<relp>今|明|昨)(?P<relpp>早|晚|晨|夜)(?!点|饭|餐|报|班)"
)
_ZH_PERIOD = r"(?P<per>凌晨|清晨|早晨|早上|上午|中午|正午|午后|下午|傍晚|晚上|晚间|夜里|夜间|半夜|深夜|午夜)"
_ZH_TIME = (
    rf"(?P<h>(?<!\d)\d{{1,2}}|{_CN_SMALL}{{1,3}})(?P<hs>点|時|时|點)(?P<hz>钟)?"
    rf"(?:(?P<half>半)|(?P<qtr>[一三13]刻)|(?P<zheng>整)|(?P<mi>\d{{1,2}}(?!\d)|{_CN_SMALL}{{1,3}})(?P<ms>分)?)?"
    r"|(?P<ch>(?<!\d)\d{1,2})[:：](?P<cm>\d{2})(?:[:：](?P<cs>\d{2}))?(?!\d)"
)
_ZH_DATETIME = _LazyRegex(
    r"(?=[\d零〇一二两三四五六七八九十今明昨去前后大本这上下周星礼凌清早中正午傍晚夜半深])"
    rf"(?:(?P<off>{_ZH_OFFSET})"
    rf"|(?:(?P<date>{_ZH_ISO}|{_ZH_REL}|{_ZH_WEEK}|{_ZH_YMD}))?"
    rf"(?:\s*{_ZH_PERIOD})?(?:\s*(?P<time>{_ZH_TIME}))?)",
    re.IGNORECASE,
)
# a bare "3点" (no date, no period) is a time only in time-like context: "三点到", "3点前"
_BARE_TIME_NEXT = _LazyRegex(
    r"前|后|以前|以后|之前|之后|左右|多|到|过|整|开始|结束|见|送|来|去|取|发|上班|下班|营业|关门|开门|"
    r"再|才|就|的时候|准时|给|打|联系|回|可以|能|以|吧|吗|呢|行|好|半"
)
_BARE_TIME_PREV = frozenset("有第差好快慢早晚多少点一几这那每哪")
_PUNCT = " ,.!?;~，。！？；、～"
_NOUN_AFTER_HAO = frozenset("楼线床门位台机柜窗房院厅馆店仓库车道口箱码")

# --------------------------------------------------------------------------- datetime, English

_EN_MONTHS = {
    "jan": 1, "january": 1, "feb": 2, "february": 2, "mar": 3, "march": 3, "apr": 4, "april": 4,
    "may": 5, "jun": 6, "june": 6, "jul": 7, "july": 7, "aug": 8, "august": 8, "sep": 9, "sept": 9,
    "september": 9, "oct": 10, "october": 10, "nov": 11, "november": 11, "dec": 12, "december": 12,
}
_EN_WEEKDAYS = {d.lower(): i for i, d in enumerate(calendar.day_name)}
_EN_MON = r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
_EN_DATE = (
    r"(?P<erel>(?:the\s+)?day\s+after\s+tomorrow|(?:the\s+)?day\s+before\s+yesterday|today|tonight|"
    r"tomorrow|tmrw|tmr|yesterday|this\s+morning|this\s+afternoon|this\s+evening)"
    r"|(?:(?P<ewpre>this|next|last|coming|past)\s+)?(?P<ewd>monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
    r"|(?P<ewkpre>this|next|last)\s+(?P<ewk>week|month|year)"
    rf"|(?P<emon>{_EN_MON})\.?\s+(?P<eday>\d{{1,2}})(?:st|nd|rd|th)?(?!\d)(?:,?\s+(?P<eyear>\d{{4}})(?!\d))?"
    rf"|(?:the\s+)?(?P<eday2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<emon2>{_EN_MON})\.?(?:,?\s+(?P<eyear2>\d{{4}})(?!\d))?"
)
_EN_POD = r"(?:in\s+the\s+)?(?P<epod>morning|afternoon|evening|night)"
_EN_TIME = (
    r"(?P<eh>\d{1,2})(?::(?P<em>\d{2}))?\s*(?P<eampm>a\.?m\.?|p\.?m\.?)(?![A-Za-z])"
    r"|(?P<eh2>\d{1,2}):(?P<em2>\d{2})(?!\d)"
    r"|(?P<enoon>noon|midnight)"
    r"|(?P<eh3>\d{1,2})\s*o'?clock"
    r"|(?<=at\s)(?P<eh4>\d{1,2})(?![\d:.,])"
)
_EN_AT = r"(?:(?:at|by|around|@)\s*)?"
_EN_DATE_FIRST = _LazyRegex(
    rf"(?<![A-Za-z])(?:on\s+)?(?:{_EN_DATE})(?:\s+{_EN_POD})?(?:\s*,?\s*{_EN_AT}(?:{_EN_TIME}))?(?![A-Za-z])",
    re.IGNORECASE,
)
_EN_TIME_FIRST = _LazyRegex(
    rf"(?<![A-Za-z0-9]){_EN_AT}(?:{_EN_TIME})(?:\s+{_EN_POD})?(?:\s*,?\s+(?:on\s+)?(?:{_EN_DATE}))?(?![A-Za-z])",
    re.IGNORECASE,
)
_EN_NUMWORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8, "nine": 9, "ten": 10, "half an": 0.5, "half a": 0.5}
_EN_OFFSET = _LazyRegex(
    r"(?<![A-Za-z0-9])(?:in\s+(?P<n1>\d{1,4}|half\s+an?|an?|one|two|three|four|five|six|seven|eight|nine|ten)\s+"
    r"(?P<u1>minutes?|mins?|hours?|hrs?|days?|weeks?|months?)"
    r"|(?<![0-9])(?P<n2>\d{1,4}|an?|one|two|three|four|five|six|seven|eight|nine|ten)\s+"
    r"(?P<u2>minutes?|mins?|hours?|hrs?|days?|weeks?|months?)\s+ago)(?![A-Za-z])",
    re.IGNORECASE,
)
_HAS_LATIN = _LazyRegex(r"[A-Za-z]")

# --------------------------------------------------------------------------- shared resolver

# part of day -> (name, start hour, hour-shift rule)
_PODS: dict[str, tuple[str, int, str]] = {
    "凌晨": ("early_morning", 0, "early"), "清晨": ("morning", 6, "am"), "早晨": ("morning", 6, "am"),
    "早上": ("morning", 6, "am"), "早": ("morning", 6, "am"), "晨": ("morning", 6, "am"),
    "上午": ("morning", 9, "am"), "morning": ("morning", 9, "am"),
    "中午": ("noon", 12, "noon"), "正午": ("noon", 12, "noon"),
    "午后": ("afternoon", 13, "pm"), "下午": ("afternoon", 13, "pm"), "afternoon": ("afternoon", 13, "pm"),
    "傍晚": ("evening", 17, "pm"), "evening": ("evening", 18, "evening"),
    "晚上": ("evening", 18, "evening"), "晚间": ("evening", 18, "evening"), "晚": ("evening", 18, "evening"),
    "夜": ("night", 20, "evening"), "night": ("night", 20, "evening"),
    "夜里": ("night", 22, "late"), "夜间": ("night", 22, "late"),
    "半夜": ("night", 23, "late"), "深夜": ("night", 23, "late"), "午夜": ("midnight", 24, "late"),
}
_ZH_WEEKDAY = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6,
               "1": 0, "2": 1, "3": 2, "4": 3, "5": 4, "6": 5, "7": 6}
_SHIFT = {"下下": 2, "上上": -2, "下": 1, "上": -1, "这": 0, "本": 0, "下下个": 2, "上上个": -2,
          "下个": 1, "上个": -1, "这个": 0, None: 0}
_REL_DAYS = {"大前天": -3, "前天": -2, "昨天": -1, "昨日": -1, "昨儿": -1, "今天": 0, "今日": 0, "今儿": 0,
             "明天": 1, "明日": 1, "明儿": 1, "后天": 2, "大后天": 3, "今": 0, "明": 1, "昨": -1}
_REL_YEARS = {"大前": -3, "前": -2, "去": -1, "今": 0, "明": 1, "后": 2, "大后": 3}


class _Reject(Exception):
    """A match that looked like a date but is not one (bad context or impossible value)."""


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _nearest(today: date, candidates: Iterator[date]) -> date:
    """The candidate nearest to today; ties go to the future."""
    best: date | None = None
    for c in candidates:
        if best is None or (abs((c - today).days), c < today) < (abs((best - today).days), best < today):
            best = c
    if best is None:
        raise _Reject
    return best


def _valid_dates(pairs: Iterator[tuple[int, int, int]]) -> Iterator[date]:
    for y, m, d in pairs:
        try:
            yield date(y, m, d)
        except ValueError:
            continue


def _hour_for(h: int, pod: str | None, date_given: bool, now: datetime, day: date) -> tuple[int, int]:
    """Apply part of day / afternoon bias to a spoken hour; returns (day offset, 0-23 hour)."""
    if not 0 <= h <= 24:
        raise _Reject
    if pod is not None:
        rule = _PODS[pod][2]
        if rule == "early":
            h = 0 if h == 12 else h
        elif rule in ("noon", "pm"):
            h = h + 12 if (1 <= h <= 4 if rule == "noon" else h < 12) else h
        elif rule in ("evening", "late"):
            low = 5 if rule == "evening" else 6  # "晚上5点" is 17:00, "夜里5点" is 05:00 next day
            h = h + 12 if low <= h <= 11 else (24 if h == 12 else (h + 24 if h < low else h))
        return divmod(h, 24)
    morning_passed = not date_given and day == now.date() and h < now.hour < h + 12
    if 1 <= h <= 6 or (7 <= h <= 11 and morning_passed):
        h += 12
    return divmod(h, 24)


# --------------------------------------------------------------------------- the extractor


class EntityExtractor:
    """Extract typed entities from one message; cheap to construct, compiled on first use.

    ``patterns`` are a bot's domain regexes (Python ``re`` syntax, applied to the normalised
    text as given, like :mod:`lingxi.datasets.domain` validates them); ``values`` maps, per
    pattern name, a matched text (case-insensitive) to the value reported (synonyms). A name equal to a
    built-in type replaces that built-in; other names add types. Domain matches win ties.
    """

    #: resolution order for equal-length overlapping matches (higher wins)
    PRIORITY: dict[str, int] = {"email": 90, "phone": 80, "datetime": 70, "money": 60, "order_id": 50,
                                "number": 10}
    DOMAIN_PRIORITY = 100

    def __init__(self, patterns: dict[str, str] | None = None, timezone: str = "Asia/Shanghai",
                 values: dict[str, dict[str, str]] | None = None) -> None:
        self.patterns = dict(patterns or {})
        self.timezone = timezone
        # per domain entity: matched text (lower-cased) -> reported value (a synonym's canonical value)
        self.values = {name: {k.lower(): v for k, v in mapping.items()} for name, mapping in (values or {}).items()}

    # ---- lazily built state

    @cached_property
    def tz(self) -> tzinfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def _domain(self) -> list[tuple[str, re.Pattern[str]]]:
        out = []
        for name, pattern in self.patterns.items():
            try:
                out.append((name, re.compile(pattern)))
            except re.error as exc:
                raise ValueError(f"entity pattern {name!r}: bad regex: {exc}") from exc
        return out

    @cached_property
    def _builtins(self) -> list[tuple[str, Callable[[str, datetime], Iterator[Entity]]]]:
        all_ = [("email", self._emails), ("phone", self._phones), ("order_id", self._order_ids),
                ("money", self._money), ("number", self._numbers), ("datetime", self._datetimes)]
        return [(name, fn) for name, fn in all_ if name not in self.patterns]

    def warmup(self) -> None:
        """Compile domain patterns and import cn2an now, so the first request pays nothing."""
        self.extract("2026年3月5日下午三点 一百九十九块 13812345678 tomorrow at 3pm")

    # ---- public API

    def extract(self, text: str, now: datetime | None = None) -> list[Entity]:
        """All entities in ``text``, sorted by start; overlaps resolved longest-first, then by type.

        ``now`` anchors relative dates; naive values are read as local time in ``timezone``.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        if not text:
            return []
        tz = self.tz
        if now is None:
            now = datetime.now(tz)
        elif now.tzinfo is None:
            now = now.replace(tzinfo=tz)
        else:
            now = now.astimezone(tz)
        candidates: list[tuple[int, Entity]] = []
        for name, rx in self._domain:
            mapping = self.values.get(name, {})
            for m in rx.finditer(text):
                if m.end() > m.start():
                    value = mapping.get(m.group().lower(), m.group())
                    candidates.append((self.DOMAIN_PRIORITY, Entity(name, value, m.group(), m.start(),
                                                                    m.end(), 1.0, "regex")))
        for name, fn in self._builtins:
            prio = self.PRIORITY[name]
            candidates.extend((prio, ent) for ent in fn(text, now))
        return _resolve_overlaps(candidates, len(text))

    # ---- simple types

    def _emails(self, text: str, now: datetime) -> Iterator[Entity]:
        if "@" not in text:
            return
        for m in _EMAIL.finditer(text):
            yield Entity("email", m.group(), m.group(), m.start(), m.end())

    def _phones(self, text: str, now: datetime) -> Iterator[Entity]:
        for m in _PHONE.finditer(text):
            num = re.sub(r"[ -]", "", m.group("num"))
            yield Entity("phone", num, m.group(), m.start(), m.end())

    def _order_ids(self, text: str, now: datetime) -> Iterator[Entity]:
        for m in _ORDER_ID.finditer(text):
            s = m.group()
            if sum(c.isdigit() for c in s) >= 8:
                yield Entity("order_id", s, s, m.start(), m.end(), 0.8)

    def _numbers(self, text: str, now: datetime) -> Iterator[Entity]:
        for m in _NUMBER_AR.finditer(text):
            n = _to_number(m.group())
            if n is not None:
                yield Entity("number", n, m.group(), m.start(), m.end())
        for m in _NUMBER_CN.finditer(text):
            s = m.group()
            if len(s) >= 2 and any(c in "十百千万亿" for c in s):
                n = _to_number(s)
                if n is not None:
                    yield Entity("number", n, s, m.start(), m.end(), 0.8)

    def _money(self, text: str, now: datetime) -> Iterator[Entity]:
        for rx in (_MONEY_PREFIX, _MONEY_SUFFIX_AR, _MONEY_SUFFIX_CN, _MONEY_SUFFIX_EN, _MONEY_BARE):
            for m in rx.finditer(text):
                ent = _money_entity(m, text, rx is _MONEY_BARE)
                if ent is not None:
                    yield ent

    # ---- datetime

    def _datetimes(self, text: str, now: datetime) -> Iterator[Entity]:
        for m in _ZH_DATETIME.finditer(text):
            if m.end() == m.start():
                continue
            try:
                value, conf = self._resolve_zh(m, text, now)
            except (_Reject, ValueError, OverflowError):
                continue
            yield Entity("datetime", value, m.group(), m.start(), m.end(), conf)
        if not _HAS_LATIN.search(text):
            return
        for rx in (_EN_DATE_FIRST, _EN_TIME_FIRST):
            for m in rx.finditer(text):
                try:
                    value, conf = self._resolve_en(m, now)
                except (_Reject, ValueError, OverflowError):
                    continue
                yield Entity("datetime", value, m.group(), m.start(), m.end(), conf)
        for m in _EN_OFFSET.finditer(text):
            g = m.groupdict()
            n = g["n1"] or g["n2"]
            unit = (g["u1"] or g["u2"]).lower()
            amount = float(n) if n.isdigit() else float(_EN_NUMWORDS[re.sub(r"\s+", " ", n.lower())])
            unit = {"m": "minute", "h": "hour", "d": "day", "w": "week"}[unit[0]] if unit[:2] != "mo" else "month"
            try:
                value = self._offset(now, amount if g["n1"] else -amount, unit)
            except (ValueError, OverflowError):
                continue
            yield Entity("datetime", value, m.group(), m.start(), m.end(), 1.0)

    def _offset(self, now: datetime, amount: float, unit: str) -> dict[str, str]:
        """``now`` moved by a relative amount: exact for minutes/hours, calendar days otherwise."""
        if unit in ("minute", "hour"):
            delta = timedelta(minutes=amount) if unit == "minute" else timedelta(hours=amount)
            dt = (now.astimezone(UTC) + delta).astimezone(self.tz).replace(second=0, microsecond=0)
            return {"value": dt.isoformat(), "grain": "minute"}
        today = now.date()
        if unit == "month":
            whole = int(amount)
            d = _add_months(today, whole) + timedelta(days=round((amount - whole) * 30))
        else:
            d = today + timedelta(days=round(amount * (7 if unit == "week" else 1)))
        return self._value(d, None, None, "day")

    def _value(self, d: date, hour: int | None, minute: int | None, grain: str,
               second: int = 0, pod: str | None = None) -> dict[str, str]:
        dt = datetime(d.year, d.month, d.day, hour or 0, minute or 0, second, tzinfo=self.tz)
        out = {"value": dt.isoformat(), "grain": grain}
        if pod is not None:
            out["part_of_day"] = pod
        return out

    def _finish(self, now: datetime, day: date, date_given: bool, date_grain: str, pod: str | None,
                h: int | None, mi: int | None, sec: int | None, minute_grain: bool) -> dict[str, str]:
        """Combine a resolved day with an optional part of day and clock time."""
        if h is None:
            if pod is not None:
                name, start, _ = _PODS[pod]
                extra, start = divmod(start, 24)
                return self._value(day + timedelta(days=extra), start, 0, "part_of_day", pod=name)
            return self._value(day, None, None, date_grain)
        extra, hour = _hour_for(h, pod, date_given, now, day)
        if mi is not None and not 0 <= mi <= 59 or sec is not None and not 0 <= sec <= 59:
            raise _Reject
        grain = "minute" if minute_grain else "hour"
        return self._value(day + timedelta(days=extra), hour, mi or 0, grain, second=sec or 0)

    def _resolve_zh(self, m: re.Match[str], text: str, now: datetime) -> tuple[dict[str, str], float]:
        g = m.groupdict()
        today = now.date()
        if g["off"]:
            n = 0.5 if g["on"] == "半" else _to_number(g["on"])
            if n is None:
                raise _Reject
            amount = float(n) + (0.5 if g["ohalf"] else 0.0)
            unit = {"天": "day", "小时": "hour", "钟头": "hour", "分钟": "minute", "月": "month"}.get(g["ou"], "week")
            sign = -1 if g["odir"].endswith("前") else 1
            return self._offset(now, sign * amount, unit), 1.0
        has_date, pod, has_time = bool(g["date"]), g["per"], bool(g["time"])
        if not has_date and not has_time:
            raise _Reject  # a bare period ("下午好") says too little
        day, date_grain, conf = today, "day", 1.0
        if g["iy"]:
            day = date(int(g["iy"]), int(g["im"]), int(g["id"]))
            if g["ih"]:
                if has_time or pod:
                    raise _Reject  # "2024-03-05 14:00 下午3点"
                ih, imin, isec = int(g["ih"]), int(g["imin"] or 0), int(g["isec"] or 0)
                if g["itz"]:
                    return self._iso_with_tz(day, ih, imin, isec, g["itz"]), 1.0
                return self._finish(now, day, True, "day", None, ih, imin, isec, True), 1.0
        elif g["rel"]:
            day = today + timedelta(days=_REL_DAYS[g["rel"]])
        elif g["relp"]:
            day = today + timedelta(days=_REL_DAYS[g["relp"]])
            if pod is not None:
                raise _Reject  # "今晚上午" is not a thing
            pod = g["relpp"]
        elif g["wd"]:
            monday = today - timedelta(days=today.weekday())
            day = monday + timedelta(days=7 * _SHIFT[g["wpre"]] + _ZH_WEEKDAY[g["wd"]])
        elif g["wkend"]:
            monday = today - timedelta(days=today.weekday())
            day = monday + timedelta(days=7 * _SHIFT[g["wepre"]] + 5)
        elif g["wkpre"]:
            monday = today - timedelta(days=today.weekday())
            day, date_grain = monday + timedelta(days=7 * _SHIFT[g["wkpre"]]), "week"
        elif has_date:
            day, date_grain = self._zh_ymd(g, text, m, today)
        h: int | None = None
        mi: int | None = None
        sec: int | None = None
        minute_grain = False
        if has_time:
            if g["ch"] is not None:
                h, mi, sec, minute_grain = int(g["ch"]), int(g["cm"]), _int(g["cs"]), True
            else:
                h, mi, minute_grain = self._zh_clock(g)
            if date_grain != "day":
                raise _Reject  # "下个月3点"
            if not has_date and pod is None:
                conf = self._bare_time_confidence(g, text, m)
        elif m.end() == m.end("date") and g["dsuf"] == "号" and text[m.end():m.end() + 1] in _NOUN_AFTER_HAO:
            raise _Reject  # "5号楼", "3号线"
        return self._finish(now, day, has_date, date_grain, pod, h, mi, sec, minute_grain), conf

    def _iso_with_tz(self, day: date, h: int, mi: int, sec: int, tzs: str) -> dict[str, str]:
        """An ISO timestamp with its own offset, expressed in the extractor's timezone."""
        if tzs.lower() == "z":
            off = UTC
        else:
            digits = tzs[1:].replace(":", "")
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            off = _dt_timezone(delta if tzs[0] == "+" else -delta)
        dt = datetime(day.year, day.month, day.day, h, mi, sec, tzinfo=off).astimezone(self.tz)
        return {"value": dt.isoformat(), "grain": "minute"}

    @staticmethod
    def _zh_ymd(g: dict[str, str | None], text: str, m: re.Match[str], today: date) -> tuple[date, str]:
        y, mo, d = _int(g["y"]), _int(g["m"]), _int(g["d"])
        if g["y"] is not None and y is not None and y < 100:
            if mo is None:
                raise _Reject  # "用了10年" is not the year 2010
            y += 2000
        if g["yrel"]:
            y = today.year + _REL_YEARS[g["yrel"]]
        if g["mrel"]:
            mo_date = _add_months(today.replace(day=1), _SHIFT[g["mrel"]])
            if y is None:
                y = mo_date.year
            mo = mo_date.month
        if d is not None and mo is None and y is not None:
            raise _Reject  # "2024年5号"
        d_s, after = g["d"] or "", text[m.end():m.end() + 1]
        if d is not None and g["dsuf"] == "日" and mo is None and (
            len(d_s) == 1 and not d_s.isdigit() or (after != "" and after in "内游")
        ):
            raise _Reject  # "一日三餐", "3日内"
        if d is not None and not 1 <= d <= 31:
            raise _Reject
        if mo is not None and not 1 <= mo <= 12:
            raise _Reject
        if d is not None:
            if mo is not None and y is not None:
                return date(y, mo, d), "day"
            if mo is not None:
                return _nearest(today, _valid_dates((today.year + k, mo, d) for k in (-1, 0, 1))), "day"
            months = (_add_months(today.replace(day=1), k) for k in (-1, 0, 1))
            return _nearest(today, _valid_dates((x.year, x.month, d) for x in months)), "day"
        if mo is not None:
            if y is not None:
                return date(y, mo, 1), "month"
            mid = _nearest(today, _valid_dates((today.year + k, mo, 15) for k in (-1, 0, 1)))
            return mid.replace(day=1), "month"
        if y is not None:
            return date(y, 1, 1), "year"
        raise _Reject

    @staticmethod
    def _zh_clock(g: dict[str, str | None]) -> tuple[int, int | None, bool]:
        h = _int(g["h"])
        if h is None:
            raise _Reject
        if g["half"]:
            return h, 30, True
        if g["qtr"]:
            return h, 15 if g["qtr"][0] in "一1" else 45, True
        if g["mi"] is not None:
            mi_s = g["mi"]
            # "三点五"/"3点5" is 3.5, not 3:05; minutes need 分, two digits, or a 十
            if not g["ms"] and len(mi_s) < 2 and "十" not in mi_s:
                raise _Reject
            mi = _int(mi_s)
            if mi is None:
                raise _Reject
            return h, mi, True
        return h, None, False

    @staticmethod
    def _bare_time_confidence(g: dict[str, str | None], text: str, m: re.Match[str]) -> float:
        """Accept "3点"/"三点" alone only when the words around it read like a time."""
        if g["ch"] is not None:
            return 0.9
        prev = text[m.start() - 1:m.start()]
        if prev and prev in _BARE_TIME_PREV:
            raise _Reject  # "有三点", "第三点", "快一点"
        h_s = g["h"] or ""
        if h_s in ("一", "1") and not (g["half"] or g["qtr"] or g["mi"]):
            raise _Reject  # "一点" is "a little" far more often than 01:00
        if g["half"] or g["qtr"] or g["zheng"] or g["mi"] or g["hz"]:
            return 0.9
        rest = text[m.end():]
        if _BARE_TIME_NEXT.match(rest):
            return 0.7
        if h_s.isdigit() and (not rest or rest[0] in _PUNCT):
            return 0.7
        if not text[:m.start()].strip(_PUNCT) and not rest.strip(_PUNCT):
            return 0.7  # the whole message is the time: an answer to "几点方便？"
        raise _Reject

    def _resolve_en(self, m: re.Match[str], now: datetime) -> tuple[dict[str, str], float]:
        g = {k: (v.lower() if isinstance(v, str) else v) for k, v in m.groupdict().items()}
        today = now.date()
        day, date_grain, has_date, pod = today, "day", True, g["epod"]
        if g["erel"]:
            rel = re.sub(r"\s+", " ", g["erel"]).removeprefix("the ")
            offsets = {"day after tomorrow": 2, "day before yesterday": -2, "today": 0, "tonight": 0,
                       "tomorrow": 1, "tmrw": 1, "tmr": 1, "yesterday": -1}
            if rel.startswith("this "):
                if pod is not None:
                    raise _Reject
                pod, rel = rel.split()[1], "today"
            if rel == "tonight":
                if pod is not None:
                    raise _Reject
                pod = "night"
            day = today + timedelta(days=offsets[rel])
        elif g["ewd"]:
            wd = _EN_WEEKDAYS[g["ewd"]]
            pre = g["ewpre"]
            if pre == "next":
                day = today - timedelta(days=today.weekday()) + timedelta(days=7 + wd)
            elif pre in ("last", "past"):
                day = today - timedelta(days=(today.weekday() - wd - 1) % 7 + 1)
            else:
                day = today + timedelta(days=(wd - today.weekday()) % 7)
        elif g["ewk"]:
            shift = {"this": 0, "next": 1, "last": -1}[g["ewkpre"]]
            if g["ewk"] == "week":
                day, date_grain = today - timedelta(days=today.weekday()) + timedelta(days=7 * shift), "week"
            elif g["ewk"] == "month":
                day, date_grain = _add_months(today.replace(day=1), shift), "month"
            else:
                day, date_grain = date(today.year + shift, 1, 1), "year"
        elif g["emon"] or g["emon2"]:
            mo = _EN_MONTHS[g["emon"] or g["emon2"]]
            d = int(g["eday"] or g["eday2"])
            y = g["eyear"] or g["eyear2"]
            if y:
                day = date(int(y), mo, d)
            else:
                day = _nearest(today, _valid_dates((today.year + k, mo, d) for k in (-1, 0, 1)))
        else:
            has_date = False
        h: int | None = None
        mi: int | None = None
        minute_grain = False
        if g["eh"]:
            h, mi = int(g["eh"]), _int(g["em"])
            if not 1 <= h <= 12:
                raise _Reject
            h = h % 12 + (12 if g["eampm"].startswith("p") else 0)
            pod = None  # am/pm is explicit
            minute_grain = mi is not None
        elif g["eh2"]:
            h, mi, minute_grain = int(g["eh2"]), int(g["em2"]), True
        elif g["enoon"]:
            h, pod = (12, None) if g["enoon"] == "noon" else (24, None)
        elif g["eh3"] or g["eh4"]:
            if not has_date and pod is None and g["eh4"]:
                raise _Reject  # "at 3" needs a day or part of day to be a time
            h = int(g["eh3"] or g["eh4"])
        if h is None and not has_date:
            raise _Reject
        if date_grain != "day" and (h is not None or pod is not None):
            raise _Reject
        if h is not None and g["eh"] is None and g["eh2"] is None and g["enoon"] is None and pod is None:
            extra, hour = _hour_for(h, None, has_date, now, day)
            return self._value(day + timedelta(days=extra), hour, 0, "hour"), 1.0
        if h is not None and (g["eh"] or g["eh2"] or g["enoon"]):
            extra, hour = divmod(h, 24)
            if mi is not None and not 0 <= mi <= 59 or hour > 23:
                raise _Reject
            return self._value(day + timedelta(days=extra), hour, mi or 0,
                               "minute" if minute_grain else "hour"), 1.0
        return self._finish(now, day, has_date, date_grain, pod, h, mi, None, minute_grain), 1.0


# --------------------------------------------------------------------------- helpers


def _money_entity(m: re.Match[str], text: str, bare: bool) -> Entity | None:
    g = m.groupdict()
    unit = g.get("unit")
    after = text[m.end():m.end() + 1]
    if unit == "块" and not g.get("jiao") and after and "\u4e00" <= after <= "\u9fff" and after not in _OK_AFTER_KUAI:
        return None  # "三块蛋糕", "一块去"
    if unit == "元" and after == "旦":
        return None  # "元旦"
    if bare and after and after in _NOT_MONEY_AFTER_BARE:
        return None  # "3.5万公里", "3.5万人"
    amount = _to_number(g["amt"])
    if amount is None:
        return None
    mult = g.get("mult")
    value = float(amount) * (_MULT[mult.lower()] if mult else 1.0)
    jiao = g.get("jiao") or g.get("jiao2")
    if jiao:
        value += (_to_number(jiao) or 0) / 10
    cur_key = (g.get("cur") or unit or "").lower()
    currency = _CURRENCY.get(cur_key, "CNY")
    conf = 0.6 if bare else (0.8 if cur_key in ("刀", "pound", "pounds") else 1.0)
    return Entity("money", {"amount": round(value, 4), "currency": currency}, m.group(), m.start(), m.end(), conf)


def _resolve_overlaps(candidates: list[tuple[int, Entity]], n: int) -> list[Entity]:
    """Keep the longest match, then the higher-priority type; drop anything overlapping a kept one."""
    taken = bytearray(n)
    kept: list[Entity] = []
    for _, ent in sorted(candidates, key=lambda c: (c[1].start - c[1].end, -c[0], c[1].start)):
        if any(taken[ent.start:ent.end]):
            continue
        taken[ent.start:ent.end] = b"\x01" * (ent.end - ent.start)
        kept.append(ent)
    kept.sort(key=lambda e: e.start)
    return kept
