"""Published reference figures for the shared benchmark sets, shown beside a run's own numbers.

Only figures quoted with their source in ``evals/RESULTS.md`` are listed; ``compare_to`` names the
results key measured the same way (``None`` when no key of ours is directly comparable).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Reference:
    method: str
    metric: str
    value: float | None
    text: str
    source: str
    compare_to: str | None = None
    shots: int | None = None  # few-shot figures apply only to runs with this many shots


REFERENCES: dict[str, tuple[Reference, ...]] = {
    "banking77": (
        Reference("bge-small + LinearSVC", "accuracy", 0.9308, "93.08%", "HF model card", "in_scope_top1_accuracy"),
        Reference("ConvFiT (fine-tuned)", "accuracy", 0.9416, "94.16%", "Vulić et al. 2021", "in_scope_top1_accuracy"),
        Reference("CPFT (fine-tuned)", "10-shot accuracy", 0.872, "87.2%", "Zhang et al. 2021", "in_scope_top1_accuracy",
                  shots=10),
        Reference("DNNC (fine-tuned)", "10-shot accuracy", 0.867, "86.7%", "Zhang et al. 2020", "in_scope_top1_accuracy",
                  shots=10),
    ),
    "clinc150": (
        Reference("fine-tuned BERT", "in-scope accuracy", None, "≈ 96–97%", "Larson et al. 2019", "in_scope_accuracy"),
    ),
    "smp2017-ecdt-task1": (
        Reference("ensemble (official split)", "F1", 0.9355, "93.55%", "Costello et al. 2018", "macro_f1"),
    ),
    "banking77-oos": (
        Reference("—", "in-domain OOS", None, "much harder than generic OOS", "Zhang et al. 2021", None),
    ),
    "stackfaq": (
        Reference("BERT-FAQ unsupervised", "nDCG@10", 0.78, "0.78", "ML-Recipes BERT-FAQ", None),
        Reference("BERT-FAQ supervised", "nDCG@10", 0.988, "0.988", "ML-Recipes BERT-FAQ", None),
    ),
}


def references_for(dataset: str, shots: int | None = None) -> list[dict]:
    """The figures that apply to a run on ``dataset`` (few-shot ones only at the same shot count)."""
    return [asdict(r) for r in REFERENCES.get(dataset, ()) if r.shots == shots]
