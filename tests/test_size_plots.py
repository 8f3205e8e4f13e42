"""The memorization regime's figures: metrics against training step, corruption ratio and
training-set size, each drawn where it has two values to put on its axis."""

from diffcorrupt.report import size_plots
from diffcorrupt.report.size_plots import subset_size, write_size_plots
from diffcorrupt.report.tables import setting_label


def _row(subset, eta, seed, step, network, cfg=2.0, **metrics):
    return {"run": f"{subset}{eta}{seed}", "workdir": "/runs", "config_hash": "ab", "subset": subset,
            "corruption": "symmetric" if eta else "none", "eta": eta, "cep": "none", "seed": seed, "step": step,
            "sampler": "dpm", "steps": 25, "cfg_scale": cfg, "num_samples": 500, "network": network, **metrics}


def _rows(subsets):
    rows = []
    for subset in subsets:
        for eta in (0.0, 0.05):
            for seed in (0, 1):
                for step in (1000, 2000):
                    rows.append(_row(subset, eta, seed, step, "pixels", copy_ratio=0.1 * seed + step / 1e4))
                    rows.append(_row(subset, eta, seed, step, "classifier", fd=3.0 + eta, accuracy=0.7, recall=0.4,
                                         precision=0.8, memorization_ratio=0.05 * step / 1000))
    return rows


def test_subset_size_reads_the_range():
    assert subset_size("balanced[0:500]") == 500 and subset_size("[100:300]") == 200
    assert subset_size("all") is None and subset_size(None) is None


METRICS = ("copy_ratio", "memorization_ratio", "fd", "accuracy", "recall", "precision")


def test_metrics_are_drawn_against_step_eta_and_size(tmp_path):
    written = {path.name for path in write_size_plots(_rows(["balanced[0:500]", "balanced[0:2000]"]), tmp_path)}
    assert written == {f"memorization_{metric}_vs_{kind}_cfg2.png" for metric in METRICS
                       for kind in ("step", "eta", "size")}
    assert all((tmp_path / name).stat().st_size > 0 for name in written)


def test_one_subset_has_no_size_axis_and_the_whole_split_no_figures(tmp_path):
    written = {path.name for path in write_size_plots(_rows(["balanced[0:500]"]), tmp_path)}
    assert written == {f"memorization_{metric}_vs_{kind}_cfg2.png" for metric in METRICS for kind in ("step", "eta")}
    assert write_size_plots(_rows(["all"]), tmp_path / "all") == []


def test_a_clean_run_is_the_first_point_of_its_corrupted_runs_line(monkeypatch, tmp_path):
    drawn = {}
    monkeypatch.setattr(size_plots, "save_lines", lambda path, lines, *args, **kwargs: drawn.setdefault(path.name, lines))
    rows = _rows(["balanced[0:500]"]) + [{**row, "run": row["run"] + "cep", "cep": "uniform:1"}
                                          for row in _rows(["balanced[0:500]"]) if row["eta"] == 0.0]
    size_plots.write_size_plots(rows, tmp_path)
    lines = drawn["memorization_fd_vs_eta_cfg2.png"]
    assert sorted(lines) == ["N = 500", "N = 500 + CEP-U 1"]
    assert [(x, y) for x, y, _ in sorted(lines["N = 500"])] == [(0.0, 3.0), (0.05, 3.05)]
    assert [x for x, _, _ in lines["N = 500 + CEP-U 1"]] == [0.0]


def test_the_subset_names_the_line():
    row = _row("balanced[0:500]", 0.05, 0, 1000, "classifier")
    assert setting_label(row) == "symmetric 5% on balanced[0:500]"
    assert setting_label({**row, "subset": "all"}) == "symmetric 5%"
