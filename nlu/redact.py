"""Redaction of personal data (phone numbers, e-mail addresses, IDs, bank cards, URLs) and of secrets in URLs.

``redact(text)`` replaces phone numbers with ``[phone]`` (also spaced, dashed, ``+86``, landlines and
numbers written in Chinese numerals), e-mail addresses with ``[email]``, resident ID numbers with
``[id]``, bank-card numbers with ``[card]`` and links with ``[url]``;
stores that keep customer text for analytics (feedback queries, the event store) call it when
``Settings.redact_pii`` is on, and :func:`install_log_redaction` applies it to every log record.
:func:`contains_personal` is the stricter test for text shown to *other* people (hot-query
suggestions): any of the above, any run of seven or more digits however separated, ``@``, or
anything that looks like a domain name. ``scrub_secrets(text)`` masks the password of ``scheme://user:password@host`` URLs, so a database
error message can be shown or logged without the credentials in it.

Full-width digits (``１３８…``, common from Chinese input methods) are found too: detection runs
on a copy in which full-width digits and signs are mapped one-to-one to ASCII, so the spans line
up with the original text.
"""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
_PHONE = re.compile(
    r"(?<![0-9A-Za-z])(?:"
    r"(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}"  # mainland mobile, optionally +86
    r"|0\d{2,3}[ -]?\d{7,8}"  # mainland landline with area code
    r"|[48]00[ -]?\d{3}[ -]?\d{4}"  # 400 / 800 service numbers
    r"|(?:\+|00)[1-9]\d{0,2}[ -]?\d(?:[ -]?\d){6,13}"  # international with a country code
    r")(?![0-9A-Za-z])"
)
_ID_CARD = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
                      r"(?![0-9A-Za-z])")
_BANK_CARD = re.compile(r"(?<![0-9A-Za-z])[3-6]\d{3}(?:[ -]?\d{4}){2}[ -]?\d{4}(?:[ -]?\d{1,3})?(?![0-9A-Za-z])")


def _luhn(number: str) -> bool:
    """The check digit of payment cards: tells a card number from an order number most of the time."""
    digits = [int(c) for c in number if c.isdigit()]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits)))
    return 16 <= len(digits) <= 19 and total % 10 == 0
_URL = re.compile(
    r"(?:(?:https?|ftp)://|www\.)[^\s<>\"'，。；！？、）】》]+"  # scheme:// or www.
    r"|(?<![A-Za-z0-9@._-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:com|cn|net|org|info|top|xyz|vip|shop|site|online|club|cc|io|me|co|app|link|example)"
    r"(?:/[^\s<>\"'，。；！？、）】》]*)?(?![A-Za-z0-9-])",
    re.IGNORECASE,
)
_CN_DIGIT = "零〇一二三四五六七八九幺两壹贰叁肆伍陆柒捌玖"
_CN_PHONE = re.compile(f"[{_CN_DIGIT}](?:[\\s\\-]*[{_CN_DIGIT}]){{6,}}")  # 7+ digits in Chinese numerals
_LOOSE_DIGITS = re.compile(r"\d(?:[\s\-.()/]*\d){6,}")  # 7+ digits however grouped: 400 820 8820
_DOMAINISH = re.compile(r"[A-Za-z0-9-]+\s*[.．。]\s*[A-Za-z]{2,}")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?=@)")
_FULLWIDTH = str.maketrans({**{chr(0xFF10 + i): str(i) for i in range(10)}, "＋": "+", "－": "-", "　": " ",
                            "＠": "@", "．": "."})


def redact(text: str) -> str:
    """``text`` with links as ``[url]``, e-mail addresses as ``[email]``, ID numbers as ``[id]``,
    bank cards as ``[card]`` and phone numbers as ``[phone]``."""
    if not text:
        return text
    probe = text.translate(_FULLWIDTH)  # same length as ``text``: every mapping is one character
    spans: list[tuple[int, int, str]] = []
    for pattern, label in ((_URL, "[url]"), (_EMAIL, "[email]"), (_ID_CARD, "[id]"), (_BANK_CARD, "[card]"),
                           (_PHONE, "[phone]"), (_CN_PHONE, "[phone]")):
        spans += [(m.start(), m.end(), label) for m in pattern.finditer(probe)
                  if not any(s < m.end() and m.start() < e for s, e, _ in spans)
                  and (pattern is not _BANK_CARD or _luhn(m.group()))]
    if not spans:
        return text
    out, last = [], 0
    for start, end, label in sorted(spans):
        out.append(text[last:start])
        out.append(label)
        last = end
    out.append(text[last:])
    return "".join(out)


def contains_personal(text: str) -> bool:
    """Whether ``text`` may carry personal data or a link: too risky to show to other visitors."""
    if not text:
        return False
    probe = text.translate(_FULLWIDTH)
    return (redact(probe) != probe or "@" in probe or bool(_LOOSE_DIGITS.search(probe))
            or bool(_DOMAINISH.search(probe)) or bool(_CN_PHONE.search(probe)))


def scrub_secrets(text: str) -> str:
    """Mask URL passwords: ``postgresql://app:s3cret@db/x`` → ``postgresql://app:***@db/x``."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text) if text else text


class _RedactingFactory:
    """A log-record factory that formats the message once and redacts it (installed idempotently)."""

    def __init__(self, inner, pii: bool) -> None:
        self.inner = inner
        self.pii = pii

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: leave the record to logging's own handling
            return record
        clean = scrub_secrets(message)
        if self.pii:
            clean = redact(clean)
        if clean != message:
            record.msg, record.args = clean, None
        return record


def install_log_redaction(pii: bool) -> None:
    """Scrub URL passwords from every log record, and phone numbers and e-mails too when ``pii``.

    A record factory (not a handler filter) so that it also covers handlers configured later,
    such as a JSON log formatter.
    """
    current = logging.getLogRecordFactory()
    if isinstance(current, _RedactingFactory):
        current.pii = current.pii or pii
        return
    logging.setLogRecordFactory(_RedactingFactory(current, pii))
