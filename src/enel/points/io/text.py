"""Text point files: ``.xyz`` / ``.txt`` / ``.pts`` (Leica PTS), one point per line."""

from __future__ import annotations

import re
import warnings
from io import StringIO
from pathlib import Path

import numpy as np

from .cloud import RawCloud, fail, raw_from_array

_TEXT_SEPARATORS = re.compile(r"[,;\s]+")
_COMMA_SEMICOLON_TO_SPACE = str.maketrans(",;", "  ")


def read_text(p: Path) -> RawCloud:
    """``.xyz`` / ``.txt`` / ``.pts``: one point per line, separated by spaces, tabs, commas or semicolons.

    Leading lines that are not numbers are a header and skipped; ``#`` starts a comment. A first line holding a
    single integer is a point count (Leica PTS). ``.pts`` also takes Leica's 4 columns (x y z intensity) and
    7 columns (x y z intensity r g b); the intensity is dropped.
    """
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise fail(
            p, "is not a text file (it holds non-UTF-8 bytes); expected one 'x y z [r g b]' line per point"
        ) from None
    lines = text.splitlines()
    notes: list[str] = []
    first, header = _first_numeric_line(lines)
    if header:
        notes.append(f"{header} header line(s) skipped")
    if first is None:
        raise fail(p, "contains no points")
    second, _ = _first_numeric_line(lines, first + 1)
    head = _numbers(lines[first])
    if second is not None and len(head) == 1 and len(_numbers(lines[second])) > 1 and head[0].is_integer():
        notes.append(f"first line is a point count ({int(head[0])}): skipped")
        first = second
    arr = _parse_rows(p, lines, first)
    if notes and notes[-1].startswith("first line is a point count") and int(head[0]) != len(arr):
        notes.append(f"the point count {int(head[0])} differs from the {len(arr)} rows read")
    if p.suffix.lower() == ".pts" and arr.shape[1] in (4, 7):
        arr = np.delete(arr, 3, axis=1)
        notes.append("column 4 (Leica PTS intensity) ignored")
    raw = raw_from_array(arr, p, "file")
    raw.notes[:0] = notes
    return raw


def _numbers(line: str) -> list[float] | None:
    """The numbers of one text line (``[]`` for a blank or comment line), or ``None`` if it is not numeric."""
    content = line.split("#", 1)[0].strip()
    try:
        return [float(t) for t in _TEXT_SEPARATORS.split(content) if t]
    except ValueError:
        return None


def _first_numeric_line(lines: list[str], start: int = 0) -> tuple[int | None, int]:
    """Index of the first line of numbers at or after ``start``, and how many non-numeric lines came before."""
    skipped = 0
    for index in range(start, len(lines)):
        values = _numbers(lines[index])
        if values is None:
            skipped += 1
        elif values:
            return index, skipped
    return None, skipped


def _parse_rows(p: Path, lines: list[str], first: int) -> np.ndarray:
    """Lines ``first..`` as an ``(N, C)`` float64 array: numpy's C parser, or a line-by-line diagnosis."""
    body = "\n".join(lines[first:]).translate(_COMMA_SEMICOLON_TO_SPACE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.loadtxt(StringIO(body), dtype=np.float64, comments="#", ndmin=2)
    except ValueError:
        pass
    width = None
    for number in range(first, len(lines)):
        values = _numbers(lines[number])
        if values is None:
            raise fail(p, f"line {number + 1} is not a row of numbers: {lines[number].strip()[:60]!r}")
        if not values:
            continue
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise fail(
                p,
                f"rows have different numbers of columns ({width} in the first row, "
                f"{len(values)} in line {number + 1})",
            )
    raise fail(p, "could not parse the rows of numbers")  # pragma: no cover - loadtxt failed on valid rows
