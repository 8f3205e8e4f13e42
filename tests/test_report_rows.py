"""A report redrawn from earlier reports' results.csv (`report --rows`): the same tables as from the
runs themselves, a row measured again replaces its earlier one, and a file that is not a results.csv
is refused in one sentence."""

import pytest

from diffcorrupt.errors import UserError
from diffcorrupt.report import job
from diffcorrupt.report.earlier_rows import merge_rows, read_rows
from diffcorrupt.report.tables import write_tables
from test_report_tables import _row, _rows


def test_tables_redrawn_from_results_csv_are_the_same(tmp_path):
    first = write_tables(_rows(), tmp_path / "first")
    again = write_tables(read_rows([first["results.csv"]]), tmp_path / "again")
    for name in ("results.csv", "summary.csv", "summary.md", "best.md"):
        assert again[name].read_text() == first[name].read_text(), name


def test_rows_are_typed_as_the_report_makes_them(tmp_path):
    paths = write_tables([_row(fid=9.5, precision=None, rmd_file="/gone/rmd.npz")], tmp_path)
    row, = read_rows([paths["results.csv"]])
    assert (row["seed"], row["step"], row["steps"], row["eta"], row["cfg_scale"]) == (1, 600, 50, 0.0, 1.5)
    assert isinstance(row["eta"], float) and row["fid"] == 9.5 and row["rmd_file"] == "/gone/rmd.npz"
    assert "precision" not in row  # blank cells are absent, as unmeasured metrics are


def test_a_row_measured_again_replaces_the_earlier_one_whatever_its_folder():
    earlier = [_row(seed=1, fid=10.0), _row(seed=2, fid=12.0)]
    fresh = [{**_row(seed=1, fid=11.0), "workdir": "/elsewhere/run"}]
    merged = merge_rows(earlier, fresh)
    assert sorted((r["seed"], r["fid"]) for r in merged) == [(1, 11.0), (2, 12.0)]


def test_the_report_job_redraws_from_rows_alone_and_globs(tmp_path):
    for part, seed in (("a", 1), ("b", 2)):
        write_tables([_row(seed=seed, fid=10.0 + seed)], tmp_path / part)
    assert job.main([f"--rows={tmp_path}/*/results.csv", f"--out={tmp_path / 'both'}"]) == 0
    assert {r["seed"] for r in read_rows([tmp_path / "both" / "results.csv"])} == {1, 2}
    assert (tmp_path / "both" / "summary.md").is_file()


def _refusal(argv) -> str:
    with pytest.raises(UserError) as err:
        job.main(argv)
    assert str(err.value).count(". ") == 0
    return str(err.value)


def test_bad_rows_are_refused_in_one_sentence(tmp_path):
    assert "--workdirs" in _refusal([])
    assert "matches no file" in _refusal([f"--rows={tmp_path}/missing.csv"])
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    assert "no 'run' column" in _refusal([f"--rows={foreign}"])
    results = write_tables(_rows(), tmp_path / "report")["results.csv"]
    cut = tmp_path / "cut.csv"
    cut.write_text(results.read_text()[: len(results.read_text()) // 2].rsplit(",", 3)[0] + "\n")
    assert "cut short" in _refusal([f"--rows={cut}", f"--out={tmp_path / 'out'}"])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(results.read_text().replace(",600,", ",six hundred,", 1))
    assert "'step' is 'six hundred'" in _refusal([f"--rows={wrong}", f"--out={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()  # nothing is written for a refused file
