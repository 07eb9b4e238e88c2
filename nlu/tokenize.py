"""Word segmentation for Chinese (jieba) with a per-domain user dictionary.

The encoder works on characters/wordpieces and needs no segmentation; tokens are for the lexical
parts of Lingxi: word n-gram features of the intent head, BM25 over the knowledge base, keyword
statistics in insights. Domain words (product names, rule keywords like 花呗 or 保价) go into the
user dictionary so jieba keeps them whole.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

_PUNCT_OR_SPACE = re.compile(r"^[\s\W_]+$", re.UNICODE)


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


class JiebaTokenizer:
    """``tokenize(text) -> list[Token]``; punctuation and whitespace are dropped.

    Constructor stores the user words only; the jieba dictionary (≈ 1 s) loads in
    :meth:`initialize` or on first use, once per instance and thread-safely.
    """

    def __init__(self, user_words: Iterable[str] = ()) -> None:
        self.user_words = tuple(sorted({w.strip() for w in user_words if w and w.strip()}))
        self._jieba = None
        self._lock = threading.Lock()

    def initialize(self) -> JiebaTokenizer:
        if self._jieba is None:
            with self._lock:
                if self._jieba is None:
                    import jieba

                    jieba.setLogLevel(logging.WARNING)
                    tk = jieba.Tokenizer()
                    tk.initialize()
                    for word in self.user_words:
                        tk.add_word(word, freq=None, tag=None)
                        if " " not in word:
                            tk.suggest_freq(word, tune=True)
                    self._jieba = tk
        return self

    def tokenize(self, text: str) -> list[Token]:
        self.initialize()
        out: list[Token] = []
        for word, start, end in self._jieba.tokenize(text):
            if not word.strip() or _PUNCT_OR_SPACE.match(word):
                continue
            out.append(Token(word, start, end))
        return out

    def words(self, text: str) -> list[str]:
        return [t.text for t in self.tokenize(text)]
