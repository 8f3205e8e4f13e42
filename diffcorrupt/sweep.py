"""``diffcorrupt sweep``: expand a grid of runs; run them here or print/submit pod and SLURM commands.

  diffcorrupt sweep --grid=NAME|FILE.py [--root=DIR] [--launcher=local|tpu|slurm] [--dry_run] [--submit]
                    [--only=SUBSTRING] [--report] [--parallel=K] [--sbatch_args='--time=48:00:00 ...']
                    [--config.<key>=<value> ...]

Each run trains in ``<root>/<run name>`` (default root ``runs/<grid>``); the name says its settings,
e.g. ``eta0.05-symmetric_seed0``. ``local`` trains the runs here, one after another, skipping finished
ones (newest checkpoint at train.num_steps) and resuming the rest. With ``--parallel=K`` it runs K at a
time, each (its training, then its report) in child processes pinned to its own share of the cores,
with its output in ``<root>/logs/<run>.log``: a model too small to keep several cores busy trains more
steps a second in all that way. ``tpu`` and ``slurm`` print the commands as a bash script (``--submit``
runs them on the pod in turn, or submits them chained by ``--dependency=afterok``). ``--report`` adds
``diffcorrupt report`` per run and over all runs into ``<root>/report``; a grid that names committed rows
(``Grid.rows``: the results.csv of runs trained in earlier sessions) adds them to that last report, so
it covers the whole grid. ``--config.<key>=<value>`` applies to every run (e.g. data.data_dir). The
grids are listed in diffcorrupt/sweeps/grids.py; a ``.py`` file defining ``GRID`` works too. Run it
from the repository root: grid configs, launch scripts and committed rows are named relative to it.
Rerun a SLURM sweep only once its jobs have ended: it skips finished runs, not queued ones. SIGTERM
stops a local sweep: a run training saves its checkpoint first, and nothing after it starts.
"""

from __future__ import annotations

import glob
import json
import shlex
import signal
import sys
from typing import Sequence

import ml_collections
from absl import logging

from diffcorrupt import jobs
from diffcorrupt.errors import ConfigError, UserError
from diffcorrupt.flag_types import positive_int
from diffcorrupt.output_paths import output_folder
from diffcorrupt.sweeps.commands import LAUNCHERS, Step, plan, render, submit
from diffcorrupt.sweeps.expand import Run, check_runs, expand, select
from diffcorrupt.sweeps.grids import get_grid
from diffcorrupt.sweeps.side_by_side import run_side_by_side


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("sweep", __doc__.splitlines()[0], config=False)
    parser.add_argument("--grid", required=True, help="a grid name (diffcorrupt/sweeps/grids.py) or a .py file defining GRID")
    parser.add_argument("--root", default=None, help="run folders go in ROOT/<run name>; default runs/<grid>")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local")
    parser.add_argument("--dry_run", action="store_true", help="print the commands only (what tpu and slurm do by default)")
    parser.add_argument("--submit", action="store_true", help="tpu: run the commands in turn; slurm: submit them")
    parser.add_argument("--only", default="", help="only the runs whose name contains this")
    parser.add_argument("--report", action="store_true", help="then sample, evaluate and report each run and all of them")
    parser.add_argument("--parallel", type=positive_int, default=1,
                        help="local: this many runs at a time, each pinned to its own share of the cores")
    parser.add_argument("--sbatch_args", default="", help="extra sbatch flags, e.g. '--time=48:00:00 --partition=gpu'")
    flags, overrides = parser.parse_job(argv)
    if flags.submit and (flags.launcher == "local" or flags.dry_run):
        raise UserError("--submit is for --launcher=tpu or slurm without --dry_run; local runs start unless --dry_run")
    if flags.parallel > 1 and flags.launcher != "local":
        raise UserError(f"--parallel is for --launcher=local; {flags.launcher} jobs run as its scheduler places them")
    jobs.log_progress()
    grid = get_grid(flags.grid)
    root = output_folder(flags.root or f"runs/{grid.name}", "--root")
    runs = select(grid, expand(grid, root, overrides), flags.only)
    configs = check_runs(grid, runs)
    finished = {run.name: step for run in runs if (step := finished_step(run, configs[run.name])) is not None}
    rows = grid.rows if grid.rows and glob.glob(grid.rows) else ""  # none committed yet: nothing to add
    steps = plan(runs, root, finished=finished, report=flags.report, report_flags=grid.report, rows=rows)
    sbatch_args = shlex.split(flags.sbatch_args)
    if flags.launcher == "local" and not flags.dry_run:
        to_run = run_side_by_side(steps, flags.parallel, root / "logs") if flags.parallel > 1 else steps
        finished_all = run_here(to_run)
        print(json.dumps({"grid": grid.name, "root": str(root), "runs": len(runs), "skipped": list(finished),
                          "trained": [s.label for s in steps if s.job == "train" and not s.skip],
                          "report": str(root / "report") if flags.report else None,
                          "preempted": not finished_all}), flush=True)
    elif flags.submit:
        print(json.dumps({"grid": grid.name, "root": str(root), "submitted": submit(steps, flags.launcher, sbatch_args)}),
              flush=True)
    else:
        header = f"grid {grid.name}: {len(runs)} runs in {root}, {len(finished)} finished. {grid.doc}"
        print(render(steps, flags.launcher, header, sbatch_args), end="", flush=True)
    return 0


def finished_step(run: Run, config: ml_collections.ConfigDict) -> int | None:
    """The run's newest checkpoint step when it has reached train.num_steps, else None. A finished
    folder trained with other settings is refused rather than skipped: skipping it would report
    that run under this one's name."""
    directory = run.workdir / "checkpoints"
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() else []
    if not steps or max(steps) < config.train.num_steps:
        return None
    from diffcorrupt.sampling.restore import saved_run_config
    from diffcorrupt.training.checkpoints import check_compatible
    from diffcorrupt.training.pretrained import pin_steps

    saved = saved_run_config(run.workdir, max(steps)).to_dict()
    try:
        check_compatible(saved, pin_steps(config, saved))
    except ConfigError as err:
        raise ConfigError(f"{run.workdir} is finished but was trained with other settings ({err})") from None
    return max(steps)


def run_here(steps: Sequence[Step]) -> bool:
    """The steps in order in this process, through the jobs' own entry points (flags and all); False
    when a SIGTERM stopped them."""
    from diffcorrupt import train
    from diffcorrupt.report import job as report

    mains = {"train": train.main, "report": report.main}
    sigterm = _Sigterm()
    previous = signal.signal(signal.SIGTERM, sigterm)
    try:
        for step in steps:
            if step.skip:
                logging.info("sweep: skipped, %s", step.skip)
                continue
            logging.info("sweep: %s %s", step.job, step.label)
            sigterm.training = step.job == "train"
            mains[step.job](list(step.args))
            sigterm.training = False
            if sigterm.received:
                logging.warning("sweep: SIGTERM: %s saved its checkpoint and the sweep stops here; run the same "
                                "command again to go on", step.label)
                return False
    finally:
        signal.signal(signal.SIGTERM, previous)
    return True


class _Sigterm:
    """A local sweep's SIGTERM handler. During a train step the training loop's own handler takes the
    notice (to save the current step) and passes it on here, so the sweep stops once that step returns;
    during any other step the sweep stops at once, as it would without a handler."""

    def __init__(self):
        self.received = False
        self.training = False

    def __call__(self, signum: int, frame) -> None:
        self.received = True
        if not self.training:
            raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(jobs.run("sweep", main))
