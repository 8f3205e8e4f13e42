"""Each setting against the clean one at equal class accuracy (or IS, or CLIP score) instead of at equal guidance
scale.

Guidance buys the score with the distance. A treatment that weakens the conditioning, as flipped labels do, moves a
model down the clean curve at a fixed scale: a lower distance paid for with a lower score, as a clean model at a
smaller scale would have it, and vs_clean.md counts that as a gain. Here the clean setting's guidance scales (seed
means, joined by straight lines in scale order) give the distance clean reaches at the setting's own score; a
setting is better only where it lies below that curve. A setting whose score lies outside the clean curve's range
is listed without a difference: extrapolating a trade-off says nothing measured.

The standard error is first order: each side's seed spread in the distance, and the clean curve's slope times both
sides' seed spreads in the score (how far a misplaced score moves the point along the curve).
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

from diffcorrupt.report.tables import (METRIC_NAMES, SETTING_KEYS, Row, aggregate, by_network, cell, format_metric,
                                       in_setting_order, markdown_table, metric_digits, metric_value, primary_metric,
                                       sampler_label, setting_label, write_comparison)
from diffcorrupt.report.versus_clean import TREATMENT_KEYS, untreated

# Scores that guidance raises at a cost in the distance, in the order a network's rows are searched for one.
TRADED_SCORES = ("accuracy", "inception_score", "clip_score")
_CONTEXT_KEYS = tuple(k for k in SETTING_KEYS if k not in TREATMENT_KEYS and k != "cfg_scale")


def at_equal_score(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """One row per treated setting and scale whose clean counterpart (same network, training set, step, sampler and
    sample count) has two guidance scales or more: its setting keys, ``n``, ``n_clean``, ``score`` and ``distance``
    (the metrics' names), their seed means, ``clean_distance`` (the clean curve at this score, None outside its
    range), ``clean_scales`` (the two scales it lies between), ``difference`` and ``se``. In setting order."""
    out = []
    for network, members in by_network(aggregate(rows)).items():
        distance = primary_metric(network)
        score = next((s for s in TRADED_SCORES if any(metric_value(r, s) is not None for r in members)), None)
        if distance is None or score is None:
            continue
        contexts: dict[tuple, list[Row]] = {}
        for row in members:
            if metric_value(row, distance) is not None and metric_value(row, score) is not None:
                contexts.setdefault(tuple(row.get(k) for k in _CONTEXT_KEYS), []).append(row)
        for group in contexts.values():
            curve = sorted((row for row in group if untreated(row)), key=lambda row: row["cfg_scale"])
            if len(curve) > 1:
                out += [_compare(row, curve, distance, score) for row in group if not untreated(row)]
    return in_setting_order(out)


def write_equal_score(rows: Iterable[Row], out_dir: str | pathlib.Path) -> dict[str, pathlib.Path]:
    """vs_clean_equal_score.csv and .md, when some setting can be compared; returns their paths by file name."""
    compared = at_equal_score(rows)
    return write_comparison(out_dir, "vs_clean_equal_score", compared, _markdown(compared)) if compared else {}


def _compare(row: Row, curve: Sequence[Row], distance: str, score: str) -> dict[str, Any]:
    entry: dict[str, Any] = {key: row.get(key) for key in SETTING_KEYS if key in row}
    entry |= {"n": row["n"], "n_clean": min(point["n"] for point in curve), "score": score, "distance": distance,
              "score_mean": row[score], "distance_mean": row[distance], "clean_distance": None, "clean_scales": None,
              "difference": None, "se": None}
    target = row[score]
    for a, b in zip(curve, curve[1:]):
        if a[score] != b[score] and min(a[score], b[score]) <= target <= max(a[score], b[score]):
            weight = (target - a[score]) / (b[score] - a[score])
            clean = a[distance] + weight * (b[distance] - a[distance])
            entry |= {"clean_distance": clean, "clean_scales": f"{a['cfg_scale']:g}-{b['cfg_scale']:g}",
                      "difference": row[distance] - clean}
            slope = (b[distance] - a[distance]) / (b[score] - a[score])
            entry["se"] = _standard_error(row, a, b, weight, slope, distance, score)
            break
    return entry


def _standard_error(row: Row, a: Row, b: Row, weight: float, slope: float, distance: str, score: str) -> float | None:
    """None unless every point has a seed spread in both metrics."""
    spreads = [metric_value(point, f"{metric}_std") for point in (row, a, b) for metric in (distance, score)]
    if any(s is None for s in spreads):
        return None
    row_d, row_s, a_d, a_s, b_d, b_s = spreads
    n, n_clean = row["n"], min(a["n"], b["n"])
    clean_d, clean_s = (1 - weight) * a_d + weight * b_d, (1 - weight) * a_s + weight * b_s
    return math.sqrt(row_d**2 / n + clean_d**2 / n_clean + slope**2 * (row_s**2 / n + clean_s**2 / n_clean))


def _markdown(compared: Sequence[Row]) -> str:
    sections = ["# Against clean at equal score", "",
                "Each setting against the clean curve of the same network, training set, step, sampler and samples: "
                "clean's guidance scales (seed means) joined by straight lines, read at the setting's own score. A "
                "negative difference is a better model; one at a fixed scale (vs_clean.md) may only be weaker "
                "guidance. ± is a first-order standard error from the seed spreads of both metrics; — where the "
                "setting's score lies outside the clean curve's range."]
    for network, rows in by_network(compared).items():
        distance, score = METRIC_NAMES[rows[0]["distance"]], METRIC_NAMES[rows[0]["score"]]
        header = ["setting", "step", "sampler", "samples", "cfg", score, distance, f"clean {distance} at this {score}",
                  "clean between scales", "difference", "n / clean"]
        body = ([setting_label(r), cell(r.get("step")), sampler_label(r), cell(r.get("num_samples")),
                 cell(r.get("cfg_scale")), format_metric(r["score"], r["score_mean"]),
                 format_metric(r["distance"], r["distance_mean"]), format_metric(r["distance"], r["clean_distance"]),
                 cell(r["clean_scales"]), _difference(r), f"{r['n']} / {r['n_clean']}"] for r in rows)
        sections += ["", f"## {network}", "", markdown_table(header, body)]
    return "\n".join(sections) + "\n"


def _difference(row: Row) -> str:
    if row["difference"] is None:
        return cell(None)
    digits = metric_digits(row["distance"])
    text = f"{row['difference']:+.{digits}f}"
    return text if row["se"] is None else f"{text} ± {row['se']:.{digits}f}"
