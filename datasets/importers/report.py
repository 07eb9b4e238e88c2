"""The import report: every source construct an importer saw, and what became of it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["mapped", "approximated", "dropped"]
KINDS: tuple[Kind, ...] = ("mapped", "approximated", "dropped")


@dataclass(frozen=True)
class ImportNote:
    kind: Kind
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ImportError_(ValueError):  # noqa: N801 - `ImportError` is a builtin
    """Source files that cannot be read at all; ``problems`` are ``file:line: message`` strings."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class ImportReport:
    source: str
    tool: str
    notes: list[ImportNote] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)

    def add(self, kind: Kind, file: str, line: int, message: str) -> None:
        self.notes.append(ImportNote(kind, file, line, message))

    def counts(self) -> dict[str, int]:
        c = Counter(n.kind for n in self.notes)
        return {k: c.get(k, 0) for k in KINDS}

    def to_markdown(self) -> str:
        lines = [f"# Import report: {self.tool} project `{self.source}`", ""]
        if self.summary:
            lines += ["| what | count |", "| --- | --- |"]
            lines += [f"| {k} | {v} |" for k, v in self.summary.items()]
            lines.append("")
        counts = self.counts()
        lines.append(", ".join(f"{counts[k]} {k}" for k in KINDS) + ".")
        for kind in KINDS:
            notes = sorted((n for n in self.notes if n.kind == kind), key=lambda n: (n.file, n.line))
            lines += ["", f"## {kind.capitalize()} ({len(notes)})", ""]
            lines += [f"- `{n.file}:{n.line}` {n.message}" for n in notes] or ["(none)"]
        return "\n".join(lines) + "\n"
