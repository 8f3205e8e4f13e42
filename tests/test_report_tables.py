"""Batch-evaluation report: seed aggregation, best guidance scale, tables and plots from synthetic rows."""

import csv
import math

import pytest

from diffcorrupt.report import plots
from diffcorrupt.report.plots import write_plots
from diffcorrupt.report.tables import aggregate, best_scale, primary_metric, setting_label, write_tables


def _row(corruption="none", eta=0.0, cep="none", seed=1, step=600, cfg=1.5, network="inception", **metrics):
    return {"run": f"{corruption}{eta:g}_{cep}_seed{seed}", "workdir": f"/runs/{corruption}{eta:g}_seed{seed}",
            "config_hash": "ab12", "corruption": corruption, "eta": eta, "cep": cep, "seed": seed, "step": step,
            "sampler": "dpm", "steps": 50, "cfg_scale": cfg, "num_samples": 1000, "network": network, **metrics}


def _rows():
    """Clean: 2 seeds x 3 scales at step 600 (seed 1 alone would pick 1.0, the mean picks 1.5), 1 seed at step 300.
    Symmetric 5%: 1 seed x 3 scales. Clean + CEP-U 1: 1 seed, one scale, no precision/recall. Classifier: one scale
    and one step, so only its eta plot has more than one x value."""
    rows = []
    for cfg, fids in ((1.0, (9.0, 15.0)), (1.5, (10.0, 12.0)), (2.0, (13.0, 13.0))):
        for seed, fid in zip((1, 2), fids):
            rows.append(_row(seed=seed, cfg=cfg, fid=fid, precision=0.5 + cfg / 10, recall=0.7 - cfg / 10,
                             inception_score_std=0.1))
    rows += [_row(step=300, cfg=cfg, fid=30.0 - cfg) for cfg in (1.0, 1.5)]
    rows += [_row("symmetric", 0.05, cfg=cfg, fid=20.0 + cfg, precision=0.4, recall=0.5) for cfg in (1.0, 1.5, 2.0)]
    rows.append(_row(cep="uniform:1", fid=11.5, precision=None))
    rows += [_row(network="classifier", seed=seed, fd=fd, accuracy=0.9) for seed, fd in ((1, 4.0), (2, 6.0))]
    rows.append(_row("symmetric", 0.05, network="classifier", fd=8.0, accuracy=0.6))
    return rows


def _find(rows, **identity):
    found = [r for r in rows if all(r[k] == v for k, v in identity.items())]
    assert len(found) == 1, found
    return found[0]


def test_primary_metric():
    assert primary_metric("inception") == "fid" and primary_metric("classifier") == "fd" and primary_metric("clip") == "fd"
    with pytest.raises(ValueError):
        primary_metric("dino")


def test_setting_labels():
    assert setting_label({"corruption": "none", "eta": 0.0, "cep": "none"}) == "clean"
    assert setting_label({"corruption": "symmetric", "eta": 0.05, "cep": "none"}) == "symmetric 5%"
    assert setting_label({"corruption": "none", "eta": 0.0, "cep": "uniform:1"}) == "clean + CEP-U 1"
    assert setting_label({"corruption": "swap", "eta": 0.1, "cep": "gaussian:0.5"}) == "swap 10% + CEP-G 0.5"


def test_aggregate_means_stds_and_counts():
    aggregated = aggregate(_rows())
    two = _find(aggregated, network="inception", corruption="none", cep="none", step=600, cfg_scale=1.5)
    assert two["n"] == 2 and two["fid"] == 11.0 and two["fid_std"] == pytest.approx(math.sqrt(2))
    assert two["precision"] == pytest.approx(0.65) and two["precision_std"] == 0.0
    assert not {"run", "workdir", "config_hash", "seed", "inception_score_std"} & set(two)
    one = _find(aggregated, network="inception", corruption="symmetric", cfg_scale=2.0)
    assert one["n"] == 1 and one["fid"] == 22.0 and one["fid_std"] is None
    fd = _find(aggregated, network="classifier", corruption="none")
    assert fd["n"] == 2 and fd["fd"] == 5.0 and fd["fd_std"] == pytest.approx(math.sqrt(2)) and fd["fid"] is None
    assert len(aggregated) == 3 + 2 + 3 + 1 + 2
    order = [(r["network"], r["corruption"], r["cep"], r["step"], r["cfg_scale"]) for r in aggregated]
    assert order[:2] == [("classifier", "none", "none", 600, 1.5), ("classifier", "symmetric", "none", 600, 1.5)]
    assert order[2:5] == [("inception", "none", "none", 300, 1.0), ("inception", "none", "none", 300, 1.5),
                          ("inception", "none", "none", 600, 1.0)]


def test_best_scale_uses_the_mean():
    best = best_scale(aggregate(_rows()))
    clean = _find(best, network="inception", corruption="none", cep="none", step=600)
    assert clean["cfg_scale"] == 1.5 and clean["fid"] == 11.0
    assert _find(best, network="inception", corruption="none", cep="none", step=300)["cfg_scale"] == 1.5
    assert _find(best, network="inception", corruption="symmetric")["cfg_scale"] == 1.0
    assert len(best) == 6  # inception: clean x 2 steps, symmetric, CEP; classifier: clean, symmetric


def test_write_tables(tmp_path):
    paths = write_tables(_rows(), tmp_path / "report")
    assert sorted(paths) == ["best.md", "results.csv", "summary.csv", "summary.md"]
    with paths["results.csv"].open() as f:
        results = list(csv.DictReader(f))
    assert len(results) == len(_rows())
    assert list(results[0]) == ["run", "workdir", "config_hash", "corruption", "eta", "cep", "seed", "step", "sampler",
                                "steps", "cfg_scale", "num_samples", "network", "fid", "fd", "precision", "recall",
                                "accuracy", "inception_score_std"]
    with paths["summary.csv"].open() as f:
        header = next(csv.reader(f))
    assert header[:10] == ["corruption", "eta", "cep", "step", "sampler", "steps", "cfg_scale", "num_samples",
                           "network", "n"]
    assert header[10:12] == ["fid", "fid_std"]
    summary = paths["summary.md"].read_text()
    assert "| setting | step | sampler | samples | cfg | FID | precision | recall | n |" in summary
    assert "| clean | 600 | dpm 50 | 1000 | 1.5 | 11.00 ± 1.41 | 0.650 ± 0.000 | 0.550 ± 0.000 | 2 |" in summary
    assert "| clean + CEP-U 1 | 600 | dpm 50 | 1000 | 1.5 | 11.50 | — | — | 1 |" in summary
    best = paths["best.md"].read_text()
    assert "## inception (FID, lower is better)" in best and "## classifier (FD, lower is better)" in best
    clean = "| clean | 0% | none | 600 | dpm 50 | 1000 | 1.5 | 11.00 ± 1.41 | 0.650 ± 0.000 | 0.550 ± 0.000 | 2 |"
    assert clean in best
    assert "| clean | 0% | none | 600 | dpm 50 | 1000 | 1.5 | 5.00 ± 1.41 | 0.900 ± 0.000 | 2 |" in best
    assert "| symmetric | 5% | none | 600 | dpm 50 | 1000 | 1 | 21.00 | 0.400 | 0.500 | 1 |" in best


def test_write_plots_skips_single_x(tmp_path):
    written = write_plots(_rows(), tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["classifier_vs_eta.png", "inception_precision_recall.png", "inception_vs_cfg.png",
                     "inception_vs_eta.png", "inception_vs_step.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert all(p.stat().st_size > 0 for p in written)


def test_the_distance_is_drawn_against_what_guidance_buys_with_it(tmp_path, monkeypatch):
    """FD against class accuracy and FID against IS, one point per guidance scale, the scales in order and the
    seed spread on both axes; a setting sampled at one scale only adds its point."""
    drawn = {}
    monkeypatch.setattr(plots, "_finish", lambda fig, ax, path, *args: drawn.setdefault(path.name, ax) is not None)
    rows = [_row(network="classifier", seed=seed, cfg=cfg, fd=cfg + seed, accuracy=0.8 + cfg / 10)
            for seed in (1, 2) for cfg in (2.0, 1.0)]
    rows += [_row("symmetric", 0.05, network="classifier", fd=5.0, accuracy=0.7),
             _row(seed=1, cfg=1.0, fid=9.0, inception_score=50.0), _row(seed=1, cfg=2.0, fid=12.0, inception_score=80.0)]
    written = {path.name for path in write_plots(rows, tmp_path)}
    assert {"classifier_fd_vs_accuracy.png", "inception_fid_vs_inception_score.png"} <= written
    clean, corrupted = drawn["classifier_fd_vs_accuracy.png"].containers
    x, y = clean.lines[0].get_data()
    assert list(x) == pytest.approx([0.9, 1.0]) and list(y) == pytest.approx([2.5, 3.5])
    assert clean.has_xerr and clean.has_yerr
    assert list(corrupted.lines[0].get_data()[0]) == [0.7]
    assert "classifier_fd_vs_clip_score.png" not in written


def test_sampler_steps_plot_draws_a_line_per_setting_and_sampler(tmp_path):
    """A distilled run's lcm sampled at 1, 2 and 4 steps against its teacher's dpm at 4 and 25: one line each,
    each point the best guidance scale of its step count."""
    rows = [{**_row(network="classifier", cfg=cfg, fd=fd / cfg), "sampler": "dpm", "steps": steps}
            for steps, fd in ((4, 4.0), (25, 2.0)) for cfg in (1.0, 2.0)]
    rows += [{**_row(network="classifier", fd=fd), "sampler": "lcm", "steps": steps, "distilled": "lcm", "teacher": "t"}
             for steps, fd in ((1, 5.0), (2, 2.5), (4, 2.2))]
    written = write_plots(rows, tmp_path)
    assert tmp_path / "classifier_vs_sampler_steps.png" in written
    best = best_scale(aggregate(rows))
    assert sorted((setting_label(r), r["steps"], r["cfg_scale"]) for r in best) == [
        ("clean", 4, 2.0), ("clean", 25, 2.0), ("clean + LCM", 1, 1.5), ("clean + LCM", 2, 1.5), ("clean + LCM", 4, 1.5)]


def test_missing_metrics_do_not_crash(tmp_path):
    rows = [_row(cfg=1.0, fid=None), _row(cfg=1.5), _row(seed=2, cfg=1.5, fid=float("nan"), recall=0.4),
            _row(network="classifier", accuracy=0.5)]
    aggregated = aggregate(rows)
    assert _find(aggregated, network="inception", cfg_scale=1.5)["n"] == 2
    assert all(r.get("fid") is None for r in aggregated)
    assert best_scale(aggregated) == []
    paths = write_tables(rows, tmp_path)
    assert "recall" in paths["summary.md"].read_text()
    assert write_plots(rows, tmp_path) == []
    assert write_plots([], tmp_path) == [] and aggregate([]) == []


def test_baselines_are_settings_of_their_own(tmp_path):
    """Runs that differ only by a baseline regulariser are not seeds of one setting: each gets its row, its label
    and a baseline column in the paper table."""
    rows = [_row(seed=seed, fid=10.0 + seed) for seed in (1, 2)]
    rows += [{**_row(seed=1, fid=8.0), "baseline": "label smoothing 0.1"}]
    rows = [{"baseline": "none", **row} for row in rows]
    aggregated = aggregate(rows)
    assert sorted((r["baseline"], r["n"]) for r in aggregated) == [("label smoothing 0.1", 1), ("none", 2)]
    assert setting_label(_find(aggregated, baseline="label smoothing 0.1")) == "clean + label smoothing 0.1"
    write_tables(rows, tmp_path)
    best = (tmp_path / "best.md").read_text()
    assert "| corruption | eta | CEP | baseline |" in best and "| label smoothing 0.1 |" in best


def test_edge_f1_is_drawn_beside_its_same_class_chance_level(tmp_path, monkeypatch):
    rows = [_row(network="classifier", cfg=cfg, seed=seed, fd=1.0, edge_f1=0.8 + seed / 100, edge_f1_other=0.6)
            for cfg in (1.0, 2.0) for seed in (0, 1)]
    drawn = {}
    monkeypatch.setattr(plots, "save_lines", lambda path, lines, *args, **kwargs: drawn.setdefault(path.name, lines))
    write_plots(rows, tmp_path)
    lines = drawn["classifier_edge_f1_vs_cfg.png"]
    assert sorted(lines) == ["clean", "clean, same-class control"]
    assert [(x, round(mean, 3)) for x, mean, _ in lines["clean"]] == [(1.0, 0.805), (2.0, 0.805)]
    assert [mean for _, mean, _ in lines["clean, same-class control"]] == [0.6, 0.6]


def test_twelve_settings_in_one_figure_get_twelve_colours_and_a_chance_line_its_settings_colour(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    lines = {f"setting {i}": [(1.0, i, 0.1), (2.0, i + 0.5, 0.1)] for i in range(12)}
    lines["setting 11, chance"] = [(1.0, 0.0, 0.0), (2.0, 0.0, 0.0)]
    assert plots.save_lines(tmp_path / "twelve.png", lines, "x", "y", "twelve", dashed=frozenset({"setting 11, chance"}))
    colours = [container.lines[0].get_color() for container in figures[0].axes[0].containers]
    assert len(set(colours[:12])) == 12 and colours[12] == colours[11]
