"""How audits and trial notes write values, differences and paths.

Shared by replay's audit, the learning-curve audit and the notes on trials, so a claim reads
the same in all three, and a reader elsewhere recognises every path.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path


def format_value(metric: str, value: float | None) -> str:
    """Counts as 1,333,770, accuracies as 91.23%, losses to four significant digits."""
    if value is None:
        return "-"
    if metric == "param_count" or metric == "stopped_epoch":
        return f"{value:,.0f}"
    if metric.endswith("accuracy"):
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"


def format_difference(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.endswith("accuracy"):
        return f"{100 * value:+.2f} pts"
    return f"{value:+,.4g}"


ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])/[^\s`'\"(),;]+")  # not inside a URL (sqlite:////tmp/..)
LONG_REASON = 60  # characters: a longer reason given by more than one row is stated once, as a note


def readable_paths(text: str) -> str:
    """`text` with absolute paths as a reader elsewhere recognises them: inside the working
    folder, relative to it; inside the temporary folder, without it and the scratch folder made
    there (/tmp/tmpab12/kmnist-7k -> kmnist-7k)."""
    scratch_root, here = Path(tempfile.gettempdir()).resolve(), Path.cwd().resolve()

    def shown(match: re.Match) -> str:
        raw = match.group(0)
        path, slash = Path(raw), "/" if raw.endswith("/") and raw != "/" else ""
        for root, drop in ((here, 0), (scratch_root, 1)):
            try:
                parts = path.relative_to(root).parts
            except ValueError:
                continue
            kept = parts[drop:] or parts[-1:]
            return (str(Path(*kept)) + slash) if kept else "."
        return raw

    return ABSOLUTE_PATH.sub(shown, text)


def clauses(reason: str) -> list[str]:
    """A reason's clauses: split at '; ' outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(reason):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and reason.startswith("; ", i):
            parts.append(reason[start:i])
            start = i + 2
    return [*parts, reason[start:]]


def _gist(clause: str) -> str:
    """What a clause says before its details: up to ' (' or ':'."""
    cut = min((i for i in (clause.find(" ("), clause.find(":")) if i > 0), default=len(clause))
    return clause[:cut]


def footnoted_table(columns: Sequence[str], rows: Sequence[Sequence[str]], reason_column: int) -> list[str]:
    """A markdown table whose reason column states each long clause that several rows share
    once, as a numbered note under the table; paths are shown by `readable_paths`."""
    split = [clauses(readable_paths(row[reason_column])) for row in rows]
    counts: dict[str, int] = {}
    for parts in split:
        for part in dict.fromkeys(parts):
            counts[part] = counts.get(part, 0) + 1
    notes: list[str] = []
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row, parts in zip(rows, split, strict=True):
        shown = []
        for part in parts:
            if counts[part] > 1 and len(part) > LONG_REASON:
                if part not in notes:
                    notes.append(part)
                part = f"{_gist(part)}: see note {notes.index(part) + 1}"
            shown.append(part)
        cells = [readable_paths(cell) for cell in row]
        cells[reason_column] = "; ".join(shown)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    if notes:
        lines += ["", "Notes:", ""] + [f"{i}. {note}" for i, note in enumerate(notes, 1)]
    return lines
