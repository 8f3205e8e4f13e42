"""``diffcorrupt theory``: simulate the paper's Gaussian-mixture theory and compare it with its closed forms.

  diffcorrupt theory [--gammas=G,...] [--dims=D,...] [--n_per_class=N,...] [--draws=200] [--classes=2]
                     [--seed=0] [--out=theory]

--dims and --n_per_class are paired element by element (default (16, 200) and (32, 400), the paper's check, both
at n_k / d = 12.5). For every (d, n_k) and gamma, over --draws dataset draws: the measured entropy gain
H_gamma - H_0 and W2 gain W2^2(P, Q_0) - W2^2(P, Q_gamma) of the simulated models (mean and standard error over
draws), beside the closed forms on the same draws, as printed in the paper and for the exact optimum of its
stated linear model (see closed_forms). Writes ``theory.json``, ``theory.md`` and ``theory.png`` into --out and
prints one JSON line.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from diffcorrupt import jobs
from diffcorrupt.errors import UserError
from diffcorrupt.flag_types import non_negative_int, positive_int
from diffcorrupt.output_paths import output_folder
from diffcorrupt.theory import closed_forms
from diffcorrupt.theory.simulate import Setting, draw_datasets, measure

DEFAULT_GAMMAS = "0,0.025,0.05,0.075,0.1,0.125,0.15,0.175,0.2,0.25,0.3,0.4,0.5"
METRICS = ("w2_gain", "entropy_gain")
SOURCES = ("measured", "paper", "exact")  # simulation, closed form as printed, closed form of the exact optimum


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("theory", __doc__.splitlines()[0], config=False)
    parser.add_argument("--gammas", default=DEFAULT_GAMMAS, help="condition-noise scales gamma, comma-separated")
    parser.add_argument("--dims", default="16,32", help="dimensions d, comma-separated")
    parser.add_argument("--n_per_class", default="200,400", help="n_k per class, one per --dims entry")
    parser.add_argument("--draws", type=positive_int, default=200, help="dataset draws per setting")
    parser.add_argument("--classes", type=positive_int, default=2, help="classes K (means ||mu_k|| e_k, so K <= d)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out", default="theory")
    flags = parser.parse_args(argv)
    gammas = np.array(sorted(set(_numbers("--gammas", flags.gammas, float, minimum=0))))
    settings = _settings(flags)
    out = output_folder(flags.out, "--out")
    began = time.perf_counter()
    per_setting = {setting: run_setting(setting, gammas, flags.draws, flags.seed) for setting in settings}
    rows = [row for found in per_setting.values() for row in found]
    crossovers = {_label(s.d, s.n_per_class): {source: crossover(gammas, [row["w2_gain"][source] for row in found])
                                               for source in SOURCES} for s, found in per_setting.items()}
    best = {_label(s.d, s.n_per_class): best_gain(found) for s, found in per_setting.items()}
    result = {"settings": rows, "crossover": crossovers, "best": best, "draws": flags.draws, "classes": flags.classes,
              "seed": flags.seed, "mean_norm_squared": settings[0].mean_norm ** 2,
              "solver": {"method": "RK4, probability-flow ODE", "horizon": settings[0].horizon,
                         "steps": settings[0].steps, "grid": "t_j = T (1 - j / steps)^2"},
              "seconds": round(time.perf_counter() - began, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "theory.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "theory.md").write_text(markdown(result))
    plot(result, out / "theory.png")
    print(json.dumps({"out": str(out), "settings": len(rows), "crossover": crossovers, "best": best,
                      "seconds": result["seconds"]}), flush=True)
    return 0


def run_setting(setting: Setting, gammas: np.ndarray, draws: int, seed: int) -> list[dict]:
    """One row per gamma: each metric's measured mean and standard error over draws, beside both closed forms on the
    same draws, the solver's largest error against the exact law at the solver's finite horizon, and the clean
    model's own W2^2 to the truth, the scale against which a gain is small or large."""
    rng = np.random.default_rng([seed, setting.d, setting.n_per_class])
    mu = setting.class_means()
    mu_hat, sigma = draw_datasets(rng, setting, draws)
    per_gamma = gammas[:, None, None]
    values = {metric: {"measured": found} for metric, found in measure(mu, mu_hat, sigma, gammas, setting).items()}
    for reading in closed_forms.READINGS:
        values["w2_gain"][reading] = closed_forms.w2_gain(mu, mu_hat, sigma, per_gamma, reading)
        values["entropy_gain"][reading] = closed_forms.entropy_gain(mu_hat, sigma, per_gamma, reading)
    clean = closed_forms.generated_law(mu_hat, sigma, 0.0, "exact", setting.horizon)
    corrupt = closed_forms.generated_law(mu_hat, sigma, per_gamma, "exact", setting.horizon)
    at_horizon = {"w2_gain": closed_forms.w2_squared(*clean, mu) - closed_forms.w2_squared(*corrupt, mu),
                  "entropy_gain": closed_forms.gaussian_entropy(corrupt[1]) - closed_forms.gaussian_entropy(clean[1])}
    clean_w2 = float(closed_forms.w2_squared(*clean, mu).mean())
    rows = []
    for i, gamma in enumerate(gammas):
        row: dict = {"d": setting.d, "n_per_class": setting.n_per_class, "gamma": float(gamma), "clean_w2": clean_w2}
        for metric, sources in values.items():
            per_draw = {source: found[i].mean(axis=-1) for source, found in sources.items()}  # average over classes
            row[metric] = {source: float(v.mean()) for source, v in per_draw.items()}
            row[metric] |= {f"{source}_se": float(v.std(ddof=1) / math.sqrt(draws)) for source, v in per_draw.items()}
        row["solver_error"] = float(max(np.abs(values[m]["measured"][i] - at_horizon[m][i]).max() for m in METRICS))
        rows.append(row)
    return rows


def crossover(gammas: np.ndarray, gains: list[float]) -> float | None:
    """The gamma where the W2 gain first turns negative, linearly interpolated from the last gamma where it was not
    (gamma = 0, gain 0, included): where corruption stops helping. None if it never turns negative on the grid."""
    points = [(0.0, 0.0)] + list(zip(gammas.tolist(), gains))
    for (g0, m0), (g1, m1) in zip(points[:-1], points[1:]):
        if m1 < 0 <= m0:
            return round(g0 + (g1 - g0) * m0 / (m0 - m1), 4)
    return None


def best_gain(rows: list[dict]) -> dict:
    """The gamma of the largest measured W2 gain, and that gain as a share of the clean model's W2^2: the most that
    condition noise can improve the generated law, in the relative terms in which an FD (itself a W2^2 between
    Gaussian fits) is compared across runs."""
    row = max(rows, key=lambda found: found["w2_gain"]["measured"])
    gain = row["w2_gain"]["measured"]
    return {"gamma": row["gamma"], "w2_gain": round(gain, 6), "clean_w2": round(row["clean_w2"], 6),
            "relative": round(gain / row["clean_w2"], 6)}


def markdown(result: dict) -> str:
    """The table: per setting and gamma, measured mean +- standard error beside the two closed forms."""
    head = ["d", "n_k", "gamma"] + [f"{name}: {source}" for name in ("W2 gain", "entropy gain")
                                    for source in ("measured", "paper's closed form", "exact optimum")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["settings"]:
        cells = [str(row["d"]), str(row["n_per_class"]), f"{row['gamma']:g}"]
        for metric in METRICS:
            values = row[metric]
            cells += [f"{values['measured']:+.5f} ± {values['measured_se']:.5f}", f"{values['paper']:+.5f}",
                      f"{values['exact']:+.5f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Where corruption stops helping (W2 gain turns negative, interpolated on the gamma grid):", ""]
    for label, found in result["crossover"].items():
        text = ", ".join(f"{source} {_gamma_text(value)}" for source, value in found.items())
        lines.append(f"- {label}: {text}")
    lines += ["", "The largest gain, against the clean model's own W2^2 to the truth:", ""]
    for label, found in result["best"].items():
        lines.append(f"- {label}: {found['w2_gain']:+.5f} at gamma {found['gamma']:g}, against {found['clean_w2']:.4f} "
                     f"({100 * found['relative']:.1f}%)")
    solver = result["solver"]
    lines += ["", f"{result['draws']} dataset draws, K = {result['classes']} classes, ||mu_k||^2 = "
              f"{result['mean_norm_squared']:g}, seed {result['seed']}; {solver['method']}, T = {solver['horizon']:g}, "
              f"{solver['steps']} steps; largest solver error "
              f"{max(row['solver_error'] for row in result['settings']):.1e}; {result['seconds']} s.", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """W2 gain vs gamma, one panel per (d, n_k): measured with standard-error bars, both closed forms as lines, and
    the zero line below which corruption hurts. Symlog y, since the gain spans 1e-4 (small gamma) to -0.2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(result["crossover"])
    fig, axes = plt.subplots(1, len(labels), figsize=(5.2 * len(labels), 4.0), squeeze=False)
    for ax, label in zip(axes[0], labels):
        rows = [row for row in result["settings"] if _label(row["d"], row["n_per_class"]) == label]
        gammas = [row["gamma"] for row in rows]
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.plot(gammas, [row["w2_gain"]["paper"] for row in rows], "-", color="tab:orange",
                label=r"closed form as printed ($\Sigma_k + aI$)")
        ax.plot(gammas, [row["w2_gain"]["exact"] for row in rows], "--", color="tab:green",
                label=r"closed form, exact optimum ($\Sigma_k + a\,uu^\top$)")
        ax.errorbar(gammas, [row["w2_gain"]["measured"] for row in rows],
                    yerr=[row["w2_gain"]["measured_se"] for row in rows], fmt="o", markersize=3, capsize=3,
                    color="tab:blue", label="simulated (mean ± s.e.)")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel(r"condition noise $\gamma$")
        ax.set_ylabel(r"$W_2^2(P, Q_{clean}) - W_2^2(P, Q_\gamma)$")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _numbers(flag: str, text: str, kind: type, minimum: int) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{flag}={text} is not a comma-separated list of {kind.__name__}s") from None
    if not values or not all(math.isfinite(v) and v >= minimum for v in values):
        raise UserError(f"{flag}={text} must list one or more finite values >= {minimum}")
    return values


def _settings(flags) -> list[Setting]:
    dims = _numbers("--dims", flags.dims, int, minimum=1)
    sizes = _numbers("--n_per_class", flags.n_per_class, int, minimum=2)
    if len(dims) != len(sizes):
        raise UserError(f"--dims has {len(dims)} entries but --n_per_class has {len(sizes)}; they are paired, "
                        "so give one n_k per d")
    if flags.draws < 2:
        raise UserError(f"--draws={flags.draws} leaves no standard error; give at least 2")
    for d, n in zip(dims, sizes):
        if n <= d:
            raise UserError(f"--n_per_class={n} must exceed d={d}, or the empirical covariance is singular")
        if not 1 <= flags.classes <= d:
            raise UserError(f"--classes={flags.classes} must be between 1 and d={d} (the class means are orthogonal)")
    return [Setting(d, n, classes=flags.classes) for d, n in zip(dims, sizes)]


def _label(d: int, n_per_class: int) -> str:
    return f"d={d}, n_k={n_per_class}"


def _gamma_text(value: float | None) -> str:
    return "not on this grid (still helping at the largest gamma)" if value is None else f"gamma ~ {value:g}"


if __name__ == "__main__":
    sys.exit(jobs.run("theory", main))
