"""Loaders for the public intent benchmarks in ``../shared/datasets`` and for any labelled JSONL file.

The data are never copied into this repository: they are read from a folder given by
``--datasets-dir``, ``$LINGXI_DATASETS_DIR``, or found as ``shared/datasets`` next to the checkout.

Every loader yields :class:`IntentRow` (``text``, ``intent``, ``split``) with ``oos`` marking
out-of-scope rows, and declares its protocol: which split trains, which (if any) calibrates, which
is reported, or seeded stratified k-fold for sets that ship as one pool (SMP2017).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OOS = "oos"


class DatasetError(ValueError):
    """A dataset is missing or a line is malformed; the message names the file and line."""


@dataclass(frozen=True)
class IntentRow:
    text: str
    intent: str
    split: str


@dataclass(frozen=True)
class IntentDataset:
    name: str
    rows: list[IntentRow]
    source: str
    kfold: int | None = None  # evaluate by seeded stratified k-fold over all rows (no test split)
    skipped: tuple[str, ...] = ()  # bad source lines left out, each as "file:line: reason"
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str = "test"

    def split(self, name: str | None) -> list[IntentRow]:
        return [r for r in self.rows if r.split == name] if name else []

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for r in self.rows:
            digest.update(f"{r.text}\t{r.intent}\t{r.split}\n".encode())
        return digest.hexdigest()[:16]


def datasets_root(explicit: str | Path | None = None) -> Path:
    """Where the shared public datasets live (first that exists)."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("LINGXI_DATASETS_DIR"):
        candidates.append(Path(os.environ["LINGXI_DATASETS_DIR"]))
    here = Path.cwd().resolve()
    repo = Path(__file__).resolve().parent.parent
    for base in (here, repo):
        candidates += [base / "shared" / "datasets", base.parent / "shared" / "datasets"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0] if explicit else repo.parent / "shared" / "datasets"


def read_jsonl(path: Path, skipped: list[str] | None = None) -> list[dict]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    out: list[dict] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                problem = f"{path}:{lineno}: not a JSON line ({exc})"
                if skipped is None:
                    raise DatasetError(problem) from None
                skipped.append(problem)
                continue
            if not isinstance(obj, dict):
                if skipped is None:
                    raise DatasetError(f"{path}:{lineno}: expected a JSON object")
                skipped.append(f"{path}:{lineno}: expected a JSON object")
                continue
            obj["_line"] = lineno
            out.append(obj)
    return out


def _rows(path: Path, text_key: str = "text", intent_of: Callable[[dict], str] | None = None,
          keep: Callable[[dict], bool] | None = None, split_of: Callable[[dict], str] | None = None,
          skipped: list[str] | None = None) -> list[IntentRow]:
    """Rows of a JSONL file; a bad row raises naming file and line, or is recorded in ``skipped``."""
    rows: list[IntentRow] = []
    for obj in read_jsonl(path, skipped):
        try:
            row = _row(path, obj, text_key, intent_of, keep, split_of)
        except DatasetError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
            continue
        if row is not None:
            rows.append(row)
    return rows


def _row(path: Path, obj: dict, text_key: str, intent_of, keep, split_of) -> IntentRow | None:
    if keep and not keep(obj):
        return None
    text = obj.get(text_key)
    intent = intent_of(obj) if intent_of else obj.get("intent")
    split = split_of(obj) if split_of else obj.get("split")
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{path}:{obj['_line']}: `{text_key}` must be a non-empty string")
    if not isinstance(intent, str) or not intent:
        raise DatasetError(f"{path}:{obj['_line']}: `intent` must be a non-empty string")
    if not isinstance(split, str):
        raise DatasetError(f"{path}:{obj['_line']}: `split` must be a string")
    return IntentRow(text, intent, split)


def load_clinc150(root: Path) -> IntentDataset:
    path = root / "clinc150" / "clinc150.jsonl"
    bad: list[str] = []
    rows = _rows(path, intent_of=lambda o: OOS if o.get("is_oos") else o.get("intent"), skipped=bad)
    return IntentDataset("clinc150", rows, str(path), skipped=tuple(bad))


def load_banking77(root: Path) -> IntentDataset:
    path = root / "banking77" / "banking77.jsonl"
    bad: list[str] = []
    return IntentDataset("banking77", _rows(path, skipped=bad), str(path), val_split=None, skipped=tuple(bad))


def load_banking77_oos(root: Path) -> IntentDataset:
    path = root / "banking77-oos" / "banking77_oos.jsonl"
    # Standard protocol: train on in-scope rows only; OOS rows of val calibrate, of test measure.
    bad: list[str] = []  # the source has 16 rows with an empty `text`: skipped and reported
    rows = [r for r in _rows(path, skipped=bad) if not (r.split == "train" and r.intent == OOS)]
    return IntentDataset("banking77-oos", rows, str(path), skipped=tuple(bad))


def load_smp2017(root: Path) -> IntentDataset:
    path = root / "smp2017-ecdt-task1" / "smp2017_task1.jsonl"
    bad: list[str] = []
    return IntentDataset("smp2017-ecdt-task1", _rows(path, skipped=bad), str(path), kfold=5, val_split=None,
                         skipped=tuple(bad))


def load_xsid_zh(root: Path) -> IntentDataset:
    """xSID has no training split: train on the 300 ``val`` rows (zh), report on ``test``."""
    path = root / "xsid-zh" / "xsid_zh_en.jsonl"
    bad: list[str] = []
    rows = _rows(path, keep=lambda o: o.get("lang") == "zh",
                 split_of=lambda o: "train" if o.get("split") == "val" else o.get("split"), skipped=bad)
    return IntentDataset("xsid-zh", rows, str(path), val_split=None, skipped=tuple(bad))


PUBLIC_INTENT_SETS: dict[str, Callable[[Path], IntentDataset]] = {
    "clinc150": load_clinc150,
    "banking77": load_banking77,
    "banking77-oos": load_banking77_oos,
    "smp2017-ecdt-task1": load_smp2017,
    "smp2017": load_smp2017,
    "xsid-zh": load_xsid_zh,
}


def load_intent_dataset(name_or_path: str, datasets_dir: str | Path | None = None,
                        skip_bad_lines: bool = False) -> IntentDataset:
    """A named public set, or a JSONL file with ``text``, ``intent`` (``oos`` = out of scope), ``split``."""
    if name_or_path in PUBLIC_INTENT_SETS:
        root = datasets_root(datasets_dir)
        if not root.is_dir():
            raise DatasetError(f"{root}: datasets folder not found (set --datasets-dir or LINGXI_DATASETS_DIR)")
        return PUBLIC_INTENT_SETS[name_or_path](root)
    path = Path(name_or_path)
    if not path.exists():
        raise DatasetError(
            f"{path}: no such file, and not a known dataset name ({', '.join(sorted(PUBLIC_INTENT_SETS))})"
        )
    bad: list[str] = []
    rows = _rows(path, skipped=bad if skip_bad_lines else None)
    splits = {r.split for r in rows}
    unknown = splits - {"train", "val", "test"}
    if unknown:
        raise DatasetError(f"{path}: unknown split(s) {sorted(unknown)}; use train, val, test")
    if "train" not in splits or "test" not in splits:
        raise DatasetError(f"{path}: needs rows with split `train` and `test`")
    return IntentDataset(path.stem, rows, str(path), val_split="val" if "val" in splits else None,
                         skipped=tuple(bad))
