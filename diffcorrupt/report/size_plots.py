"""Figures of the memorization regime, drawn when a batch holds runs on several training subsets
(``data.subset``): each tracked metric against the training step (one line per subset and setting)
and, at the latest step, against the training-set size N (one line per setting). Each guidance scale
gets its own figures, since guidance moves samples towards, and sometimes onto, training images.

The tracked metrics are the experiment's questions: does the model copy (``copy_ratio``, in pixels),
how far is it from held-out images (the classifier's FD), how often is the class right (accuracy),
and how much of the held-out distribution does it cover (recall).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterable

from diffcorrupt.report.plots import Lines, add_point, axis_label, latest_rows, save_lines
from diffcorrupt.report.tables import METRIC_NAMES, Row, aggregate, setting_label

TRACKED = (("pixels", "copy_ratio"), ("classifier", "fd"), ("classifier", "accuracy"), ("classifier", "recall"))
_SIZE = re.compile(r"\[(\d+):(\d+)\]$")


def subset_size(subset: str) -> int | None:
    """N of a subset spec ('balanced[0:500]' -> 500); None for the whole split."""
    match = _SIZE.search(subset or "")
    return int(match[2]) - int(match[1]) if match else None


def write_size_plots(rows: Iterable[Row], out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """memorization_<metric>_vs_step_cfg<s>.png and memorization_<metric>_vs_size_cfg<s>.png; nothing
    unless the rows hold at least two subsets."""
    aggregated = aggregate(rows)
    if len({row.get("subset") for row in aggregated if subset_size(row.get("subset"))}) < 2:
        return []
    out, written = pathlib.Path(out_dir), []
    for network, metric in TRACKED:
        chosen = [row for row in aggregated if row["network"] == network and row.get(metric) is not None]
        for scale in sorted({row["cfg_scale"] for row in chosen}):
            at_scale = [row for row in chosen if row["cfg_scale"] == scale]
            name = f"memorization_{metric}_vs_%s_cfg{scale:g}.png"
            by_step: Lines = {}
            for row in at_scale:
                add_point(by_step, setting_label(row), row["step"], row, metric)
            by_size: Lines = {}
            for row in latest_rows(at_scale, key=setting_label):
                if subset_size(row.get("subset")):
                    add_point(by_size, setting_label({**row, "subset": None}), subset_size(row["subset"]), row, metric)
            label = axis_label(metric, network)
            for kind, lines, xlabel in (("step", by_step, "training step"), ("size", by_size, "training images N")):
                path = out / (name % kind)
                title = f"{METRIC_NAMES[metric]} at guidance {scale:g} vs {xlabel}"
                if save_lines(path, lines, xlabel, label, title + (" (latest step)" if kind == "size" else ""),
                              log_x=kind == "size"):
                    written.append(path)
    return written
