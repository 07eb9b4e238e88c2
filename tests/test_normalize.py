from lingxi.nlu.normalize import Normalizer, detect_language, fold_width


def test_full_width_traditional_and_case_are_folded():
    norm = Normalizer()
    assert norm("ＡＰＰ登錄不了！！！") == "app登录不了!"
    assert norm("我的帳號") == "我的帐号"
    assert norm("  Where   is\tmy   ORDER?? ") == "where is my order?"


def test_control_and_zero_width_characters_are_removed_but_emoji_kept():
    norm = Normalizer()
    assert norm("退\u200b款\x00吗") == "退款吗"
    assert norm("快递呢📦") == "快递呢📦"


def test_emoji_can_be_stripped_by_config():
    from lingxi.nlu.normalize import NormalizerConfig

    assert Normalizer(NormalizerConfig(strip_emoji=True))("快递呢📦") == "快递呢"


def test_fold_width_keeps_offsets():
    text = "订单ＤＤ２０２３，电话１３８"
    folded = fold_width(text)
    assert len(folded) == len(text)
    assert folded == "订单DD2023,电话138"


def test_language_detection():
    assert detect_language("app登录不了") == "zh"
    assert detect_language("where is my package") == "en"
    assert detect_language("12345 😀") == "und"
