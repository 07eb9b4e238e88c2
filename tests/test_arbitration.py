"""The arbitration rule (dialogue/arbitration.py ``decide``) on hand-made evidence: pure and fast."""

from __future__ import annotations

from lingxi.dialogue.arbitration import AnswerModel, Arbitration, Candidate, Evidence, decide

FLAT = AnswerModel(features=[], coef=[], intercept=0.0, mean=[], scale=[])
ARB = Arbitration(intent_model=FLAT, article_model=FLAT, answer_threshold=0.85, option_threshold=0.5,
                  margin=0.0, fill_threshold=0.1)


def intent(name, p, own=None):
    return Candidate("intent", name, p, intent=name, own_article=own)


def article(aid, p):
    return Candidate("article", aid, p)


def test_a_likely_article_answers_over_an_unsure_intent_and_an_own_article_lifts_its_intent():
    v = decide(Evidence([intent("refund_apply", 0.6)], [article("kb-refund-rejected", 0.9)], [], False), ARB)
    assert v.kind == "answer" and v.chosen.value == "kb-refund-rejected"
    # the intent's own article agreeing with it: one candidate, answered as the intent with the card
    v = decide(Evidence([intent("coupon_use", 0.7, own="kb-coupon-use")], [article("kb-coupon-use", 0.9)], [], False),
               ARB)
    assert v.kind == "answer" and v.chosen.kind == "intent" and v.chosen.probability == 0.9
    assert v.chosen.article is None or v.chosen.article.article_id == "kb-coupon-use"


def test_an_operator_rule_stands_at_the_threshold_unless_an_article_is_more_likely():
    rule = Candidate("rule", "app_crash", 0.3, operator=True)
    v = decide(Evidence([rule], [article("kb-login-help", 0.6)], [], False), ARB)
    assert v.kind == "answer" and v.chosen.value == "app_crash"
    v = decide(Evidence([rule], [article("kb-app-troubleshoot", 0.95)], [], False), ARB)
    assert v.kind == "answer" and v.chosen.value == "kb-app-troubleshoot"


def test_clarify_offers_plausible_intents_and_articles_and_falls_back_without_any():
    v = decide(Evidence([intent("logistics_query", 0.6)], [article("kb-freight-insurance", 0.55)],
                        [intent("logistics_query", 0.6), intent("delivery_time", 0.2), intent("express_company", 0.01)],
                        False), ARB)
    assert v.kind == "clarify"
    assert [o.value for o in v.options] == ["logistics_query", "kb-freight-insurance", "delivery_time"]
    v = decide(Evidence([intent("logistics_query", 0.3)], [article("kb-freight-insurance", 0.2)],
                        [intent("logistics_query", 0.3)], False), ARB)
    assert v.kind == "fallback"


def test_a_category_menu_is_offered_for_a_vague_message_not_for_implausible_candidates():
    menu = [intent("logistics_query", 0.01), intent("delivery_time", 0.0), intent("logistics_abnormal", 0.02)]
    vague = decide(Evidence([], [], menu, True, vague=True), ARB)  # 快递的事
    assert vague.kind == "clarify" and [o.value for o in vague.options] == [c.value for c in menu]
    ambiguous = decide(Evidence([], [article("kb-fresh-after-sales", 0.27)], menu, True, vague=False), ARB)  # 美团外卖送晚了
    assert ambiguous.kind == "fallback"
    plausible = [intent("logistics_query", 0.55), *menu[1:]]
    v = decide(Evidence([], [], plausible, True, vague=False), ARB)
    assert v.kind == "clarify" and [o.value for o in v.options] == [c.value for c in plausible]
