"""Figures for a batch evaluation, one set per feature network: the guidance-scale sweep (of the distance and of
each further metric of the paper), the cost of corruption (distance vs corruption ratio), the trade-offs that
guidance moves along (precision/recall, the distance against IS, class accuracy or CLIP score), training progress,
the distance against sampler steps (few-step sampling), and the distribution of the samples' RMD (the paper's
Fig. 4). All but the last read seed-aggregated settings (see tables.aggregate), so error bars are the spread over
training seeds."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterable, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullLocator, PercentFormatter, ScalarFormatter  # noqa: E402

from diffcorrupt.report.equal_score import TRADED_SCORES  # noqa: E402
from diffcorrupt.report.figures import distinct_colours  # noqa: E402
from diffcorrupt.report.tables import (  # noqa: E402
    METRIC_NAMES, Row, aggregate, best_scale, is_clean, metric_value, primary_metric, setting_label)

# Metrics drawn against the guidance scale besides the primary distance, where a network has them.
SWEPT_METRICS = ("accuracy", "top_f1", "rmd_top1pct", "sample_entropy", "clip_score", "copy_ratio", "edge_f1")
# Metrics read against a chance level, drawn beside them: a personalized run's edge F1 against that of
# another control of the same class, which a model ignoring its control reaches.
CHANCE = {"edge_f1": ("edge_f1_other", "same-class control")}

NETWORK_NAMES = {"inception": "Inception", "classifier": "classifier features"}
# A line: label -> points (x, mean, std or None), drawn in x order.
Lines = dict[str, list[tuple[float, float, float | None]]]


def axis_label(metric: str, network: str) -> str:
    """'FID (Inception)', 'FD (classifier features)', 'recall (Inception)'."""
    return f"{METRIC_NAMES.get(metric, metric)} ({NETWORK_NAMES.get(network, network)})"


def _sampler_suffix(rows: Sequence[Row]) -> Callable[[Row], str]:
    """Sampler settings appended to legend labels only when a network's rows mix several, so lines never merge."""
    varied = len({(r.get("sampler"), r.get("steps"), r.get("num_samples")) for r in rows}) > 1
    return lambda r: f" ({r.get('sampler')} {r.get('steps')}, {r.get('num_samples')} samples)" if varied else ""


def latest_rows(rows: Iterable[Row], key: Callable[[Row], str]) -> list[Row]:
    """The rows at the latest checkpoint step of each key (runs may have trained for different lengths)."""
    rows = list(rows)
    last: dict[str, int] = {}
    for row in rows:
        last[key(row)] = max(last.get(key(row), row["step"]), row["step"])
    return [row for row in rows if row["step"] == last[key(row)]]


def add_point(lines: Lines, label: str, x: float, row: Row, metric: str) -> None:
    lines.setdefault(label, []).append((x, metric_value(row, metric), metric_value(row, f"{metric}_std")))


def save_lines(path: pathlib.Path, lines: Lines, xlabel: str, ylabel: str, title: str,
               percent_x: bool = False, log_x: bool = False, dashed: frozenset[str] = frozenset()) -> bool:
    """Error-bar lines (bars only where there is a seed std; ``dashed`` ones drawn so, in the colour of the
    line before them); skipped, returning False, with under two x values."""
    if len({x for points in lines.values() for x, _, _ in points}) < 2:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    distinct_colours(ax, len(set(lines) - dashed))
    colour = None
    for label, points in lines.items():
        xs, ys, stds = zip(*sorted(points, key=lambda point: point[0]))
        errors = [s or 0.0 for s in stds]
        style = {"linestyle": "--", "color": colour} if label in dashed else {}
        drawn = ax.errorbar(xs, ys, yerr=errors if any(errors) else None, marker="o", markersize=3, capsize=3,
                            label=label, **style)
        colour = drawn.lines[0].get_color()
    if percent_x:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    if log_x:  # ticks at the values drawn (training-set sizes, sampler steps), written out
        ax.set_xscale("log")
        ax.set_xticks(sorted({x for points in lines.values() for x, _, _ in points}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
    return _finish(fig, ax, path, xlabel, ylabel, title)


def _vs_cfg(path: pathlib.Path, network: str, aggregated: Sequence[Row], metric: str | None = None) -> bool:
    metric = metric or primary_metric(network)
    suffix = _sampler_suffix(aggregated)
    lines: Lines = {}
    chance, chance_name = CHANCE.get(metric, (None, ""))
    dashed = set()
    for row in latest_rows(aggregated, key=lambda r: setting_label(r) + suffix(r)):
        if metric_value(row, metric) is not None:
            add_point(lines, setting_label(row) + suffix(row), row["cfg_scale"], row, metric)
            if chance and metric_value(row, chance) is not None:
                dashed.add(f"{setting_label(row)}{suffix(row)}, {chance_name}")
                add_point(lines, f"{setting_label(row)}{suffix(row)}, {chance_name}", row["cfg_scale"], row, chance)
    return save_lines(path, lines, "classifier-free guidance scale", axis_label(metric, network),
                       f"{METRIC_NAMES[metric]} vs guidance scale (latest step)", dashed=frozenset(dashed))


def _vs_eta(path: pathlib.Path, network: str, best: Sequence[Row]) -> bool:
    """Clean runs are the eta = 0 point of every corruption line with the same CEP, baseline and sampler settings;
    a clean setting with no such line is drawn on its own."""
    metric = primary_metric(network)
    suffix = _sampler_suffix(best)
    latest = latest_rows(best, key=lambda r: setting_label(r) + suffix(r))
    lines: Lines = {}
    joins: dict[tuple, dict[str, None]] = {}  # (cep, baseline, sampler suffix) -> labels of its corruption lines
    for row in latest:
        if not is_clean(row):
            label = setting_label(row, with_eta=False) + suffix(row)
            add_point(lines, label, row["eta"], row, metric)
            joins.setdefault((row.get("cep"), row.get("baseline"), suffix(row)), {})[label] = None
    for row in latest:
        if is_clean(row):
            for label in joins.get((row.get("cep"), row.get("baseline"), suffix(row))) or [setting_label(row) + suffix(row)]:
                add_point(lines, label, 0.0, row, metric)
    return save_lines(path, lines, "corruption ratio η", axis_label(metric, network),
                       f"{METRIC_NAMES[metric]} at the best guidance scale vs corruption ratio (latest step)",
                       percent_x=True)


def _vs_step(path: pathlib.Path, network: str, best: Sequence[Row]) -> bool:
    metric = primary_metric(network)
    suffix = _sampler_suffix(best)
    lines: Lines = {}
    for row in best:
        add_point(lines, setting_label(row) + suffix(row), row["step"], row, metric)
    return save_lines(path, lines, "training step", axis_label(metric, network),
                       f"{METRIC_NAMES[metric]} at the best guidance scale vs training step")


def _vs_sampler_steps(path: pathlib.Path, network: str, best: Sequence[Row]) -> bool:
    """A line per setting and sampler: how a few-step sampler (a distilled run's lcm) closes on many steps."""
    metric = primary_metric(network)
    lines: Lines = {}
    for row in latest_rows(best, key=lambda r: f"{setting_label(r)} {r.get('sampler')}"):
        add_point(lines, f"{setting_label(row)} ({row.get('sampler')})", row["steps"], row, metric)
    return save_lines(path, lines, "sampler steps", axis_label(metric, network),
                      f"{METRIC_NAMES[metric]} at the best guidance scale vs sampler steps (latest step)", log_x=True)


def _trade_off(path: pathlib.Path, network: str, aggregated: Sequence[Row], x: str, y: str) -> bool:
    """``y`` against ``x`` with each guidance scale one point, annotated with its scale, and the seed spread on both
    axes: guidance buys one at the price of the other, so two settings compare fairly only along these curves (a
    setting that weakens guidance looks better at a fixed scale while lying on the same curve). Skipped, returning
    False, unless some setting has two scales."""
    suffix = _sampler_suffix(aggregated)
    series: dict[str, list[Row]] = {}
    for row in latest_rows(aggregated, key=lambda r: setting_label(r) + suffix(r)):
        if metric_value(row, x) is not None and metric_value(row, y) is not None:
            series.setdefault(setting_label(row) + suffix(row), []).append(row)
    if max((len(rows) for rows in series.values()), default=0) < 2:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    distinct_colours(ax, len(series))
    for label, rows in series.items():
        rows = sorted(rows, key=lambda r: r["cfg_scale"])
        spread = [[metric_value(r, f"{m}_std") or 0.0 for r in rows] for m in (x, y)]
        ax.errorbar([r[x] for r in rows], [r[y] for r in rows], xerr=spread[0], yerr=spread[1], marker="o",
                    markersize=4, linestyle=":", capsize=2, label=label)
        for row in rows:
            ax.annotate(f"{row['cfg_scale']:g}", (row[x], row[y]), textcoords="offset points", xytext=(3, 3),
                        fontsize=6)
    return _finish(fig, ax, path, axis_label(x, network), axis_label(y, network), f"{METRIC_NAMES[y]} vs "
                   f"{METRIC_NAMES[x]} across guidance scales (latest step; points labelled by scale)")


def _rmd_density(path: pathlib.Path, network: str, rows: Sequence[Row], best: Sequence[Row]) -> bool:
    """The per-sample RMD of each setting at its best guidance scale (latest step), seeds pooled, as
    density curves: a model that reaches into the tails of each class moves its mass to the right."""
    chosen = {(setting_label(r), r["cfg_scale"], r["step"], r.get("sampler"), r.get("steps")) for r in
              latest_rows(best, key=setting_label)}
    pooled: dict[str, list[np.ndarray]] = {}
    for row in rows:
        setting = (setting_label(row), row["cfg_scale"], row["step"], row.get("sampler"), row.get("steps"))
        # rows of an earlier report (--rows) may name a file that stayed with their run folder
        if row.get("rmd_file") and pathlib.Path(row["rmd_file"]).is_file() and setting in chosen:
            with np.load(row["rmd_file"]) as files:
                pooled.setdefault(f"{setting_label(row)} (guidance {row['cfg_scale']:g})", []).append(files[network])
    if not pooled:
        return False
    values = {label: np.concatenate(parts) for label, parts in pooled.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(values.values())), bins=60)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, scores in values.items():
        density, _ = np.histogram(scores, bins=edges, density=True)
        ax.plot((edges[:-1] + edges[1:]) / 2, density, label=f"{label}, {len(scores)} samples")
    return _finish(fig, ax, path, f"relative Mahalanobis distance ({NETWORK_NAMES.get(network, network)})", "density", "RMD of the samples at each setting's best guidance scale (latest step)")


def _finish(fig, ax, path: pathlib.Path, xlabel: str, ylabel: str, title: str) -> bool:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_plots(rows: Iterable[Row], out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """<network>_vs_cfg.png, <network>_vs_eta.png, <network>_precision_recall.png, <network>_<distance>_vs_<score>.png
    for each of TRADED_SCORES, <network>_vs_step.png, <network>_vs_sampler_steps.png, <network>_<metric>_vs_cfg.png
    for each of SWEPT_METRICS and <network>_rmd_density.png for each feature network in rows; a figure whose x axis
    would hold a single value, or that has no data, is not written. Returns the paths written."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    aggregated = aggregate(rows)
    best = best_scale(aggregated)
    written = []
    for network in dict.fromkeys(row["network"] for row in aggregated):
        everything = [r for r in aggregated if r["network"] == network]
        distance = primary_metric(network)
        # Rows without the primary distance have nothing to place on the distance plots.
        measured = [r for r in everything if metric_value(r, distance) is not None]
        ranked = [r for r in best if r["network"] == network]
        drawn = (("vs_cfg", _vs_cfg, measured), ("vs_eta", _vs_eta, ranked), ("vs_step", _vs_step, ranked),
                 ("vs_sampler_steps", _vs_sampler_steps, ranked))
        for name, draw, data in drawn if distance else ():
            path = out / f"{network}_{name}.png"
            if draw(path, network, data):
                written.append(path)
        trade_offs = [("precision_recall", "recall", "precision")]
        trade_offs += [(f"{distance}_vs_{score}", score, distance) for score in TRADED_SCORES if distance]
        for name, x, y in trade_offs:
            path = out / f"{network}_{name}.png"
            if _trade_off(path, network, everything, x, y):
                written.append(path)
        for metric in SWEPT_METRICS:
            path = out / f"{network}_{metric}_vs_cfg.png"
            if _vs_cfg(path, network, everything, metric):
                written.append(path)
        path = out / f"{network}_rmd_density.png"
        if _rmd_density(path, network, [r for r in rows if r["network"] == network], ranked):
            written.append(path)
    return written
