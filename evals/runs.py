"""An eval run is a folder: ``results.json`` + ``errors.jsonl`` + ``predictions.jsonl`` + ``report.html``.

``results.json`` has a stable envelope shared by every suite (``schema_version`` 1):

* ``suite`` — ``intent`` | ``retrieval`` | ``conversations`` | ``latency``;
* ``dataset``, ``source``, ``dataset_fingerprint`` (hash of the exact rows used), ``split`` (what
  was reported and what anything was fitted on), ``seed``;
* ``model`` — a dict with at least ``version`` (a bundle version, or for a model trained inside the
  run a hash of its configuration, training data and seed);
* ``created_at``, ``lingxi_version``, ``git_commit``, ``command`` — to reproduce it;
* ``files`` — the run's other files; suite-specific metrics as top-level keys (fractions in 0..1).

``predictions.jsonl`` holds one line per scored example with a stable ``id``, so two runs over the
same data can be compared example by example (:mod:`lingxi.evals.compare`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

SCHEMA_VERSION = 1
RESULTS = "results.json"
ERRORS = "errors.jsonl"
PREDICTIONS = "predictions.jsonl"
REPORT = "report.html"
FIGURES = "figures"


class RunError(ValueError):
    """A run folder is missing or unreadable; the message names the file (and line)."""


def provenance(suite: str) -> dict:
    """The envelope fields every results.json starts with."""
    from lingxi.training.tracking import git_commit

    try:
        version = metadata.version("lingxi")
    except metadata.PackageNotFoundError:
        version = "unknown"
    prog = Path(sys.argv[0]).name
    prog = "lingxi" if prog in ("lingxi", "cli.py") else prog
    return {"schema_version": SCHEMA_VERSION, "suite": suite,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "lingxi_version": version, "git_commit": git_commit(), "command": " ".join([prog, *sys.argv[1:]])}


def config_version(*parts: object) -> str:
    """A short deterministic id for a model trained inside a run (same config + data + seed → same id)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode())
    return "eval-" + digest.hexdigest()[:12]


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_results(out_dir: Path, results: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS
    path.write_text(json.dumps(results, ensure_ascii=False, indent=2), "utf-8")
    return path


def write_figures(out_dir: Path, figures: dict[str, bytes]) -> dict[str, str]:
    """Save each PNG under ``figures/`` (for MLflow and for people who want the image alone)."""
    folder = out_dir / FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, png in figures.items():
        (folder / f"{name}.png").write_bytes(png)
        out[name] = f"{FIGURES}/{name}.png"
    return out


def read_results(run: str | Path) -> dict:
    folder = Path(run)
    path = folder if folder.suffix == ".json" else folder / RESULTS
    if not path.is_file():
        raise RunError(f"{path}: no results.json here (a run is the --out folder of `lingxi eval`)")
    try:
        data = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}:{getattr(exc, 'lineno', 1)}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}:1: expected a JSON object")
    return data


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise RunError(f"{path}: file not found")
    out = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RunError(f"{path}:{lineno}: not a JSON line ({exc})") from None
            if not isinstance(row, dict):
                raise RunError(f"{path}:{lineno}: expected a JSON object")
            out.append(row)
    return out
