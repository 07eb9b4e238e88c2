"""Importers: bring a bot built with another tool (Rasa, …) into a Lingxi domain folder.

Each importer writes the files ``lingxi validate`` and ``lingxi train`` read, plus an
``import-report.md`` that lists, with the source file and line, what was mapped, what was
approximated and what was dropped, so nothing is lost silently.
"""

from .report import ImportError_, ImportNote, ImportReport

__all__ = ["ImportError_", "ImportNote", "ImportReport"]
