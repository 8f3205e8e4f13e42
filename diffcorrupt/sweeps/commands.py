"""Runs -> steps (train each run; with a report, report each run, then all of them) -> commands.

One plan serves every launcher, so what is printed is what runs: locally the steps run in this
process in order; on a TPU pod each is ``bash launch/tpu_pod.sh <job> ...`` in turn (the pod runs
one job at a time); under SLURM each is an ``sbatch`` whose ``--dependency=afterok`` waits for the
steps it needs, so trains run side by side, each run's report (its sampling, the costly part)
starts when its training ends, and the final report, which then only reads metrics, comes last.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from diffcorrupt.errors import UserError
from diffcorrupt.sweeps.expand import Run

LAUNCHERS = ("local", "tpu", "slurm")
SCRIPTS = {"tpu": "launch/tpu_pod.sh", "slurm": "launch/slurm_gpu.sbatch"}


@dataclasses.dataclass(frozen=True)
class Step:
    """One job invocation; ``id`` is also its shell variable in SLURM scripts."""

    id: str
    job: str  # train | report
    label: str  # the run's name, or 'all'
    args: tuple[str, ...]
    after: tuple[str, ...] = ()  # ids of the steps it waits for
    skip: str = ""  # why it does not run ('' = it runs)


def plan(runs: Sequence[Run], root: Path, *, finished: Mapping[str, int], report: bool,
         report_flags: Sequence[str], rows: str = "") -> list[Step]:
    """The steps in the order a one-at-a-time launcher runs them: all trains, then the reports.
    A run in ``finished`` (name -> its last step) keeps its train step, marked skipped. ``rows``
    (earlier reports' results.csv) joins the all-runs report, so that a grid run over several
    sessions, whose run folders did not all survive, is reported whole."""
    trains = [Step(f"train_{i}", "train", run.name, tuple(run.train_args()),
                   skip=f"{run.name} is finished at step {finished[run.name]}" if run.name in finished else "")
              for i, run in enumerate(runs)]
    if not report:
        return trains
    reports = [Step(f"report_{i}", "report", run.name,
                    (f"--workdirs={run.workdir}", f"--out={run.workdir / 'report'}", *report_flags),
                    after=() if train.skip else (train.id,))
               for i, (run, train) in enumerate(zip(runs, trains))]
    workdirs = ",".join(str(run.workdir) for run in runs)
    earlier = (f"--rows={rows}",) if rows else ()
    everything = Step("report_all", "report", "all",
                      (f"--workdirs={workdirs}", *earlier, f"--out={root / 'report'}", *report_flags),
                      after=tuple(step.id for step in reports))
    return trains + reports + [everything]


def render(steps: Sequence[Step], launcher: str, header: str, sbatch_args: Sequence[str] = ()) -> str:
    """The steps as a bash script to read or run from the repository root, ``header`` as its first comment."""
    lines = ["#!/usr/bin/env bash", f"# {header}", "set -euo pipefail"]
    if launcher == "tpu":
        lines.append("# needs TPU_NAME and ZONE; each line runs on every worker of the pod, one after another")
    for step in steps:
        if step.skip:
            lines.append(f"# skipped: {step.skip}")
        elif launcher == "slurm":
            lines.append(f"{step.id}=$({_join(_sbatch(step, sbatch_args, {s: f'${s}' for s in step.after}))} "
                         "| cut -d';' -f1)")
        else:
            lines.append(_join(_command(step, launcher)))
    return "\n".join(lines) + "\n"


def submit(steps: Sequence[Step], launcher: str, sbatch_args: Sequence[str] = ()) -> dict[str, str]:
    """Runs the tpu commands in turn, or submits the slurm jobs chained by their ids; returns step id ->
    SLURM job id (slurm) or 'done' (tpu)."""
    script = SCRIPTS[launcher]
    if not Path(script).is_file():
        raise UserError(f"{script} is not under the current directory; run the sweep from the repository root")
    done: dict[str, str] = {}
    for step in steps:
        if step.skip:
            continue
        argv = _sbatch(step, sbatch_args, done) if launcher == "slurm" else _command(step, launcher)
        result = _run(argv, step, done)
        done[step.id] = result.stdout.strip().split(";")[0] if launcher == "slurm" else "done"
    return done


def _command(step: Step, launcher: str) -> list[str]:
    prefix = ["diffcorrupt"] if launcher == "local" else ["bash", SCRIPTS[launcher]]
    return [*prefix, step.job, *step.args]


def _sbatch(step: Step, sbatch_args: Sequence[str], job_ids: Mapping[str, str]) -> list[str]:
    """``sbatch`` for one step; ``job_ids`` maps the ids of the steps it waits for to their SLURM ids."""
    waits = [job_ids[s] for s in step.after if s in job_ids]
    dependency = [f"--dependency=afterok:{':'.join(waits)}"] if waits else []
    return ["sbatch", "--parsable", f"--job-name={step.job}-{step.label}", *dependency, *sbatch_args, SCRIPTS["slurm"],
            step.job, *step.args]


def _join(argv: Sequence[str]) -> str:
    """Shell-quoted, except ``$train_0``-style references, which the script expands."""
    return " ".join(arg if arg.startswith("--dependency=afterok:$") else shlex.quote(arg) for arg in argv)


def _run(argv: list[str], step: Step, done: Mapping[str, str]) -> subprocess.CompletedProcess:
    """Runs one command; a failure names the step and what had already started, since a rerun
    would start those again (SLURM jobs still queued are not seen as finished)."""
    try:
        result = subprocess.run(argv, capture_output=argv[0] == "sbatch", text=True)
    except FileNotFoundError:
        raise UserError(f"'{argv[0]}' is not on this machine's PATH; submit from a machine that has it, or print the "
                        "commands without --submit") from None
    if result.returncode:
        detail = (result.stderr or "").strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        started = ", ".join(f"{key}={value}" for key, value in done.items()) or "none"
        raise UserError(f"step {step.id} ({step.job} {step.label}) failed: {detail[0]}; steps already run or submitted: "
                        f"{started}; fix it and rerun the sweep once they have ended, since it skips only finished runs")
    return result
