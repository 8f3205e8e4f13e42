"""Rows of earlier reports, read back from their ``results.csv``, so that one report can span runs
that no longer exist side by side: a grid trained over several sessions or clusters keeps each
session's small results file and drops the run folders, and the report is redrawn from the files.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffcorrupt.errors import UserError
from diffcorrupt.report.tables import IDENTITY, Row

_INTS = frozenset({"seed", "step", "steps", "num_samples"})
_TEXTS = frozenset(IDENTITY) - _INTS - {"eta", "cfg_scale"}
_REQUIRED = ("run", "step", "cfg_scale", "network")
# Folders differ between the machines a grid ran on; everything else in IDENTITY names one evaluation.
_SAME_EVALUATION = tuple(key for key in IDENTITY if key != "workdir")


def read_rows(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The rows of these results.csv files, typed as the report makes them (blank cells are absent),
    each file refused in one sentence when it is not one."""
    return [row for path in paths for row in _read(path)]


def merge_rows(earlier: list[Row], fresh: list[Row]) -> list[Row]:
    """``earlier`` then ``fresh``, where a fresh row replaces an earlier one of the same evaluation."""
    measured = {_evaluation(row) for row in fresh}
    return [row for row in earlier if _evaluation(row) not in measured] + list(fresh)


def _evaluation(row: Row) -> tuple:
    return tuple(row.get(key) for key in _SAME_EVALUATION)


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [key for key in _REQUIRED if key not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} is not a report's results.csv: it has no '{missing[0]}' column")
        rows = []
        for row in reader:
            if None in row.values() or None in row:
                raise UserError(f"{path} is cut short or damaged at line {reader.line_num}: its cells do not match "
                                "the header; write it again with diffcorrupt report")
            rows.append({key: _value(key, cell, path, reader.line_num) for key, cell in row.items() if cell != ""})
    return rows


def _value(key: str, cell: str, path: Path, line: int) -> Any:
    if key in _TEXTS:
        return cell
    try:
        return int(cell) if key in _INTS else float(cell)
    except ValueError:
        if key in IDENTITY:
            raise UserError(f"{path}, line {line}: '{key}' is '{cell}', not a number; write the file again with "
                            "diffcorrupt report") from None
        return cell  # a measurement's text (rmd_file, a note)
