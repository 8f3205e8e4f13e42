"""Bad command lines (``cli_corpus``) against every job and tool, each run as a user runs it.

Every case must end with exit status 2 and one line on stderr, ``<prog>: error: <sentence>``, in
printable characters, naming what is wrong (the case's pattern); nothing on stdout; a peak resident
memory under ``PEAK_RSS`` (the process's own VmHWM); and no file or folder created or
changed in the fixtures (a trained run, a damaged copy, samples, a user's folder) or in the folder
it ran in. The fixtures are built once per worker by ``cli_places.make_places`` (about 30 s).

Run: ``.venv/bin/python -m pytest -q tests/test_hostile_cli.py`` (one job: ``-k sample``).
"""

from __future__ import annotations

import pathlib
import re
import shutil

import pytest

from cli_corpus import CASES, counts
from cli_places import make_places, run_command, snapshot

# Python, JAX and (for the jobs that log with clu) TensorFlow take 0.2-0.7 GB before the first flag
# is read; a refused command must not take more, whatever its input claims.
PEAK_RSS = 1 << 30
MESSAGE_LIMIT = 800  # two temporary paths and the fix


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("cli")
    places = make_places(root / "fixtures")
    shutil.copytree(root / "fixtures", root / "pristine", symlinks=True)
    return root / "fixtures", root / "pristine", places


def _prog(argv: tuple[str, ...]) -> str:
    return f"diffcorrupt {argv[1]}" if argv[0] == "diffcorrupt" else f"tools/{argv[1]}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused_in_one_sentence(case, fixtures, tmp_path):
    folder, pristine, places = fixtures
    before = snapshot(folder)
    outcome = run_command([part.format(**places) for part in case.argv], cwd=tmp_path)
    after = snapshot(folder)
    if after != before:  # put the fixtures back for the next case, then fail this one
        shutil.rmtree(folder)
        shutil.copytree(pristine, folder, symlinks=True)
    lines = outcome.stderr.splitlines()
    assert outcome.status == 2, f"exit {outcome.status}; stderr ends:\n{outcome.stderr[-3000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{outcome.stderr[-3000:]}"
    (line,) = lines
    assert line.startswith(f"{_prog(case.argv)}: error: "), line
    assert line.isprintable() and len(line) <= MESSAGE_LIMIT, line
    assert re.search(case.names, line), f"the message does not name {case.names!r}: {line}"
    assert outcome.stdout == ""
    assert 10 << 20 < outcome.peak_rss <= PEAK_RSS, f"peak resident memory {outcome.peak_rss >> 20} MiB"  # > 0: read
    changed = sorted(set(before) ^ set(after) | {k for k in before if k in after and before[k] != after[k]})
    assert not changed, f"the fixtures changed: {changed[:5]}"
    assert not list(tmp_path.iterdir()), f"wrote into the folder it ran in: {sorted(tmp_path.iterdir())[:5]}"


def test_corpus_covers_every_job_and_tool():
    from diffcorrupt.cli import JOBS

    jobs = {case.argv[1] for case in CASES if case.argv[0] == "diffcorrupt"}
    assert jobs == set(JOBS)
    assert {case.argv[1] for case in CASES if case.argv[0] == "tool"} == {
        "convert_autoencoder.py", "import_dit.py", "import_ldm.py", "import_control.py", "convert_inception.py"}
    assert len(CASES) >= 60 and sum(counts().values()) == len(CASES)
    assert len({case.id for case in CASES}) == len(CASES)


def test_help_is_not_an_error(tmp_path):
    for argv in (["diffcorrupt", "--help"], ["diffcorrupt", "bench", "--help"], ["diffcorrupt", "sample", "--help"]):
        outcome = run_command(argv, cwd=tmp_path)
        assert outcome.status == 0 and "diffcorrupt" in outcome.stdout, (argv, outcome.stderr[-2000:])
