"""The memorization regime's figures: metrics against training step and training-set size, drawn
only when a batch holds runs on several subsets."""

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
                    rows.append(_row(subset, eta, seed, step, "classifier", fd=3.0 + eta, accuracy=0.7, recall=0.4))
    return rows


def test_subset_size_reads_the_range():
    assert subset_size("balanced[0:500]") == 500 and subset_size("[100:300]") == 200
    assert subset_size("all") is None and subset_size(None) is None


def test_metrics_are_drawn_against_step_and_size(tmp_path):
    written = {path.name for path in write_size_plots(_rows(["balanced[0:500]", "balanced[0:2000]"]), tmp_path)}
    assert written == {f"memorization_{metric}_vs_{kind}_cfg2.png" for metric in ("copy_ratio", "fd", "accuracy", "recall")
                       for kind in ("step", "size")}
    assert all((tmp_path / name).stat().st_size > 0 for name in written)


def test_one_subset_draws_nothing(tmp_path):
    assert write_size_plots(_rows(["balanced[0:500]"]), tmp_path) == []
    assert write_size_plots(_rows(["all"]), tmp_path) == []


def test_the_subset_names_the_line():
    row = _row("balanced[0:500]", 0.05, 0, 1000, "classifier")
    assert setting_label(row) == "symmetric 5% on balanced[0:500]"
    assert setting_label({**row, "subset": "all"}) == "symmetric 5%"
