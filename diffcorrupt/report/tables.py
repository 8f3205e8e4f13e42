"""Result tables for a batch evaluation: every raw row, seed-aggregated settings, and the best guidance scale.

A row is one (run, checkpoint step, sampler settings, feature network) evaluation. Runs that differ only by
training seed share a *setting*, and the paper compares settings, not runs, so seeds are averaged first (mean,
sample standard deviation, n); the paper then reports each setting at its best classifier-free guidance scale.
"""

from __future__ import annotations

import csv
import math
import pathlib
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]

METRICS = ("fid", "fd", "sfid", "inception_score", "precision", "recall", "accuracy", "memorization_ratio",
           "top5_distance", "top_f1", "rmd_top1pct", "sample_entropy", "clip_score", "copy_ratio", "edge_f1",
           "edge_f1_other")
METRIC_NAMES = {"fid": "FID", "fd": "FD", "sfid": "sFID", "inception_score": "IS", "precision": "precision",
                "recall": "recall", "accuracy": "accuracy", "memorization_ratio": "memorization ratio",
                "top5_distance": "top-5 distance", "top_f1": "TopP&R F1", "rmd_top1pct": "top-1% RMD", "sample_entropy": "sample entropy",
                "clip_score": "CLIP score", "copy_ratio": "copies", "edge_f1": "edge F1",
                "edge_f1_other": "edge F1 (same-class control)"}
IDENTITY = ("run", "workdir", "config_hash", "teacher", "base", "subset", "corruption", "eta", "cep", "baseline", "distilled",
            "personalized", "seed",
            "step", "sampler", "steps", "cfg_scale", "num_samples", "network")
# Keys that tell seeds of one setting apart; the rest of IDENTITY is the setting. Other row keys (evaluation extras
# such as inception_score_std or accuracy_<attribute>) are measurements: kept in results.csv, never grouped by.
RUN_KEYS = ("run", "workdir", "config_hash", "teacher", "base", "seed")
SETTING_KEYS = tuple(k for k in IDENTITY if k not in RUN_KEYS)
_ORDER = ("network", "subset", "corruption", "cep", "baseline", "distilled", "personalized", "eta", "step", "cfg_scale")
_THREE_DECIMALS = frozenset({"precision", "recall", "accuracy", "memorization_ratio", "sample_entropy", "top_f1",
                             "copy_ratio", "edge_f1", "edge_f1_other"})
_PAPER_METRICS = ("precision", "recall", "accuracy")
_MISSING = "—"
_CEP_SHORT = {"uniform": "U", "gaussian": "G"}


def primary_metric(network: str) -> str | None:
    """The distance settings are ranked by (lower is better): FID on Inception features, FD on the others';
    None in a VQ autoencoder's latents and in pixels, where only the sample entropy and the copies are measured."""
    try:
        return {"inception": "fid", "classifier": "fd", "clip": "fd", "vq": None, "pixels": None}[network]
    except KeyError:
        raise ValueError(f"no primary metric for feature network {network!r}") from None


def metric_value(row: Row, metric: str) -> float | None:
    """The metric as a float, or None when the evaluation did not produce it (absent, None or NaN)."""
    value = row.get(metric)
    if value is None or math.isnan(float(value)):
        return None
    return float(value)


def present_metrics(rows: Iterable[Row]) -> list[str]:
    """The METRICS that have at least one value in rows, in METRICS order."""
    rows = list(rows)
    return [m for m in METRICS if any(metric_value(row, m) is not None for row in rows)]


def is_clean(row: Row) -> bool:
    """Trained on uncorrupted conditions: no corruption kind, or a ratio of zero."""
    return row.get("corruption") in (None, "none") or not row.get("eta")


def cep_label(cep: str | None) -> str:
    """'uniform:1' -> 'CEP-U 1', 'gaussian:0.5' -> 'CEP-G 0.5'; empty for no CEP."""
    if cep in (None, "none"):
        return ""
    method, _, gamma = cep.partition(":")
    return f"CEP-{_CEP_SHORT.get(method, method)} {gamma}".rstrip()


def setting_label(row: Row, with_eta: bool = True) -> str:
    """'clean', 'symmetric 5%', 'clean + CEP-U 1', 'clean + label smoothing 0.1', 'symmetric 5% + LCM' (a
    consistency-distilled run), 'symmetric 5% + controlnet' (a personalized run, labelled by its base's
    pre-training): short enough for a legend entry or a table cell."""
    if is_clean(row):
        label = "clean"
    else:
        label = f"{row['corruption']} {row['eta'] * 100:g}%" if with_eta else str(row["corruption"])
    extras = [cep_label(row.get("cep")), "" if row.get("baseline") in (None, "none") else str(row["baseline"]),
              "LCM" if row.get("distilled") == "lcm" else "", row.get("personalized") or ""]
    label = " + ".join([label, *filter(None, extras)])
    return label if row.get("subset") in (None, "all") else f"{label} on {row['subset']}"


def _rank(value: Any) -> tuple:
    """Sort key that puts 'none' (clean, no CEP) before other strings and missing values last."""
    if value is None:
        return (2, 0)
    if isinstance(value, str):
        return (0 if value == "none" else 1, value)
    return (1, value)


def _present(rows: Sequence[Row], keys: Iterable[str]) -> list[str]:
    return [k for k in keys if any(k in row for row in rows)]


def by_setting(rows: Sequence[Row]) -> tuple[list[str], dict[tuple, list[Row]]]:
    """The setting keys the rows carry, and each setting's rows (its seeds) under the tuple of those keys' values."""
    columns = _present(rows, SETTING_KEYS)
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in columns), []).append(row)
    return columns, groups


def values_of(rows: Iterable[Row], metric: str) -> list[float]:
    """The metric's values over rows, leaving out the rows that lack it."""
    return [v for row in rows if (v := metric_value(row, metric)) is not None]


def in_setting_order(rows: Iterable[Row]) -> list[Row]:
    """Sorted by network, subset, corruption, cep, baseline, distilled, personalized, eta, step, cfg_scale (clean and
    'none' first), then the other setting keys."""
    order = [*_ORDER, *(k for k in SETTING_KEYS if k not in _ORDER)]
    return sorted(rows, key=lambda row: tuple(_rank(row.get(k)) for k in order))


def aggregate(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """One row per setting: its identity, n (rows, i.e. seeds, in it) and per metric `<m>` (mean over the seeds
    that have it) and `<m>_std` (sample std, ddof=1; None when fewer than two seeds have it), in setting order."""
    rows = list(rows)
    columns, groups = by_setting(rows)
    metrics = present_metrics(rows)
    out = []
    for key, members in groups.items():
        summary: dict[str, Any] = dict(zip(columns, key))
        summary["n"] = len(members)
        for metric in metrics:
            values = values_of(members, metric)
            summary[metric] = statistics.fmean(values) if values else None
            summary[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(summary)
    return in_setting_order(out)


def best_scale(aggregated: Iterable[Row]) -> list[dict[str, Any]]:
    """Per setting without its guidance scale, the aggregated row with the lowest mean primary metric (ties go to
    the smaller scale). Settings also differ by num_samples, so distances from different sample counts are never
    compared. Settings with no primary metric at any scale are left out. Keeps the input order."""
    groups: dict[tuple, list[Row]] = {}
    for row in aggregated:
        primary = primary_metric(row["network"])
        if primary is None or metric_value(row, primary) is None:
            continue
        groups.setdefault(tuple(row.get(k) for k in SETTING_KEYS if k != "cfg_scale"), []).append(row)

    def rank(row: Row) -> tuple:
        return metric_value(row, primary_metric(row["network"])), _rank(row.get("cfg_scale"))

    return [dict(min(members, key=rank)) for members in groups.values()]


def format_metric(metric: str, mean: float | None, std: float | None = None) -> str:
    """'12.34 ± 0.56' for distances and scores, three decimals for rates in [0, 1]; just the mean without a std."""
    if mean is None:
        return _MISSING
    digits = metric_digits(metric)
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def metric_digits(metric: str) -> int:
    return 3 if metric in _THREE_DECIMALS else 2


def cell(value: Any) -> str:
    if value is None:
        return _MISSING
    return f"{value:g}" if isinstance(value, float) else str(value)


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def by_network(rows: Sequence[Row]) -> dict[Any, list[Row]]:
    groups: dict[Any, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.get("network"), []).append(row)
    return groups


def sampler_label(row: Row) -> str:
    return f"{cell(row.get('sampler'))} {cell(row.get('steps'))}"


def _summary_markdown(aggregated: Sequence[Row], notes: Sequence[str]) -> str:
    sections = ["# Evaluation summary", "", "Mean ± sample std over training seeds (n seeds; no std for one seed).",
                *(f"\n{note}" for note in notes)]
    for network, rows in by_network(aggregated).items():
        metrics = present_metrics(rows)
        header = ["setting", "step", "sampler", "samples", "cfg", *(METRIC_NAMES[m] for m in metrics), "n"]
        body = ([setting_label(r), cell(r.get("step")), sampler_label(r), cell(r.get("num_samples")),
                 cell(r.get("cfg_scale")), *(format_metric(m, r.get(m), r.get(f"{m}_std")) for m in metrics),
                 str(r["n"])] for r in rows)
        sections += ["", f"## {network}", "", markdown_table(header, body)]
    return "\n".join(sections) + "\n"


def _best_markdown(best: Sequence[Row]) -> str:
    sections = ["# Best guidance scale per setting", "",
                "Each setting at the classifier-free guidance scale with the lowest mean primary distance."]
    for network, rows in by_network(best).items():
        metrics = [primary_metric(network)] + [m for m in _PAPER_METRICS if m in present_metrics(rows)]
        baselines = any(r.get("baseline") not in (None, "none") for r in rows)
        header = ["corruption", "eta", "CEP", *(["baseline"] if baselines else []), "step", "sampler", "samples",
                  "best cfg", *(METRIC_NAMES[m] for m in metrics), "n"]
        body = (["clean" if is_clean(r) else str(r["corruption"]), f"{(r.get('eta') or 0) * 100:g}%",
                 cep_label(r.get("cep")) or "none", *([cell(r.get("baseline"))] if baselines else []),
                 cell(r.get("step")), sampler_label(r), cell(r.get("num_samples")),
                 cell(r.get("cfg_scale")), *(format_metric(m, r.get(m), r.get(f"{m}_std")) for m in metrics),
                 str(r["n"])] for r in rows)
        sections += ["", f"## {network} ({METRIC_NAMES[metrics[0]]}, lower is better)", "", markdown_table(header, body)]
    return "\n".join(sections) + "\n"


def write_csv(path: pathlib.Path, rows: Sequence[Row], columns: Sequence[str]) -> None:
    """Missing values are blank; keys not in columns (metrics with no value in any row) are left out."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_comparison(out_dir: str | pathlib.Path, stem: str, rows: Sequence[Row],
                     markdown: str) -> dict[str, pathlib.Path]:
    """<stem>.csv (every key of ``rows``, in the order first seen) and <stem>.md (``markdown``); their paths by
    file name."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in (f"{stem}.csv", f"{stem}.md")}
    write_csv(paths[f"{stem}.csv"], rows, list(dict.fromkeys(k for row in rows for k in row)))
    paths[f"{stem}.md"].write_text(markdown)
    return paths


def write_tables(rows: Iterable[Row], out_dir: str | pathlib.Path, notes: Sequence[str] = ()) -> dict[str, pathlib.Path]:
    """results.csv (raw rows: identity, METRICS, then any extra measurements), summary.csv and summary.md
    (seed-aggregated, with ``notes``: what the evaluations could not measure), best.md (the paper table, per
    network). Returns the paths keyed by file name."""
    rows = list(rows)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    aggregated = aggregate(rows)
    paths = {name: out / name for name in ("results.csv", "summary.csv", "summary.md", "best.md")}
    extras = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in IDENTITY and k not in METRICS]
    write_csv(paths["results.csv"], rows, _present(rows, IDENTITY) + present_metrics(rows) + extras)
    write_csv(paths["summary.csv"], aggregated, list(aggregated[0]) if aggregated else [])
    paths["summary.md"].write_text(_summary_markdown(aggregated, notes))
    paths["best.md"].write_text(_best_markdown(best_scale(aggregated)))
    return paths
