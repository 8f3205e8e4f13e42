"""Each setting against the clean setting it departs from: the difference of the seed means, its standard error
and Welch's t-test.

The paper reports one run a setting. With a few seeds a setting, a difference says something only against the
seeds' own spread, and a verdict should say which differences the seeds resolve and which they do not. A setting's
clean counterpart agrees with it in every setting key but the ones a pre-training treatment changes (corruption,
its ratio, CEP, the baseline): the same network, training set, checkpoint step, sampler, guidance scale and sample
count, and the same distillation or personalization.
"""

from __future__ import annotations

import math
import pathlib
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from scipy import stats

from diffcorrupt.report.tables import (METRIC_NAMES, METRICS, Row, by_network, by_setting, cell, in_setting_order,
                                       is_clean, markdown_table, metric_digits, present_metrics, sampler_label,
                                       setting_label, values_of, write_comparison)

TREATMENT_KEYS = ("corruption", "eta", "cep", "baseline")
SIGNIFICANCE = 0.05


def against_clean(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """One row per setting that has a clean counterpart: its setting keys, ``n`` and ``n_clean`` (seeds), and per
    metric both sides have, ``<m>_diff`` (setting minus clean, of the seed means), ``<m>_se`` (its standard error,
    sqrt(s^2/n + s_clean^2/n_clean)) and ``<m>_p`` (Welch's two-sided t-test). The last two are None unless both
    sides have two seeds or more and some spread. In setting order."""
    rows = list(rows)
    columns, groups = by_setting(rows)
    context = [i for i, key in enumerate(columns) if key not in TREATMENT_KEYS]
    clean = {_context(key, context): members for key, members in groups.items() if untreated(members[0])}
    out = []
    for key, members in groups.items():
        reference = clean.get(_context(key, context))
        if reference is None or reference is members:
            continue
        entry: dict[str, Any] = dict(zip(columns, key)) | {"n": len(members), "n_clean": len(reference)}
        for metric in present_metrics(members + reference):
            treated, clean_values = values_of(members, metric), values_of(reference, metric)
            if treated and clean_values:
                entry |= _difference(metric, treated, clean_values)
        out.append(entry)
    return in_setting_order(out)


def write_against_clean(rows: Iterable[Row], out_dir: str | pathlib.Path) -> dict[str, pathlib.Path]:
    """vs_clean.csv and vs_clean.md, when some setting has a clean counterpart; returns their paths by file name."""
    compared = against_clean(rows)
    return write_comparison(out_dir, "vs_clean", compared, _markdown(compared)) if compared else {}


def _context(key: tuple, positions: Sequence[int]) -> tuple:
    return tuple(key[i] for i in positions)


def untreated(row: Row) -> bool:
    """Clean, with no CEP and no baseline regulariser: the setting every treatment is compared with."""
    return is_clean(row) and row.get("cep") in (None, "none") and row.get("baseline") in (None, "none")


def _difference(metric: str, treated: list[float], clean: list[float]) -> dict[str, float | None]:
    """Welch's test: the variance of each mean is its sample variance over its n, the degrees of freedom
    Welch-Satterthwaite's."""
    diff = statistics.fmean(treated) - statistics.fmean(clean)
    se = p = None
    if len(treated) > 1 and len(clean) > 1:
        parts = [statistics.variance(side) / len(side) for side in (treated, clean)]
        se = math.sqrt(sum(parts))
        if se > 0:
            dof = se**4 / sum(part**2 / (len(side) - 1) for part, side in zip(parts, (treated, clean)))
            p = float(2 * stats.t.sf(abs(diff) / se, dof))
    return {f"{metric}_diff": diff, f"{metric}_se": se, f"{metric}_p": p}


def _markdown(compared: Sequence[Row]) -> str:
    tested = sum(row.get(key) is not None for row in compared for key in row if key.endswith("_p"))
    sections = ["# Against clean", "",
                "Each setting minus the clean setting that matches it in everything else (network, training set, step, "
                "sampler, guidance scale, samples): the difference of the seed means ± its standard error. "
                f"**Bold**: Welch's t-test gives p < {SIGNIFICANCE:g}. Of the {tested} differences tested, about "
                f"{tested * SIGNIFICANCE:.0f} would pass by chance alone. With one seed on a side there is no standard "
                "error and no test."]
    for network, rows in by_network(compared).items():
        metrics = [m for m in METRICS if any(f"{m}_diff" in row for row in rows)]
        header = ["setting", "step", "sampler", "samples", "cfg", *(METRIC_NAMES[m] for m in metrics), "n / clean"]
        body = ([setting_label(r), cell(r.get("step")), sampler_label(r), cell(r.get("num_samples")),
                 cell(r.get("cfg_scale")), *(_cell(r, m) for m in metrics), f"{r['n']} / {r['n_clean']}"]
                for r in rows)
        sections += ["", f"## {network}", "", markdown_table(header, body)]
    return "\n".join(sections) + "\n"


def _cell(row: Row, metric: str) -> str:
    diff = row.get(f"{metric}_diff")
    if diff is None:
        return cell(None)
    digits, se, p = metric_digits(metric), row.get(f"{metric}_se"), row.get(f"{metric}_p")
    text = f"{diff:+.{digits}f}" if se is None else f"{diff:+.{digits}f} ± {se:.{digits}f}"
    return f"**{text}**" if p is not None and p < SIGNIFICANCE else text
