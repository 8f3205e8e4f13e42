"""Each setting against its clean counterpart: the difference of seed means, its standard error and Welch's test,
checked against scipy's own Welch test, and the table that marks the differences the seeds resolve."""

import csv

import pytest
from scipy import stats

from diffcorrupt.report import job
from diffcorrupt.report.tables import write_tables
from diffcorrupt.report.versus_clean import against_clean, write_against_clean
from test_report_tables import _row

CLEAN_FD = (1.30, 1.36, 1.41)
CORRUPT_FD = (1.20, 1.22, 1.25)


def _grid():
    rows = [_row(seed=seed, network="classifier", fd=fd, accuracy=0.93) for seed, fd in enumerate(CLEAN_FD)]
    rows += [_row("symmetric", 0.05, seed=seed, network="classifier", fd=fd, accuracy=0.90 - seed / 100)
             for seed, fd in enumerate(CORRUPT_FD)]
    rows.append(_row(cep="uniform:1", network="classifier", fd=1.5))  # one seed: a difference, no test
    rows.append(_row("symmetric", 0.05, step=300, network="classifier", fd=2.0))  # no clean run at step 300
    rows += [{**_row(seed=seed, network="classifier", fd=fd), "subset": "balanced[0:2000]"}  # another training set
             for seed, fd in ((0, 1.0), (1, 1.1))]
    return rows


def _find(compared, **identity):
    found = [r for r in compared if all(r.get(k) == v for k, v in identity.items())]
    assert len(found) == 1, found
    return found[0]


def test_differences_are_welchs_test_against_the_matching_clean_setting():
    compared = against_clean(_grid())
    assert len(compared) == 2  # symmetric 5% and CEP-U at step 600; nothing for step 300 or the other subset
    corrupt = _find(compared, corruption="symmetric")
    assert (corrupt["n"], corrupt["n_clean"]) == (3, 3)
    assert corrupt["fd_diff"] == pytest.approx(sum(CORRUPT_FD) / 3 - sum(CLEAN_FD) / 3)
    welch = stats.ttest_ind(CORRUPT_FD, CLEAN_FD, equal_var=False)
    assert corrupt["fd_diff"] / corrupt["fd_se"] == pytest.approx(welch.statistic)
    assert corrupt["fd_p"] == pytest.approx(welch.pvalue) and corrupt["fd_p"] < 0.05
    assert corrupt["accuracy_diff"] == pytest.approx(-0.04)
    assert corrupt["accuracy_p"] is not None  # the clean side has no spread, the corrupted one has
    cep = _find(compared, cep="uniform:1")
    assert (cep["n"], cep["fd_se"], cep["fd_p"]) == (1, None, None)
    assert cep["fd_diff"] == pytest.approx(1.5 - sum(CLEAN_FD) / 3)


def test_no_spread_on_either_side_gives_no_test():
    rows = [_row(seed=s, fd=1.0, network="classifier") for s in (0, 1)]
    rows += [_row("symmetric", 0.1, seed=s, fd=1.0, network="classifier") for s in (0, 1)]
    compared, = against_clean(rows)
    assert (compared["fd_diff"], compared["fd_se"], compared["fd_p"]) == (0.0, 0.0, None)


def test_the_table_bolds_what_the_seeds_resolve_and_counts_the_tests(tmp_path):
    paths = write_against_clean(_grid(), tmp_path / "report")
    text = paths["vs_clean.md"].read_text()
    assert "Of the 2 differences tested, about 0 would pass by chance alone." in text
    assert "| symmetric 5% | 600 | dpm 50 | 1000 | 1.5 | **-0.13 ± 0.03** | **-0.040 ± 0.006** | 3 / 3 |" in text
    assert "| clean + CEP-U 1 | 600 | dpm 50 | 1000 | 1.5 | +0.14 | — | 1 / 3 |" in text
    header = paths["vs_clean.csv"].read_text().splitlines()[0].split(",")
    assert {"fd_diff", "fd_se", "fd_p", "n", "n_clean"} <= set(header)


def test_nothing_is_written_without_a_clean_counterpart(tmp_path):
    assert write_against_clean([_row("symmetric", 0.05, fid=9.0)], tmp_path) == {}
    assert not list(tmp_path.iterdir())


def test_the_report_job_writes_the_comparison(tmp_path):
    write_tables(_grid(), tmp_path / "earlier")
    assert job.main([f"--rows={tmp_path}/earlier/results.csv", f"--out={tmp_path / 'again'}"]) == 0
    assert "## classifier" in (tmp_path / "again" / "vs_clean.md").read_text()
    with (tmp_path / "again" / "vs_clean.csv").open() as f:
        corrupt = next(row for row in csv.DictReader(f) if row["corruption"] == "symmetric")
    assert float(corrupt["fd_p"]) < 0.05 and float(corrupt["fd_diff"]) < 0
