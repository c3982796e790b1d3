"""A markdown table, the one format REPORT.md's tables share (report.py, scaling_report.py)."""

from __future__ import annotations

__all__ = ["markdown_table"]


def markdown_table(header, rows) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])
