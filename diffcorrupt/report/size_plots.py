"""Figures of the memorization regime, drawn when a batch holds runs on training subsets of a known
size N (``data.subset``): each tracked metric against the training step (one line per subset and
setting), and at the latest step against the corruption ratio (one line per N and CEP setting) and
against N (one line per setting). Each guidance scale gets its own figures, since guidance moves
samples towards, and sometimes onto, training images. Error bars are the spread over seeds.

The tracked metrics are the experiment's questions: does the model copy (``copy_ratio``, in pixels;
the paper's ``memorization_ratio``, in classifier features), how far is it from held-out images (the
classifier's FD), how often is the class right (accuracy), and how much of the held-out
distribution does it cover, and with how many stray samples (recall, precision).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterable

from diffcorrupt.report.plots import Lines, add_point, axis_label, latest_rows, save_lines
from diffcorrupt.report.tables import METRIC_NAMES, Row, aggregate, is_clean, setting_label

TRACKED = (("pixels", "copy_ratio"), ("classifier", "memorization_ratio"), ("classifier", "fd"),
           ("classifier", "accuracy"), ("classifier", "recall"), ("classifier", "precision"))
_SIZE = re.compile(r"\[(\d+):(\d+)\]$")


def subset_size(subset: str) -> int | None:
    """N of a subset spec ('balanced[0:500]' -> 500); None for the whole split."""
    match = _SIZE.search(subset or "")
    return int(match[2]) - int(match[1]) if match else None


def write_size_plots(rows: Iterable[Row], out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """memorization_<metric>_vs_{step,eta,size}_cfg<s>.png, each where it has two x values to draw;
    nothing unless some rows trained on a sized subset."""
    aggregated = aggregate(rows)
    sized = [row for row in aggregated if subset_size(row.get("subset"))]
    if not sized:
        return []
    kinds = sorted({row["corruption"] for row in sized if not is_clean(row)})
    out, written = pathlib.Path(out_dir), []
    for network, metric in TRACKED:
        chosen = [row for row in sized if row["network"] == network and row.get(metric) is not None]
        for scale in sorted({row["cfg_scale"] for row in chosen}):
            at_scale = [row for row in chosen if row["cfg_scale"] == scale]
            latest = latest_rows(at_scale, key=setting_label)
            lines: dict[str, Lines] = {"step": {}, "eta": {}, "size": {}}
            for row in at_scale:
                add_point(lines["step"], setting_label(row), row["step"], row, metric)
            for row in latest:
                add_point(lines["eta"], _eta_line(row, several_kinds=len(kinds) > 1), row["eta"] or 0.0, row, metric)
                add_point(lines["size"], setting_label({**row, "subset": None}), subset_size(row["subset"]), row, metric)
            label = axis_label(metric, network)
            for kind, xlabel in (("step", "training step"), ("eta", f"corruption ratio ({', '.join(kinds)})"),
                                 ("size", "training images N")):
                path = out / f"memorization_{metric}_vs_{kind}_cfg{scale:g}.png"
                title = f"{METRIC_NAMES[metric]} at guidance {scale:g} vs {xlabel.split(' (')[0]}"
                if save_lines(path, lines[kind], xlabel, label, title + ("" if kind == "step" else " (latest step)"),
                              percent_x=kind == "eta", log_x=kind == "size"):
                    written.append(path)
    return written


def _eta_line(row: Row, several_kinds: bool) -> str:
    """The line a run joins against the corruption ratio: its N and what it adds besides corruption
    (CEP, a baseline), so that a clean run is the eta = 0 point of its corrupted runs' line."""
    extras = setting_label({**row, "corruption": "none", "eta": 0.0, "subset": None}).removeprefix("clean")
    kind = f", {row['corruption']}" if several_kinds and not is_clean(row) else ""
    return f"N = {subset_size(row['subset']):,}{kind}{extras}"
