"""Several JAX processes on this machine, joined into one multi-host job over localhost.

    python -m diffcorrupt.parallel.local_processes --processes=2 --devices=2 -- train --config=... --workdir=...
    PROCESSES=2 DEVICES=2 bash launch/local.sh train --config=... --workdir=...

This is what a TPU pod or a SLURM job runs, on one machine: each process is started with
``JAX_COORDINATOR_ADDRESS`` (127.0.0.1 and a free port), ``JAX_NUM_PROCESSES`` and
``JAX_PROCESS_ID`` (read by ``initialize_from_environment``) and ``--devices`` simulated CPU
devices, and the processes exchange arrays through JAX's CPU collectives (gloo). Every
multi-host path of the jobs (per-process data, global arrays, orbax's multi-host saves,
process-0 writes, the preemption sync) runs as it would on a cluster.

Process 0's output is this command's output; process i's goes to ``<log_dir>/process_<i>.log``.
The processes live and die together: when one fails or is killed, the others are killed too
(they would wait in a collective for it forever) and the command exits with the failed one's
status; SIGTERM or SIGINT here is passed on to every process as SIGTERM (a preemption notice).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diffcorrupt.flag_types import positive_int

POLL_S = 0.1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_environment(process_id: int, processes: int, devices: int, port: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env.update(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(process_id),
        JAX_PLATFORMS=env.get("JAX_PLATFORMS", "cpu"),
        XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
    )
    return env


def launch(job_args: list[str], processes: int, devices: int, log_dir: Path, port: int | None = None) -> int:
    """Runs ``python -m diffcorrupt <job_args>`` as ``processes`` processes; returns the exit status."""
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    children: list[subprocess.Popen] = []
    logs = []
    for index in range(processes):
        log = None if index == 0 else open(log_dir / f"process_{index}.log", "w")
        logs.append(log)
        children.append(subprocess.Popen([sys.executable, "-m", "diffcorrupt", *job_args],
                                         env=process_environment(index, processes, devices, port),
                                         stdout=log, stderr=subprocess.STDOUT if log else None))
        where = "this output" if log is None else log.name
        print(f"local_processes: process {index} of {processes} is pid {children[-1].pid} ({devices} CPU devices, "
              f"coordinator 127.0.0.1:{port}), log: {where}", file=sys.stderr, flush=True)

    def pass_on(signum, frame) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = _wait(children)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for log in logs:
            if log:
                log.close()
    return status


def _wait(children: list[subprocess.Popen]) -> int:
    """Waits for every process; the first to fail takes the others down with it."""
    while True:
        codes = [child.poll() for child in children]
        failed = [(index, code) for index, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            index, code = failed[0]
            for child in children:
                if child.poll() is None:
                    child.kill()
            for child in children:
                child.wait()
            print(f"local_processes: process {index} exited with status {code}; the others were stopped",
                  file=sys.stderr, flush=True)
            return code if code > 0 else 128 - code
        if all(code == 0 for code in codes):
            return 0
        time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("local_processes: error: put the job after '--', e.g. --processes=2 --devices=2 -- train "
              "--config=configs/fmnist.py:tiny --workdir=runs/tiny", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m diffcorrupt.parallel.local_processes", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=positive_int, required=True, help="how many JAX processes")
    parser.add_argument("--devices", type=positive_int, default=1, help="simulated CPU devices per process")
    parser.add_argument("--log_dir", default=None, help="where processes 1.. write their output (default: a new temp folder)")
    parser.add_argument("--port", type=int, default=None, help="the coordinator's port (default: a free one)")
    flags = parser.parse_args(argv[:split])
    if flags.processes < 1 or flags.devices < 1:
        print(f"local_processes: error: --processes={flags.processes} and --devices={flags.devices} must both be "
              "at least 1", file=sys.stderr)
        return 2
    if not argv[split + 1:]:
        print("local_processes: error: no job after '--'; name one, e.g. train --config=... --workdir=...", file=sys.stderr)
        return 2
    log_dir = Path(flags.log_dir) if flags.log_dir else Path(tempfile.mkdtemp(prefix="diffcorrupt-processes-"))
    return launch(argv[split + 1:], flags.processes, flags.devices, log_dir, flags.port)


if __name__ == "__main__":
    sys.exit(main())
