"""Text → BM25 terms: normalise (width, case, traditional → simplified), segment with jieba, drop stopwords.

Documents, queries, highlighting and type-ahead all go through one :class:`Analyzer`, so a query
typed in traditional characters or full-width letters meets the same terms as the article.
"""

from __future__ import annotations

from collections.abc import Iterable

from lingxi.nlu.normalize import Normalizer
from lingxi.nlu.tokenize import JiebaTokenizer

# Function words only: BM25's IDF already discounts frequent terms, and question words such as
# 怎么/为什么 carry intent in short customer questions, so they stay.
_ZH = "的 了 吗 呢 啊 吧 呀 哦 嘛 么 和 与 及 或 在 是 我 你 您 我们 请问 一下 这个 那个 就 都 也 还"
_EN = ("a an and are as at be but by for if in into is it no not of on or such that the their then there these "
       "they this to was will with i me my we our you your he she its do does did can could would should "
       "have has had so what which who whom am been being")
ZH_STOPWORDS = frozenset(_ZH.split(" "))
EN_STOPWORDS = frozenset(_EN.split(" "))


class Analyzer:
    """``terms(text) -> list[str]``; ``normalize(text) -> str``. Cheap to build; jieba loads on first use."""

    def __init__(self, user_words: Iterable[str] = (), stopwords: bool = True) -> None:
        self.user_words = tuple(user_words)
        self.stopwords = stopwords
        self._normalizer = Normalizer()
        self._tokenizer = JiebaTokenizer(self.user_words)

    def initialize(self) -> Analyzer:
        self._tokenizer.initialize()
        return self

    def normalize(self, text: str) -> str:
        return self._normalizer(text)

    def terms(self, text: str, normalized: bool = False) -> list[str]:
        norm = text if normalized else self._normalizer(text)
        words = self._tokenizer.words(norm)
        if not self.stopwords:
            return words
        return [w for w in words if w not in ZH_STOPWORDS and w not in EN_STOPWORDS]
