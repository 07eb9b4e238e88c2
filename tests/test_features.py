import numpy as np
import pytest

from lingxi.nlu.features import TextFeaturizer


def test_fast_tfidf_path_equals_scikit_learn():
    train = ["我的快递到哪了", "怎么申请退款", "app登录不了", "where is my package", "发票怎么开", "退款进度查询"]
    feats = TextFeaturizer().fit(train)
    queries = ["快递到哪了呀", "退款", "zzz 完全没见过的字", "", "app 登录"]
    fast = feats._grams(queries).toarray()
    reference = feats.vectorizer_.transform(queries).toarray()
    assert np.allclose(fast, reference, atol=1e-6)
    emb = np.ones((len(queries), 4), dtype=np.float32)
    X = feats.transform(queries, emb)
    assert X.shape == (len(queries), 4 + reference.shape[1])


def test_head_scores_the_unstacked_blocks_like_the_stacked_matrix():
    """Serving's path (embeddings and n-grams kept apart) gives the numbers of the stacked matrix."""
    from lingxi.nlu.classifier import LogRegKnnHead

    rng = np.random.default_rng(0)
    train = ["我的快递到哪了", "怎么申请退款", "app登录不了", "where is my package", "发票怎么开", "退款进度查询",
             "快递几天能到", "退款多久到账", "密码忘了", "开个发票"]
    labels = ["track", "refund", "login", "track", "invoice", "refund", "track", "refund", "login", "invoice"]
    emb = rng.standard_normal((len(train), 8)).astype(np.float32)
    for weight in (1.0, 0.5):
        feats = TextFeaturizer(ngram_weight=weight).fit(train)
        head = LogRegKnnHead(dense_dim=8).fit(feats.transform(train, emb), labels)
        queries = ["快递到哪了呀", "退款", "zzz 完全没见过的字", "app 登录"]
        q = rng.standard_normal((len(queries), 8)).astype(np.float32)
        stacked = head.logits_and_similarity(feats.transform(queries, q))
        parts = head.logits_and_similarity_parts(*feats.transform_parts(queries, q))
        np.testing.assert_allclose(parts[0], stacked[0], atol=1e-5)
        np.testing.assert_allclose(parts[1], stacked[1], atol=1e-6)
        many = queries * 5  # more than 16 rows: the sparse-product path
        qq = np.tile(q, (5, 1))
        np.testing.assert_allclose(head.logits_and_similarity_parts(*feats.transform_parts(many, qq))[0],
                                   head.logits_and_similarity(feats.transform(many, qq))[0], atol=1e-5)
    binary = LogRegKnnHead(dense_dim=8).fit(feats.transform(train[:4], emb[:4]), ["a", "b", "a", "b"])
    np.testing.assert_allclose(binary.logits_and_similarity_parts(*feats.transform_parts(queries, q))[0],
                               binary.logits_and_similarity(feats.transform(queries, q))[0], atol=1e-5)
    with pytest.raises(ValueError, match="8 embedding columns"):
        head.logits_and_similarity_parts(q[:, :4], None)
