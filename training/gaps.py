"""Knowledge gaps: clusters of questions the bot could not answer, with a suggested article title.

*Unanswered* = messages the dialogue answered with its fallback (or the NLU rejected as out of
scope), plus search queries whose article a customer said did not resolve. Their distinct
normalised texts are embedded with the project's encoder (:mod:`lingxi.nlu.encoders`) and grouped
by average-linkage agglomerative clustering on cosine similarity.

Encoders disagree on what a "high" cosine is (multilingual-e5 puts unrelated questions near 0.85,
e5 ⊕ USE near 0.55), so similarities are first rescaled: ``s' = (s − m) / (1 − m)`` with ``m`` the
median similarity between the texts and a fixed set of unrelated anchor questions (the encoder's
"unrelated" level). ``min_similarity`` applies to ``s'``, and one setting works for both.

Each gap reports its size (messages, distinct texts), representative examples (the texts nearest
the cluster's centre, most frequent first), keywords (jieba TF-IDF over the cluster's texts,
with jieba's packaged IDF table) and a suggested article title: the medoid question with its
greeting and trailing punctuation stripped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import numpy as np

from lingxi.nlu.encoders import Encoder
from lingxi.nlu.normalize import Normalizer

from .insights import is_fallback, is_message


class GapConfig(msgspec.Struct, frozen=True, kw_only=True):
    min_similarity: float = 0.4  # on the rescaled similarity (see the module docstring)
    max_texts: int = 2000  # distinct texts clustered (the most frequent); the rest are counted as "other"
    min_count: int = 2  # smaller clusters are not reported
    examples: int = 3
    keywords: int = 5


class Gap(msgspec.Struct, kw_only=True):
    count: int  # messages
    distinct: int  # distinct texts
    suggested_title: str
    keywords: list[str]
    examples: list[str]
    channels: dict[str, int]
    first_seen: float
    last_seen: float


class _Seen:
    __slots__ = ("channels", "count", "first", "last")

    def __init__(self, ts: float) -> None:
        self.count = 0
        self.first = ts
        self.last = ts
        self.channels: Counter[str] = Counter()


def unanswered(events: Iterable[Any]) -> dict[str, _Seen]:
    """Normalised text → how often (and when, where) it went unanswered."""
    normalize = Normalizer()
    out: dict[str, _Seen] = {}
    for e in events:
        text = None
        if is_message(e) and is_fallback(e):
            text = e.payload.text
        elif e.type == "vote" and not e.payload.resolved and e.payload.query:
            text = e.payload.query
        if not text:
            continue
        key = normalize(text)
        if not key:
            continue
        seen = out.get(key)
        if seen is None:
            seen = out[key] = _Seen(e.ts)
        seen.count += 1
        seen.first, seen.last = min(seen.first, e.ts), max(seen.last, e.ts)
        seen.channels[e.channel or "unknown"] += 1
    return out


# Questions about unrelated things: how similar a text is to these is what "unrelated" means for an
# encoder (its floor), whatever the batch being clustered looks like.
ANCHORS = (
    "今天天气怎么样", "你们几点下班", "怎么修改收货地址", "会员怎么升级", "密码忘了怎么办", "能开发票吗",
    "退款多久到账", "快递到哪了", "优惠券怎么用", "可以分期付款吗", "怎么注销账号", "商品有质量问题",
    "附近有门店吗", "客服电话是多少", "为什么扣款了", "how do I reset my password", "where is my order",
    "can I change my delivery address", "我要投诉", "怎么绑定银行卡", "积分怎么查", "app打不开",
    "能便宜点吗", "尺码怎么选",
)
_anchor_cache: dict[str, np.ndarray] = {}


def anchor_vectors(encoder: Encoder) -> np.ndarray:
    key = f"{encoder.name}:{encoder.dim}"
    if key not in _anchor_cache:
        _anchor_cache[key] = np.asarray(encoder.encode(list(ANCHORS), "query"), np.float32)
    return _anchor_cache[key]


def rescaled_similarity(vectors: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Cosine similarities rescaled so that "unrelated" is 0 and identity is 1.

    "Unrelated" is the median similarity between the texts and :data:`ANCHORS`, so the scale does
    not depend on how many of the texts happen to be paraphrases of each other.
    """
    sims = np.clip(vectors @ vectors.T, -1.0, 1.0)
    m = float(np.median(vectors @ anchors.T))
    return (sims - m) / max(1e-6, 1.0 - m)


def cluster_texts(texts: Sequence[str], encoder: Encoder, min_similarity: float = 0.4) -> list[list[int]]:
    """Groups of indices into ``texts`` (average linkage on rescaled cosine), biggest first."""
    if not texts:
        return []
    vectors = np.asarray(encoder.encode(list(texts), "query"), np.float32)
    return cluster_vectors(vectors, anchor_vectors(encoder), min_similarity)


def cluster_vectors(vectors: np.ndarray, anchors: np.ndarray, min_similarity: float = 0.4) -> list[list[int]]:
    """Groups of row indices of L2-normalised ``vectors``, biggest first (``anchors``: see :func:`rescaled_similarity`)."""
    if len(vectors) < 2:
        return [[0]] if len(vectors) else []
    from sklearn.cluster import AgglomerativeClustering

    sims = rescaled_similarity(vectors, anchors)
    distance = np.clip(1.0 - sims, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    labels = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                     distance_threshold=1.0 - min_similarity).fit_predict(distance)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(int(label), []).append(i)
    return sorted(groups.values(), key=len, reverse=True)


_GREETING = re.compile(r"^(你好|您好|请问|亲|hi|hello|在吗|那个|嗯)[\s,，!！.。、~]*", re.IGNORECASE)
_TRAILING = re.compile(r"[\s?？!！.。~,，、呀啊呢吧]+$")


def title_from(text: str) -> str:
    """A question as an article title: no greeting in front, no trailing punctuation or particles."""
    t = text.strip()
    for _ in range(3):  # "你好，请问…" has two
        t = _GREETING.sub("", t)
    t = _TRAILING.sub("", t)
    return t or text.strip()


def keywords_of(texts: Sequence[str], top: int = 5, method: str = "tfidf") -> list[str]:
    """Keywords of a group of texts with jieba's TF-IDF (packaged IDF table) or TextRank."""
    import jieba.analyse

    joined = "\n".join(texts)
    if method == "textrank":
        words = jieba.analyse.textrank(joined, topK=top, allowPOS=("n", "nz", "v", "vn", "eng", "nr", "ns"))
        if words:
            return list(words)
    return list(jieba.analyse.extract_tags(joined, topK=top))


def knowledge_gaps(events: Iterable[Any], encoder: Encoder, config: GapConfig | None = None) -> list[Gap]:
    """Clusters of unanswered questions, biggest (by messages) first."""
    cfg = config or GapConfig()
    seen = unanswered(events)
    texts = [t for t, _ in sorted(seen.items(), key=lambda kv: -kv[1].count)[: cfg.max_texts]]
    if not texts:
        return []
    vectors = np.asarray(encoder.encode(texts, "query"), np.float32)
    gaps = []
    for members in cluster_vectors(vectors, anchor_vectors(encoder), cfg.min_similarity):
        count = sum(seen[texts[i]].count for i in members)
        if count < cfg.min_count:
            continue
        v = vectors[members]
        centre = v.mean(axis=0)
        closeness = v @ centre
        medoid = members[int(np.argmax((v @ v.T).sum(axis=1)))]
        order = sorted(range(len(members)), key=lambda j: (-round(float(closeness[j]), 2),
                                                           -seen[texts[members[j]]].count))
        examples = [texts[members[j]] for j in order[: cfg.examples]]
        channels: Counter[str] = Counter()
        for i in members:
            channels.update(seen[texts[i]].channels)
        gaps.append(Gap(count=count, distinct=len(members), suggested_title=title_from(texts[medoid]),
                        keywords=keywords_of([texts[i] for i in members], cfg.keywords), examples=examples,
                        channels=dict(channels.most_common()),
                        first_seen=min(seen[texts[i]].first for i in members),
                        last_seen=max(seen[texts[i]].last for i in members)))
    gaps.sort(key=lambda g: (-g.count, -g.distinct))
    return gaps
