"""Local runs side by side: several runs at once, each pinned to its own share of the cores, then the all-runs report.

A model small enough for a CPU may keep few of XLA's threads busy. On 2 cores, two runs of the memorization grid
pinned to one core each train 25% more steps a second together than one run on both (docs/reproduction.md); the
demo's latent runs gain nothing that way (docs/performance.md). Pinning keeps the runs from trading cores, so each
run's speed is steady. A run's chain (its training, then its own report) runs in child processes on one share of the
cores; the next run takes that share when the chain ends. A child inherits the affinity of the thread that starts
it, so this thread pins itself to a share for the start and then widens again: no code runs between fork and exec
(``preexec_fn`` is unsafe beside the threads JAX may have started). If the sweep itself is interrupted (Ctrl-C, or
SIGTERM from a scheduler or a shutdown), its runs get SIGTERM, on which training saves a checkpoint and exits, so a
rerun resumes them rather than racing copies of them that were left running.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Sequence

from diffcorrupt.errors import UserError
from diffcorrupt.sweeps.commands import Step

POLL_SECONDS = 0.5


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity), or [] where the platform does not say."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def core_shares(cores: Sequence[int], parallel: int) -> list[tuple[int, ...]]:
    """``cores`` cut into ``parallel`` contiguous shares whose sizes differ by one at most."""
    if not cores:
        raise UserError("--parallel needs to pin runs to cores, which this platform does not allow (Linux does); "
                        "run the sweep without --parallel")
    if parallel > len(cores):
        raise UserError(f"--parallel={parallel} is more runs than the {len(cores)} cores this process may use "
                        f"({','.join(map(str, cores))}); give --parallel={len(cores)} or fewer")
    size, extra = divmod(len(cores), parallel)
    starts = [i * size + min(i, extra) for i in range(parallel + 1)]
    return [tuple(cores[a:b]) for a, b in zip(starts[:-1], starts[1:])]


def chains_of(steps: Sequence[Step]) -> tuple[list[list[Step]], list[Step]]:
    """(one chain per run: its steps in plan order, the steps over all runs): a run's report needs only its own
    training, the all-runs report needs every run."""
    chains: dict[str, list[Step]] = {}
    final = []
    for step in steps:
        if step.label == "all":
            final.append(step)
        else:
            chains.setdefault(step.label, []).append(step)
    return list(chains.values()), final


@dataclasses.dataclass
class _Running:
    name: str
    chain: list[Step]  # the steps still to run, none of them skipped
    cores: tuple[int, ...]
    log: IO[str]
    process: subprocess.Popen | None = None


def run_side_by_side(steps: Sequence[Step], parallel: int, logs: Path) -> list[Step]:
    """Runs every run's chain, ``parallel`` at a time, each on its share of the cores, its output in
    ``logs/<run>.log``; returns the steps over all runs, for the caller to run once every chain has succeeded.
    A failed chain does not stop the others; once they end, the failures are one sentence that names each log."""
    shares = deque(core_shares(usable_cores(), parallel))
    chains, final = chains_of(steps)
    pending = deque(to_run for chain in chains if (to_run := [step for step in chain if not step.skip]))
    logs.mkdir(parents=True, exist_ok=True)
    running: list[_Running] = []
    failed: dict[str, Path] = {}
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        while pending or running:
            while pending and shares:
                chain = pending.popleft()
                name = chain[0].label
                running.append(_start(_Running(name, chain, shares.popleft(), (logs / f"{name}.log").open("a"))))
            time.sleep(POLL_SECONDS)
            for run in [run for run in running if run.process.poll() is not None]:
                if run.process.returncode == 0 and run.chain:
                    _start(run)
                    continue
                if run.process.returncode:
                    failed[run.name] = Path(run.log.name)
                run.log.close()
                running.remove(run)
                shares.append(run.cores)
    finally:
        _stop(running)
        signal.signal(signal.SIGTERM, previous)
    if failed:
        names = ", ".join(f"{name} (see {log})" for name, log in failed.items())
        raise UserError(f"{len(failed)} run(s) failed: {names}; the others finished and the all-runs report was not "
                        "drawn; fix them and rerun the sweep, which skips finished runs")
    return final


def _exit(signum: int, frame) -> None:
    """SIGTERM as an exception, so that the runs are stopped on the way out (by default the sweep would just end)."""
    raise SystemExit(128 + signum)


def _start(run: _Running) -> _Running:
    """Starts the chain's next step, pinned to the run's cores."""
    step = run.chain.pop(0)
    run.log.write(f"=== diffcorrupt {step.job} {step.label}, pinned to cores {','.join(map(str, run.cores))}\n")
    run.log.flush()
    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, run.cores)
    try:
        run.process = subprocess.Popen([sys.executable, "-m", "diffcorrupt", step.job, *step.args], stdout=run.log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        os.sched_setaffinity(0, everything)
    return run


def _stop(running: Sequence[_Running]) -> None:
    """SIGTERM to the runs still going (the sweep was interrupted), then waits for them to save and exit."""
    for run in running:
        run.process.terminate()
    for run in running:
        run.process.wait()
        run.log.close()
