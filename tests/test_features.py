import numpy as np

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
