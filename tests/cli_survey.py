"""Runs the bad command lines of ``cli_corpus`` and prints what each did: the before/after figures
of docs/reliability.md ("Hostile command lines").

  .venv/bin/python tests/cli_survey.py FOLDER [--code=DIR] [--stop=45]

FOLDER receives the fixtures and a scratch folder per line. ``--code`` runs another checkout of the
package (e.g. ``git worktree add /tmp/old 4d5754c``: the code before a change) by putting it first
on the commands' PYTHONPATH and running its tools/; the corpus and fixtures stay this checkout's. ``--stop`` ends a line
after that many seconds: a command still working by then accepted its bad input or checked it too
late. Prints one JSON line per case, then one summary line: the verdict counts ("ok" is what
``test_hostile_cli`` requires, less the prefix check), the peak memory and the seconds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import shutil
import tempfile

from cli_corpus import CASES
from cli_places import REPO, make_places, run_command, snapshot


def verdict(status: int, stderr: str, named: bool, wrote: bool) -> str:
    if "Traceback" in stderr or status not in (0, 2, -9):
        return "traceback"
    if status == -9:
        return "still working at --stop"
    if status == 0:
        return "accepted"
    if wrote:
        return "wrote files"
    if len(stderr.splitlines()) != 1:
        return "extra lines"
    return "ok" if named else "named another problem"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("--code", default=None, help="a checkout whose diffcorrupt the commands run")
    parser.add_argument("--stop", type=float, default=45.0)
    args = parser.parse_args()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    if args.code:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.code, env.get("PYTHONPATH")]))
    fixtures, pristine = args.folder / "fixtures", args.folder / "pristine"
    if not pristine.is_dir():
        places = make_places(fixtures)
        shutil.copytree(fixtures, pristine, symlinks=True)
        (args.folder / "places.json").write_text(json.dumps(places))
    places = json.loads((args.folder / "places.json").read_text())
    counts: collections.Counter = collections.Counter()
    peak = seconds = 0.0
    for case in CASES:
        if snapshot(fixtures) != snapshot(pristine):  # the line before changed them: start from the copy
            shutil.rmtree(fixtures)
            shutil.copytree(pristine, fixtures, symlinks=True)
        before, cwd = snapshot(fixtures), pathlib.Path(tempfile.mkdtemp(dir=args.folder))
        outcome = run_command([part.format(**places) for part in case.argv], cwd, timeout=args.stop, env=env,
                              tools=pathlib.Path(args.code or REPO) / "tools")
        wrote = snapshot(fixtures) != before or any(cwd.iterdir())
        lines = outcome.stderr.splitlines()
        named = bool(lines) and bool(re.search(case.names, lines[-1]))
        result = verdict(outcome.status, outcome.stderr, named, wrote)
        counts[result] += 1
        peak, seconds = max(peak, outcome.peak_rss), seconds + outcome.seconds
        print(json.dumps({"id": case.id, "verdict": result, "status": outcome.status, "lines": len(lines),
                          "wrote": wrote, "seconds": round(outcome.seconds, 1), "peak_mb": outcome.peak_rss >> 20,
                          "last_line": lines[-1][:300] if lines else ""}), flush=True)
    print(json.dumps({"cases": len(CASES), "verdicts": dict(counts), "peak_mb": int(peak) >> 20,
                      "mean_seconds": round(seconds / len(CASES), 2), "code": args.code or "this checkout"}))


if __name__ == "__main__":
    main()
