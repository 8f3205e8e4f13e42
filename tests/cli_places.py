"""The fixtures that ``cli_corpus`` names, and running one command line the way a user does.

``make_places(root)`` builds, under ``root``, a trained run with checkpoints at steps 2 and 4, a copy
whose newest checkpoint is truncated, a sample folder, samples with out-of-range labels, a text
file, a non-empty folder, random bytes named ``.pt`` and a ``.py`` file without a grid.
``run_command`` starts the command in a fresh process and reports its exit status, output, seconds
and peak resident memory (that process alone, read from /proc while it runs). ``snapshot`` is the state of
every file and folder under a path (size and modification time), to show that nothing changed.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG = f"{REPO}/configs/fmnist.py:tiny"
POLL_S = 0.002  # the peak is read this often, so a rise in the last 2 ms before the exit is missed
RUN_FLAGS = [f"--config={CONFIG}", "--config.model.name=DiT-T/8", "--config.data.image_size=16",
             "--config.train.batch_size=16", "--config.train.num_steps=4", "--config.checkpoint.every_steps=2"]


@dataclasses.dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss: int  # bytes


def run_command(argv: list[str], cwd: pathlib.Path, timeout: float = 300, env: dict | None = None,
                tools: pathlib.Path = REPO / "tools") -> Outcome:
    """``diffcorrupt <job> ...`` as ``python -m diffcorrupt``, ``tool <script> ...`` as ``python <tools>/<script>``."""
    head = [sys.executable, "-m", "diffcorrupt"] if argv[0] == "diffcorrupt" else [sys.executable, str(tools / argv[1])]
    command = head + list(argv[1:] if argv[0] == "diffcorrupt" else argv[2:])
    out, err = cwd / ".stdout", cwd / ".stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(command, cwd=cwd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                   env=env if env is not None else os.environ.copy())
    start, peak = time.perf_counter(), 0
    try:
        while process.poll() is None:  # VmHWM only grows: the last reading before the exit is the peak
            peak = max(peak, _resident_peak(process.pid))
            if time.perf_counter() - start > timeout:
                process.kill()
            time.sleep(POLL_S)
    finally:
        if process.poll() is None:  # interrupted: leave no process behind
            process.kill()
            process.wait()
    outcome = Outcome(process.returncode, out.read_text(errors="replace"), err.read_text(errors="replace"),
                      time.perf_counter() - start, peak)
    out.unlink()
    err.unlink()
    return outcome


def _resident_peak(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM, bytes); 0 once it has exited. Not wait4's
    ru_maxrss: Linux starts that at the parent's resident size when the child execs, which for a
    pytest worker grown to gigabytes hides the command's own figure."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size and modification time."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        state[str(path.relative_to(root))] = (path.is_dir(), info.st_size, info.st_mtime_ns)
    return state


def _truncate_newest_state(workdir: pathlib.Path) -> None:
    """Cuts every array file of the newest checkpoint to half: a disk that filled during a copy."""
    newest = max((p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for path in (newest / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])


def make_places(root: pathlib.Path) -> dict[str, str]:
    """Builds the fixtures under ``root`` (about 30 s on 2 cores); returns placeholder -> path."""
    run = root / "run"
    done = subprocess.run([sys.executable, "-m", "diffcorrupt", "train", f"--workdir={run}", *RUN_FLAGS],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    damaged = root / "damaged"
    shutil.copytree(run, damaged)
    _truncate_newest_state(damaged)
    samples_root = root / "samples"
    done = subprocess.run([sys.executable, "-m", "diffcorrupt", "sample", f"--workdir={run}", "--num_samples=8",
                           "--batch_size=8", "--sampler=ddim", "--steps=2", f"--out={samples_root}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (samples,) = samples_root.iterdir()
    bad_labels = root / "bad_labels.npz"
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)  # the tiny preset's size
    np.savez(bad_labels, images, np.arange(90, 98, dtype=np.int64))
    file = root / "somefile.txt"
    file.write_text("not a folder\n")
    folder = root / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("a file the user keeps\n")
    garbage = root / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    file_py = root / "not_a_grid.py"
    file_py.write_text("RUNS = []\n")
    return {"repo": str(REPO), "config": CONFIG, "run": str(run), "damaged": str(damaged), "samples": str(samples),
            "bad_labels": str(bad_labels), "file": str(file), "folder": str(folder), "garbage": str(garbage),
            "file_py": str(file_py), "missing": str(root / "missing"), "new": str(root / "new")}
