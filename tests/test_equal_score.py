"""Each setting against the clean curve at its own class accuracy: the interpolation, its range, its first-order
standard error, and which settings have a curve to be read against."""

import math

import pytest

from diffcorrupt.report.equal_score import at_equal_score, write_equal_score
from test_report_tables import _row

# Clean, two seeds at three scales: (FD, accuracy) per seed. Seed means: scale 1 (1.0, 0.80), 2 (2.0, 0.90),
# 3 (4.0, 0.95).
CLEAN = {1.0: ((0.9, 0.79), (1.1, 0.81)), 2.0: ((1.9, 0.89), (2.1, 0.91)), 3.0: ((3.8, 0.94), (4.2, 0.96))}


def _clean():
    return [_row(seed=seed, cfg=cfg, network="classifier", fd=fd, accuracy=acc)
            for cfg, seeds in CLEAN.items() for seed, (fd, acc) in enumerate(seeds)]


def _find(compared, **identity):
    found = [r for r in compared if all(r.get(k) == v for k, v in identity.items())]
    assert len(found) == 1, found
    return found[0]


def test_a_setting_is_read_against_the_clean_curve_at_its_own_accuracy():
    """Corrupted at scale 3: accuracy 0.85 lies halfway between clean's scales 1 and 2, where clean reaches FD 1.5;
    its own FD of 1.8 is lower than clean's at scale 3 yet 0.3 above clean's curve."""
    corrupted = [_row("symmetric", 0.1, seed=seed, cfg=3.0, network="classifier", fd=fd, accuracy=acc)
                 for seed, (fd, acc) in enumerate(((1.7, 0.84), (1.9, 0.86)))]
    entry = _find(at_equal_score(_clean() + corrupted), corruption="symmetric", cfg_scale=3.0)
    assert (entry["score"], entry["distance"], entry["n"], entry["n_clean"]) == ("accuracy", "fd", 2, 2)
    assert entry["clean_scales"] == "1-2"
    assert entry["clean_distance"] == pytest.approx(1.5) and entry["difference"] == pytest.approx(0.3)
    spread = math.sqrt(2) * 0.1  # every FD's seed std; every accuracy's is sqrt(2) * 0.01
    slope = (2.0 - 1.0) / (0.90 - 0.80)
    expected = math.sqrt(spread**2 / 2 + spread**2 / 2 + slope**2 * ((math.sqrt(2) * 0.01) ** 2 / 2) * 2)
    assert entry["se"] == pytest.approx(expected)


def test_outside_the_clean_range_there_is_no_difference_and_one_seed_has_no_error():
    rows = _clean() + [_row("symmetric", 0.1, cfg=1.0, network="classifier", fd=0.5, accuracy=0.70),
                       _row(cep="uniform:1", cfg=2.0, network="classifier", fd=2.5, accuracy=0.925)]
    compared = at_equal_score(rows)
    outside = _find(compared, corruption="symmetric")
    assert (outside["clean_distance"], outside["difference"], outside["se"]) == (None, None, None)
    cep = _find(compared, cep="uniform:1")
    assert cep["clean_scales"] == "2-3" and cep["difference"] == pytest.approx(2.5 - 3.0) and cep["se"] is None


def test_only_settings_with_a_clean_curve_of_two_scales_are_compared(tmp_path):
    rows = _clean() + [_row("symmetric", 0.1, step=300, network="classifier", fd=1.0, accuracy=0.85),  # no clean run
                       _row(step=900, network="classifier", fd=1.0, accuracy=0.9),  # clean at one scale
                       _row("symmetric", 0.1, step=900, network="classifier", fd=1.0, accuracy=0.9),
                       _row("symmetric", 0.1, fid=9.0)]  # inception: no score to trade
    assert at_equal_score(rows) == []
    assert write_equal_score(rows, tmp_path / "report") == {}
    assert not (tmp_path / "report").exists()


def test_the_table_names_the_score_and_marks_what_lies_outside(tmp_path):
    rows = _clean() + [_row("symmetric", 0.1, cfg=3.0, network="classifier", fd=1.8, accuracy=0.85),
                       _row("symmetric", 0.2, cfg=1.0, network="classifier", fd=0.5, accuracy=0.7)]
    paths = write_equal_score(rows, tmp_path)
    text = paths["vs_clean_equal_score.md"].read_text()
    assert "| setting | step | sampler | samples | cfg | accuracy | FD | clean FD at this accuracy |" in text
    assert "| symmetric 10% | 600 | dpm 50 | 1000 | 3 | 0.850 | 1.80 | 1.50 | 1-2 | +0.30 | 1 / 2 |" in text
    assert "| symmetric 20% | 600 | dpm 50 | 1000 | 1 | 0.700 | 0.50 | — | — | — | 1 / 2 |" in text
    assert paths["vs_clean_equal_score.csv"].read_text().startswith("corruption,")
