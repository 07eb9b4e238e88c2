import numpy as np

from lingxi.nlu.decision import OOS, DecisionPolicy, Thresholds, decide, fit_thresholds

CLASSES = ["a", "b", "c", OOS]


def test_three_bands():
    t = Thresholds(reject=0.3, answer=0.7, margin=0.1)
    assert decide(np.array([0.9, 0.05, 0.03, 0.02]), CLASSES, t).kind == "answer"
    clarify = decide(np.array([0.5, 0.4, 0.05, 0.05]), CLASSES, t)
    assert clarify.kind == "clarify" and clarify.options == ("a", "b")
    assert decide(np.array([0.2, 0.1, 0.1, 0.6]), CLASSES, t).kind == "out_of_scope"
    # the explicit oos class never appears as an option or as the answer
    assert OOS not in decide(np.array([0.35, 0.1, 0.05, 0.5]), CLASSES, t).options


def test_fitted_reject_threshold_separates_in_scope_from_oos():
    rng = np.random.default_rng(0)
    n = 400
    gold, rows = [], []
    for i in range(n):
        label = ["a", "b", "c"][i % 3]
        p = rng.uniform(0.6, 0.95)
        row = np.full(4, (1 - p) / 3)
        row[CLASSES.index(label)] = p
        rows.append(row)
        gold.append(label)
    for _ in range(n // 2):
        row = rng.dirichlet([1, 1, 1, 1]) * 0.4
        row[3] += 1 - row.sum()
        rows.append(row)
        gold.append(OOS)
    t = fit_thresholds(np.array(rows), CLASSES, gold, DecisionPolicy(oos_prior=0.3))
    in_scope_max = max(r[:3].max() for r, g in zip(rows, gold, strict=True) if g == OOS)
    assert in_scope_max < t.reject <= 0.6 + 1e-6
    assert t.answer >= t.reject


def test_without_oos_rows_the_reject_threshold_keeps_most_right_answers():
    probs = np.array([[0.9, 0.05, 0.05, 0.0]] * 50 + [[0.4, 0.35, 0.25, 0.0]] * 50)
    gold = ["a"] * 100
    t = fit_thresholds(probs, CLASSES, gold, DecisionPolicy(in_scope_retention=0.99))
    assert t.reject <= 0.4


def test_a_vague_class_triggers_clarification_with_its_category():
    classes = ["a", "b", "clarify:账户", OOS]
    t = Thresholds(reject=0.3, answer=0.7, margin=0.1)
    d = decide(np.array([0.2, 0.1, 0.65, 0.05]), classes, t)
    assert d.kind == "clarify" and d.category == "账户"
    assert "clarify:账户" not in d.options and d.intent == "a"
    # a clear message is still answered even though the vague class exists
    assert decide(np.array([0.9, 0.02, 0.05, 0.03]), classes, t).kind == "answer"


def test_temperature_ignores_rows_whose_class_was_absent_from_their_fold():
    from lingxi.nlu.classifier import fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3))
    y = rng.integers(0, 3, 200)
    logits[np.arange(200), y] += 3.0  # informative logits: a temperature near 1 fits
    clean = fit_temperature(logits, y)
    poisoned = logits.copy()
    poisoned[:10, :] = 0.0
    poisoned[np.arange(10), y[:10]] = -1e4  # class unseen in that fold
    assert abs(fit_temperature(poisoned, y) - clean) < 0.2 * clean
    assert clean < 5.0


def test_similarity_discount_rejects_unfamiliar_messages_a_peaked_softmax_would_answer():
    """OOS rows here are as *peaked* as in-scope ones (p1 alone cannot separate them) but far from
    every training example; with held-out similarities the fitted weight makes the reject test use it."""
    rng = np.random.default_rng(1)
    rows, gold, sims = [], [], []
    for i in range(300):
        p = rng.uniform(0.5, 0.95)
        row = np.full(4, (1 - p) / 3)
        label = ["a", "b", "c"][i % 3]
        row[CLASSES.index(label)] = p
        rows.append(row)
        gold.append(label)
        sims.append(rng.uniform(0.85, 0.99))
    for i in range(100):
        p = rng.uniform(0.5, 0.95)
        row = np.full(4, (1 - p) / 3)
        row[i % 3] = p
        rows.append(row)
        gold.append(OOS)
        sims.append(rng.uniform(0.6, 0.8))
    probs, sims = np.array(rows), np.array(sims)
    plain = fit_thresholds(probs, CLASSES, gold, DecisionPolicy())
    with_sim = fit_thresholds(probs, CLASSES, gold, DecisionPolicy(), similarity=sims)
    assert plain.similarity_weight == 0.0 and with_sim.similarity_weight > 0

    def oos_recall(t, s):
        return np.mean([decide(r, CLASSES, t, None if s is None else x).kind == "out_of_scope"
                        for r, g, x in zip(probs, gold, sims, strict=True) if g == OOS])

    assert oos_recall(with_sim, sims) >= 0.9 > oos_recall(plain, None) + 0.3
    # a message identical to a training example (similarity 1) is judged on p1 alone
    t = Thresholds(reject=0.3, answer=0.7, margin=0.1, similarity_weight=10.0)
    assert decide(np.array([0.9, 0.05, 0.03, 0.02]), CLASSES, t, similarity=1.0).kind == "answer"
    assert decide(np.array([0.9, 0.05, 0.03, 0.02]), CLASSES, t, similarity=0.7).kind == "out_of_scope"
