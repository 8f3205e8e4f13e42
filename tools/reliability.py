"""The reliability campaign: the single-process rows of docs/reliability.md, each one command that
prints one JSON line with what it measured (and the command, commit, date and CPU that measured it).

  python tools/reliability.py kills --kills=20 --seed=0   # kill -9 at random moments, saves included
  python tools/reliability.py disk_full                    # the disk fills during a save (needs mount)
  python tools/reliability.py read_only                    # the workdir turns read-only mid-run (needs mount)
  python tools/reliability.py items                        # truncated, missing and foreign checkpoint items
  python tools/reliability.py workers                      # the corruption with 0 and 2 grain workers

Every row trains the small configuration of tests/test_train_job.py (``configs/fmnist.py:tiny``,
DiT-T/8 at 16x16, batch 16, async saves) with ``diffcorrupt train`` in subprocesses on one CPU
device, in a scratch folder (``--root``, removed afterwards unless ``--keep_files``).

``kills``: one uninterrupted run (``--steps``, default 20 a kill; a checkpoint every ``--every``
steps, the last 3 and every 50th kept), then the same run killed with SIGKILL ``--kills`` times,
each restart resuming it. Half the kill moments, drawn from ``--seed``, are a random sleep after
the start: a third of those within the start-up the uninterrupted run took (imports, compilation,
restore), the rest within 3 s after it (training and saves). The other half wait for the k-th
checkpoint save of that life (k = 1..3) to appear as orbax's ``<step>.orbax-checkpoint-tmp``
directory, before anything of it is committed, and kill at once or within 0.4 s. Where each kill
landed is read off the workdir afterwards: a temporary step directory made by that life means
during a save. It then compares the two workdirs: the final state (params, EMA, optimizer state,
step, key) and the next data batch, bitwise; every checkpoint both kept, bitwise (state,
config); the checkpoint directories (none missing, none extra, no temporary
directory left, nothing set aside as unreadable); and no traceback on any restart.

``disk_full`` and ``read_only`` mount a small tmpfs, or bind-mount the workdir read-only over
itself, so they need root (or CAP_SYS_ADMIN); they say so in one line when mounting is refused.

Exit status: 0 when the row holds (``"ok": true``), 1 when it does not (the JSON line says where),
2 when it cannot run here (mounting refused).

``--compile_cache=DIR`` shares JAX's persistent compilation cache between the runs (faster
restarts; the step compiled is the same), off by default so that each restart is what a user's is.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from diffcorrupt.weights.hashing import file_sha256

REPO = Path(__file__).resolve().parent.parent
# The configuration of tests/test_train_job.py: a model of four 4x4 patches on 16x16 Fashion-MNIST.
SMALL = ["--config=configs/fmnist.py:tiny", "--config.model.name=DiT-T/8", "--config.data.image_size=16",
         "--config.train.batch_size=16", "--config.data.corruption.ratio=0.1", "--config.model.cep.kind=uniform",
         "--config.checkpoint.async_save=true"]
TMP_MARK = ".orbax-checkpoint-tmp"  # orbax writes <step>.orbax-checkpoint-tmp/ and renames it when done
UNREADABLE = "checkpoints_unreadable"
TIMEOUT = 900  # seconds for one train job; a hang is a failure, not a wait


# --------------------------------------------------------------------------- provenance


def stamp(argv: list[str] | None = None) -> dict[str, Any]:
    """What measured the figure: the command, the commit (and a hash of the local changes to tracked
    files, if any), the date, the CPU model and core count."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            return ""
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    argv = sys.argv[1:] if argv is None else argv
    diff = git("diff", "HEAD")  # local changes to tracked files: the tree measured is the commit plus these
    return {"command": " ".join(["python", "tools/reliability.py", *argv]), "commit": git("rev-parse", "--short", "HEAD"),
            "local_changes": hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None,
            "date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count()}


# --------------------------------------------------------------------------- running the train job


def job_env(devices: int = 1, compile_cache: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.setdefault("JAX_PLATFORMS", "cpu")
    if compile_cache:
        env["JAX_COMPILATION_CACHE_DIR"] = str(compile_cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def train_args(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "diffcorrupt", "train", *SMALL, f"--workdir={workdir}", *extra]


class Job:
    """One ``diffcorrupt train`` process, its stdout and stderr in files beside the workdir."""

    def __init__(self, workdir: Path, extra: list[str], logs: Path, name: str, env: dict[str, str]):
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / f"{name}.out", logs / f"{name}.err"
        self.started = time.monotonic()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(train_args(workdir, *extra), cwd=REPO, env=env, stdout=out, stderr=err)
        _STARTED.append(self)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"diffcorrupt train did not finish in {timeout} s; see {self.err_path}") from None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def summary(self) -> dict[str, Any] | None:
        lines = self.out_path.read_text().strip().splitlines()
        try:
            return json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            return None

    def error_line(self) -> str:
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""


_STARTED: list[Job] = []


def stop_started_jobs() -> None:
    """Kills the train jobs this process started that still run (after a failure of the campaign)."""
    for job in _STARTED:
        if job.process.poll() is None:
            job.process.kill()
            job.process.wait()


def train(workdir: Path, extra: list[str], logs: Path, name: str, env: dict[str, str]) -> Job:
    job = Job(workdir, extra, logs, name, env)
    job.wait()
    return job


def tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")


# --------------------------------------------------------------------------- looking at a workdir


def step_dirs(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def tmp_entries(workdir: Path, since: float | None = None) -> list[str]:
    """orbax's temporary step directories in checkpoints/ (a save being written), those created
    after the wall time ``since`` when given (a kill can leave older ones behind)."""
    directory = workdir / "checkpoints"
    found = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if TMP_MARK not in name:
            continue
        try:
            if since is None or os.stat(directory / name).st_mtime >= since:
                found.append(name)
        except FileNotFoundError:
            pass  # renamed (finalised) or removed since the listing
    return sorted(found)


def tmp_step(name: str) -> int | None:
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def partial_dirs(workdir: Path) -> list[int]:
    """Step directories without orbax's metadata file: left by a deletion (keep policy) cut short."""
    return [s for s in step_dirs(workdir) if not (workdir / "checkpoints" / str(s) / "_CHECKPOINT_METADATA").exists()]


def set_aside(workdir: Path) -> list[str]:
    directory = workdir / UNREADABLE
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def file_digests(directory: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``directory``."""
    return {str(p.relative_to(directory)): file_sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def logged_steps(text: str) -> list[int]:
    """The steps a train job's stderr logged (clu's ``[step] name=value`` lines; every step with
    train.log_every=1). Each life of a run has its own stderr, which metrics.jsonl does not give:
    a resumed run rewrites that file from its resumed step on."""
    return [int(m.group(1)) for m in _LOGGED.finditer(text)]


_LOGGED = re.compile(r"^INFO:absl:\[(\d+)\] ", re.MULTILINE)


# --------------------------------------------------------------------------- reading checkpoints back


class StateReader:
    """Restores checkpoints of the small run in this process, on one device, to compare them bitwise."""

    def __init__(self, overrides: list[str] = ()):
        import jax

        from diffcorrupt.config.loading import load_config
        from diffcorrupt.data.pipeline import corrupted_source
        from diffcorrupt.models.registry import model_from_config
        from diffcorrupt.parallel.mesh import make_mesh
        from diffcorrupt.parallel.sharding import rules_from_config
        from diffcorrupt.models.control_branch import make_control
        from diffcorrupt.training.batches import control_shape, input_spec
        from diffcorrupt.training.optimizer import make_optimizer
        from diffcorrupt.training.state import abstract_state, create_state

        flags = [a[len("--config."):] for a in SMALL[1:]] + [o[len("--config."):] if o.startswith("--config.") else o
                                                             for o in overrides]
        self.config = load_config(str(REPO / SMALL[0].split("=", 1)[1]), flags)
        self.config.mesh.data, self.config.mesh.fsdp, self.config.mesh.tensor = 1, 1, 1
        mesh = make_mesh(self.config.mesh, jax.devices()[:1])
        self.view = corrupted_source(self.config)
        shape, num_classes = input_spec(self.config, self.view.source)
        model = model_from_config(self.config, shape, num_classes)
        branch = None
        if self.config.personalize.base:  # the state is the control branch's
            model = make_control(self.config.personalize.method, model, shape[0], self.config.personalize.copies)
            branch = control_shape(self.config, self.view.source)
        optimizer = make_optimizer(self.config.train)[0]
        state, _ = create_state(model, optimizer, shape, self.config.seed, mesh, rules_from_config(self.config.mesh.rules),
                                branch)
        self.abstract = abstract_state(state)

    def latest(self, workdir: Path) -> tuple[int, Any, dict]:
        """(step, state, next batch) of the newest readable checkpoint, through the project's own
        restore (which sets unreadable newer checkpoints aside, as the train job does)."""
        import jax

        from diffcorrupt.data.pipeline import make_iterator
        from diffcorrupt.training.checkpoints import Checkpointer

        checkpointer = Checkpointer(workdir, every_steps=10**9, keep=10**6, async_save=False)
        try:
            restored = checkpointer.restore(self.abstract)
        finally:
            checkpointer.close()
        if restored is None:
            raise RuntimeError(f"no checkpoint in {workdir}")
        state, step = restored
        iterator = make_iterator(self.config, source=self.view, first_batch=step)  # where the job reads on
        batch = next(iterator)
        if hasattr(iterator, "close"):
            iterator.close()  # grain's worker processes, when data.num_workers > 0
        return step, jax.device_get(state), batch

    def step(self, workdir: Path, step: int) -> tuple[Any, Any]:
        """(state, config) saved at ``step``, read with orbax directly."""
        import jax
        import orbax.checkpoint as ocp

        directory = workdir / "checkpoints" / str(step)
        with ocp.StandardCheckpointer() as checkpointer:
            state = jax.device_get(checkpointer.restore(directory / "state", self.abstract))
        config = json.loads((directory / "config" / "metadata").read_text())
        return state, config


def bitwise_equal(a: Any, b: Any) -> bool:
    import jax
    import numpy as np

    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b) or len(leaves_a) != len(leaves_b):
        return False
    for x, y in zip(leaves_a, leaves_b):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            return False
    return True


# --------------------------------------------------------------------------- row 1: kill -9


def kill_campaign(*, kills: int = 20, seed: int = 0, root: Path, steps: int | None = None, every: int = 5,
                  keep: int = 3, keep_every: int = 50, window_s: float = 3.0, modes: tuple[str, ...] = ("sleep", "save"),
                  max_target: int = 3, save_delay_max: float = 0.4, compile_cache: str | None = None,
                  reader: StateReader | None = None,
                  log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Kills one run ``kills`` times and compares it with an uninterrupted one; see the module doc.
    Each kill's moment is drawn from ``modes``: "sleep" (a random time after the start) or "save"
    (at the k-th save of that life, k <= ``max_target``: at once, or half the time within
    ``save_delay_max`` seconds)."""
    start = time.monotonic()
    rng = random.Random(seed)
    steps = steps or 20 * kills
    env = job_env(1, compile_cache)
    extra = [f"--config.train.num_steps={steps}", f"--config.checkpoint.every_steps={every}",
             f"--config.checkpoint.keep={keep}", f"--config.checkpoint.keep_every={keep_every}",
             "--config.train.log_every=1", f"--config.seed={seed}"]
    logs = root / "logs"
    straight, killed = root / "straight", root / "killed"

    # The uninterrupted run; how long it takes to reach its first step sets the sleeps' range.
    job = Job(straight, extra, logs, "straight", env)
    startup_s = None
    while job.process.poll() is None:
        if startup_s is None and logged_steps(job.stderr):
            startup_s = time.monotonic() - job.started
        time.sleep(0.05)
    straight_s = time.monotonic() - job.started
    if job.wait() != 0:
        raise RuntimeError(f"the uninterrupted run failed: {job.error_line()}")
    startup_s = startup_s or straight_s / 2
    log(f"uninterrupted run: {straight_s:.1f} s, first step after {startup_s:.1f} s")

    records: list[dict[str, Any]] = []
    lives: list[Job] = []
    finished_early = False
    while len(records) < kills:
        before = step_dirs(killed)
        partial_before = set(partial_dirs(killed))
        born = time.time() - 0.01
        job = Job(killed, extra, logs, f"life{len(lives):02d}", env)
        lives.append(job)
        if rng.choice(modes) == "sleep":
            # a third in start-up (imports, compilation, restore), the rest in the first seconds of training
            delay = rng.uniform(0.0, startup_s) if rng.random() < 1 / 3 else startup_s + rng.uniform(0.0, window_s)
            mode = "sleep"
            deadline = job.started + delay
            while time.monotonic() < deadline and job.process.poll() is None:
                time.sleep(0.01)
        else:
            mode, target = "save", rng.randint(1, max_target)
            after = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, save_delay_max)
            seen: set[str] = set()
            deadline = job.started + startup_s + 120
            while job.process.poll() is None and time.monotonic() < deadline:
                seen.update(tmp_entries(killed, since=born))
                if len(seen) >= target:
                    break
                time.sleep(0.002)
            time.sleep(after)
        if job.process.poll() is not None:  # it finished (or failed) before the kill
            finished_early = True
            break
        job.kill()
        in_save = sorted({tmp_step(n) for n in tmp_entries(killed, since=born)} - {None})
        deleting = [s for s in partial_dirs(killed) if s in before and s not in partial_before]
        trained = logged_steps(job.stderr)
        record = {"mode": mode, "after_s": round(time.monotonic() - job.started, 2),
                  "step": trained[-1] if trained else (max(before) if before else 0),
                  "phase": "save" if in_save else "delete" if deleting else "training" if trained else "start-up",
                  "saving": in_save, "deleting": deleting, "tmp_left": tmp_entries(killed)}
        records.append(record)
        log(f"kill {len(records)}: {record}")

    final = job if finished_early else Job(killed, extra, logs, f"life{len(lives):02d}", env)
    if not finished_early:
        lives.append(final)
    final_rc = final.wait()
    summary = final.summary() or {}

    reader = reader or StateReader([f"--config.seed={seed}"])
    unreadable_before_compare = set_aside(killed)
    kept_a, kept_b = step_dirs(straight), step_dirs(killed)
    leftovers = tmp_entries(killed)
    final_a, final_b = reader.latest(straight), reader.latest(killed)
    final_equal = (final_a[0] == final_b[0] == steps and bitwise_equal(final_a[1], final_b[1])
                   and bitwise_equal(final_a[2], final_b[2]))
    history_equal = []
    for step in sorted(set(kept_a) & set(kept_b)):
        a, b = reader.step(straight, step), reader.step(killed, step)
        history_equal.append(bitwise_equal(a[0], b[0]) and a[1] == b[1])
    restart_logs = "".join(life.stderr for life in lives[1:])
    resumed = [int(line.rsplit("step ", 1)[1].split()[0]) for life in lives[1:] for line in life.stderr.splitlines()
               if "resumed from the checkpoint of step" in line]
    result = {
        "row": "kill -9 at random moments",
        "kills": len(records),
        "kills_requested": kills,
        "kills_during_save": sum(r["phase"] == "save" for r in records),
        "kills_during_delete": sum(r["phase"] == "delete" for r in records),
        "kills_in_start_up": sum(r["phase"] == "start-up" for r in records),
        "kill_steps": [r["step"] for r in records],
        "save_steps_killed": sorted({s for r in records for s in r["saving"]}),
        "restarts": len(lives) - 1,
        "resumed_from": resumed,
        "steps": steps,
        "every_steps": every,
        "final_rc": final_rc,
        "final_step": summary.get("last_step"),
        "bitwise_equal": bool(final_equal),
        "kept_checkpoints_bitwise_equal": f"{sum(history_equal)}/{len(history_equal)}",
        "checkpoints_missing": sorted(set(kept_a) - set(kept_b)),
        "checkpoints_extra": sorted(set(kept_b) - set(kept_a)),
        "tmp_dirs_left": leftovers,
        "set_aside_unreadable": unreadable_before_compare,
        "fallbacks": restart_logs.count("does not read back"),
        "tracebacks_on_restart": tracebacks(restart_logs),
        "straight_wall_s": round(straight_s, 1),
        "wall_s": round(time.monotonic() - start, 1),
    }
    result["ok"] = bool(final_equal and all(history_equal) and final_rc == 0 and len(records) == kills
                        and not result["checkpoints_missing"] and not result["checkpoints_extra"] and not leftovers
                        and not unreadable_before_compare and not result["tracebacks_on_restart"])
    result["kill_log"] = records
    return result


# --------------------------------------------------------------------------- rows 2: disk full, read-only


def can_mount(root: Path) -> str | None:
    """None when this process may mount (tried on a 1 MiB tmpfs), else the reason it may not."""
    probe = Path(tempfile.mkdtemp(prefix="mount-probe-", dir=root))
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        probe.rmdir()
        return f"mount could not run ({err})"
    if result.returncode != 0:
        probe.rmdir()
        return f"mounting is not permitted here ({result.stderr.strip() or result.returncode}); run as root"
    subprocess.run(["umount", str(probe)], capture_output=True, timeout=30)
    probe.rmdir()
    return None


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"mount {' '.join(args)} failed: {result.stderr.strip()}")


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=60).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)


def _job_error(job: Job) -> tuple[str, bool]:
    """(the job's one-sentence error, else stderr's last line; whether that sentence is the last line,
    where a user reads it)."""
    lines = [line for line in job.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("diffcorrupt train: error: ")]
    message = errors[-1] if errors else (lines[-1] if lines else "")
    return message, bool(errors) and lines[-1] == message


def _failed_save(job: Job) -> dict[str, Any]:
    """How a job that hit a storage failure ended: its exit status, the job's error sentence (and
    whether it is stderr's last line, as a user reads it, else what follows it), the step named, the
    tracebacks around it."""
    message, last = _job_error(job)
    lines = [line for line in job.stderr.splitlines() if line.strip()]
    after = lines[len(lines) - lines[::-1].index(message):] if message in lines else lines
    step = None
    if "saving the checkpoint of step " in message:
        step = int(message.split("saving the checkpoint of step ", 1)[1].split()[0])
    return {"rc": job.process.returncode, "message": message, "failed_step": step,
            "one_sentence": message.startswith("diffcorrupt train: error: saving ")
            and "the earlier checkpoints there are intact" in message,
            "sentence_is_last_line": last,
            "after_sentence": after[-20:],
            "tracebacks": tracebacks(job.stderr)}


def _restores(reader: StateReader, workdir: Path, steps: list[int]) -> dict[str, Any]:
    """Every listed checkpoint reads back (orbax), and the project's restore picks the newest."""
    readable = []
    for step in steps:
        try:
            reader.step(workdir, step)
            readable.append(step)
        except Exception:  # noqa: BLE001 -- an unreadable checkpoint is the finding, whatever raised
            pass
    newest = reader.latest(workdir)[0] if steps else None
    return {"readable": readable, "restored_step": newest}


def disk_full(*, root: Path, size_mb: int = 150, steps: int = 60, every: int = 5,
              compile_cache: str | None = None, reader: StateReader | None = None) -> dict[str, Any]:
    """Trains into a ``size_mb`` tmpfs (one checkpoint of the small run is about 60 MB) until a save
    fills it; then frees space and reruns the same command."""
    start = time.monotonic()
    env = job_env(1, compile_cache)
    mount = root / "disk"
    mount.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount))
    try:
        workdir = mount / "run"
        extra = [f"--config.train.num_steps={steps}", f"--config.checkpoint.every_steps={every}",
                 "--config.checkpoint.keep=100"]
        full = _failed_save(train(workdir, extra, root / "logs", "disk_full", env))
        committed = step_dirs(workdir)
        leftovers = tmp_entries(workdir)
        reader = reader or StateReader()
        restored = _restores(reader, workdir, committed)
        _mount("-o", "remount,size=2g", str(mount))  # space freed
        again = train(workdir, extra, root / "logs", "disk_freed", env)
        return _storage_row({"row": "disk full during a save", "tmpfs_mb": size_mb}, "No space left", full,
                            committed, restored, leftovers, again, steps, start)
    finally:
        _umount(mount)


def _turn_read_only(job: Job, workdir: Path, ro_after: int) -> tuple[dict[str, Any], list[int], int]:
    """Once ``job`` has committed step ``ro_after``, bind-mounts ``workdir`` read-only over itself and
    waits for the job to end: (how it ended, the steps committed, the last step logged before)."""
    marker = workdir / "checkpoints" / str(ro_after) / "commit_success.txt"
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        if job.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the run stopped before step {ro_after} was saved: {job.error_line()}")
        time.sleep(0.01)
    _mount("--bind", str(workdir), str(workdir))
    try:
        # "busy" while the job has a file open for writing through the new mount (a save under way)
        for attempt in range(500):
            try:
                _mount("-o", "remount,bind,ro", str(workdir))
                break
            except RuntimeError:
                if attempt == 499:
                    raise
                time.sleep(0.01)
        made_read_only_at = max(logged_steps(job.stderr) or [ro_after])
        try:
            job.wait(timeout=300)
            failed = _failed_save(job)
        except RuntimeError:
            failed = {"rc": None, "message": "still running 300 s after the workdir turned read-only (killed)",
                      "failed_step": None, "tracebacks": tracebacks(job.stderr), "one_sentence": False,
                      "sentence_is_last_line": False, "after_sentence": []}
        return failed, step_dirs(workdir), made_read_only_at
    finally:
        _umount(workdir)


def read_only(*, root: Path, every: int = 5, ro_after: int = 10, compile_cache: str | None = None,
              rerun: bool = True, reader: StateReader | None = None) -> dict[str, Any]:
    """Starts a long run; once the checkpoint of ``ro_after`` is written, bind-mounts the workdir
    read-only over itself (files the job holds open stay writable, as on a real remount of a disk
    whose writers were open; every new file fails); then makes it writable again and reruns."""
    start = time.monotonic()
    env = job_env(1, compile_cache)
    workdir = root / "ro" / "run"
    extra = ["--config.train.num_steps=100000", f"--config.checkpoint.every_steps={every}", "--config.checkpoint.keep=100"]
    job = Job(workdir, extra, root / "logs", "read_only", env)
    try:
        failed, committed, made_read_only_at = _turn_read_only(job, workdir, ro_after)
    finally:
        if job.process.poll() is None:  # whatever went wrong, no run of 100,000 steps is left behind
            job.process.kill()
            job.process.wait()
    leftovers = tmp_entries(workdir)
    reader = reader or StateReader()
    restored = _restores(reader, workdir, committed)
    resume_to = max(committed, default=0) + 2 * every
    again = None
    if rerun:
        rerun_extra = [f"--config.train.num_steps={resume_to}", *extra[1:]]
        again = train(workdir, rerun_extra, root / "logs", "read_only_rerun", env)
    return _storage_row({"row": "read-only workdir during a run", "read_only_from_step": made_read_only_at},
                        "Read-only", failed, committed, restored, leftovers, again, resume_to, start)


def _storage_row(head: dict[str, Any], cause: str, failed: dict[str, Any], committed: list[int],
                 restored: dict[str, Any], leftovers: list[str], again: Job | None, rerun_to: int,
                 start: float) -> dict[str, Any]:
    """Rows 2a and 2b: the failed save (one sentence naming ``cause``, no traceback), the checkpoints
    before it (all read back, the newest restored) and the rerun, if any (from the newest to
    ``rerun_to``)."""
    summary = (again.summary() or {}) if again else {}
    result = {
        **head,
        **failed,
        "earlier_checkpoints": committed,
        "earlier_readable": restored["readable"],
        "restored_step": restored["restored_step"],
        "tmp_dirs_left_after_failure": leftovers,
        "rerun_rc": again.process.returncode if again else None,
        "rerun_first_step": summary.get("first_step"),
        "rerun_last_step": summary.get("last_step"),
        "rerun_tracebacks": tracebacks(again.stderr) if again else None,
        "wall_s": round(time.monotonic() - start, 1),
    }
    rerun_ok = again is None or (again.process.returncode == 0 and summary.get("last_step") == rerun_to
                                 and summary.get("first_step") == max(committed, default=None))
    result["ok"] = bool(committed and rerun_ok and failed["rc"] == 2 and failed["one_sentence"]
                        and cause in failed["message"] and not failed["tracebacks"]
                        and restored["readable"] == committed and restored["restored_step"] == max(committed))
    return result


# --------------------------------------------------------------------------- row 3: bad checkpoint items


def _truncate_state(step_dir: Path) -> str:
    """Cuts the largest file of the state item to half: a copy cut off mid-write."""
    blob = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    return str(blob.relative_to(step_dir))


ITEM_CASES = ("truncated_state", "missing_config", "missing_state", "foreign", "foreign_allowed",
              "none_reads")
BASE_ARGS = ["--config.checkpoint.every_steps=10", "--config.checkpoint.keep=100"]


def make_base(root: Path, env: dict[str, str], steps: int = 30, args: list[str] = BASE_ARGS) -> Path:
    """A finished small run with several checkpoints (all kept)."""
    base = root / "base"
    job = train(base, [f"--config.train.num_steps={steps}", *args], root / "logs", "base", env)
    if job.process.returncode != 0:
        raise RuntimeError(f"the base run failed: {job.error_line()}")
    return base


def make_foreign(root: Path, env: dict[str, str]) -> Path:
    """The checkpoint of a different model (DiT-T/4) trained 10 steps: its step directory."""
    foreign = root / "foreign_run"
    job = train(foreign, ["--config.model.name=DiT-T/4", "--config.train.num_steps=10",
                          "--config.checkpoint.every_steps=10"], root / "logs", "foreign", env)
    if job.process.returncode != 0:
        raise RuntimeError(f"the foreign run failed: {job.error_line()}")
    return foreign / "checkpoints" / "10"


def expected_item(case: str, steps: list[int]) -> dict[str, Any]:
    """What the documented contract asks of the job for ``case`` on a base with checkpoints ``steps``:
    a damaged newest checkpoint is skipped for the one before and set aside; a foreign one is refused
    by the config check (or, with --allow_config_change, skipped and set aside); none readable is
    refused; the exit status 2 comes with one sentence."""
    newest, previous = steps[-1], steps[-2]
    foreign = newest + (newest - previous)
    return {"truncated_state": (0, previous, [newest]), "missing_config": (0, previous, [newest]),
            "missing_state": (0, previous, [newest]),
            "foreign": (2, None, []), "foreign_allowed": (0, newest, [foreign]), "none_reads": (2, None, [])}[case]


def item_case(case: str, *, base: Path, root: Path, env: dict[str, str], foreign: Path | None = None,
              args: list[str] = BASE_ARGS) -> dict[str, Any]:
    """Damages a copy of ``base`` (trained with ``args``) as ``case`` says, resumes it with the same
    command two intervals further, and reports where it resumed, what was set aside, whether any file
    was lost, and whether that is what ``expected_item`` says."""
    workdir = root / f"case_{case}"
    shutil.copytree(base, workdir)
    checkpoints = workdir / "checkpoints"
    steps = step_dirs(workdir)
    newest, damaged = steps[-1], steps[-1]
    interval = newest - steps[-2]
    extra = [f"--config.train.num_steps={newest + 2 * interval}", *args]
    if case == "truncated_state":
        _truncate_state(checkpoints / str(newest))
    elif case in ("missing_config", "missing_state"):
        shutil.rmtree(checkpoints / str(newest) / case.split("_")[1])
    elif case in ("foreign", "foreign_allowed"):
        damaged = newest + interval
        shutil.copytree(foreign, checkpoints / str(damaged))
        if case == "foreign_allowed":
            extra.append("--allow_config_change")
    elif case == "none_reads":
        for step in steps:
            _truncate_state(checkpoints / str(step))
    else:
        raise ValueError(f"unknown case {case!r}; one of {ITEM_CASES}")
    before = file_digests(checkpoints)
    job = train(workdir, extra, root / "logs", case, env)
    summary = job.summary() or {}
    aside = set_aside(workdir)
    result = {
        "case": case,
        "damaged_step": damaged,
        "rc": job.process.returncode,
        "first_step": summary.get("first_step"),
        "last_step": summary.get("last_step"),
        "fell_back_past": sorted({int(line.split("checkpoint of step ", 1)[1].split()[0])
                                  for line in job.stderr.splitlines() if "does not read back" in line}),
        "set_aside": [int(name.split("-")[0]) for name in aside],
        "message": _job_error(job)[0] if job.process.returncode else "",
        "sentence_is_last_line": _job_error(job)[1] if job.process.returncode else None,
        "tracebacks": tracebacks(job.stderr),
        "files_lost": sorted(key for key, digest in before.items() if not file_kept(workdir, aside, key, digest)),
    }
    rc, first, set_aside_steps = expected_item(case, steps)
    result["as_documented"] = bool(result["rc"] == rc and result["first_step"] == first
                                   and result["set_aside"] == set_aside_steps and not result["files_lost"]
                                   and (rc == 0 or result["message"].startswith("diffcorrupt train: error: ")))
    return result


def file_kept(workdir: Path, aside: list[str], key: str, digest: str) -> bool:
    """Whether the file ``<step>/<path>`` that was in checkpoints/ is still there unchanged, or in the
    copy of its step set aside in checkpoints_unreadable/ (the resumed run may have saved that step anew)."""
    step, path = key.split("/", 1)
    places = [workdir / "checkpoints" / key]
    places += [workdir / UNREADABLE / name / path for name in aside if name.split("-")[0] == step]
    return any(p.is_file() and file_sha256(p) == digest for p in places)


def items(*, root: Path, cases: tuple[str, ...] = ITEM_CASES, compile_cache: str | None = None) -> dict[str, Any]:
    """Row 3: every case on its own copy of one base run (checkpoints 10, 20, 30)."""
    start = time.monotonic()
    env = job_env(1, compile_cache)
    base = make_base(root, env)
    foreign = make_foreign(root, env) if any(c.startswith("foreign") for c in cases) else None
    results = [item_case(case, base=base, root=root, env=env, foreign=foreign) for case in cases]
    return {"row": "truncated, missing and foreign checkpoint items", "cases": results,
            "as_documented": f"{sum(r['as_documented'] for r in results)}/{len(results)}",
            "tracebacks": {r["case"]: r["tracebacks"] for r in results if r["tracebacks"]},
            "ok": all(r["as_documented"] and not r["tracebacks"] and r["sentence_is_last_line"] is not False
                      for r in results),
            "wall_s": round(time.monotonic() - start, 1)}


# --------------------------------------------------------------------------- row 7: grain workers


FIELDS = ("index", "epoch", "label", "clean_label", "corrupted", "flipped", "image")


def served_batches(num_workers: int, num_batches: int, overrides: list[str] = ()) -> list[dict]:
    """The first ``num_batches`` batches the small run's iterator serves with ``num_workers``."""
    from diffcorrupt.config.loading import load_config
    from diffcorrupt.data.pipeline import make_iterator

    flags = [a[len("--config."):] for a in SMALL[1:]] + list(overrides) + [f"data.num_workers={num_workers}"]
    config = load_config(str(REPO / SMALL[0].split("=", 1)[1]), flags)
    iterator = make_iterator(config)
    try:
        return [next(iterator) for _ in range(num_batches)]
    finally:
        if hasattr(iterator, "close"):
            iterator.close()


def corruption_manifest(workers: int, out: Path) -> tuple[dict, Any]:
    """``diffcorrupt corruption`` for the small run's config: (summary, corrupted indices)."""
    import numpy as np

    overrides = [a for a in SMALL[1:] if a.startswith("--config.data.")]
    result = subprocess.run([sys.executable, "-m", "diffcorrupt", "corruption", SMALL[0], *overrides,
                             f"--config.data.num_workers={workers}", f"--out={out}", "--save_indices"],
                            cwd=REPO, env=job_env(1), capture_output=True, text=True, timeout=TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"diffcorrupt corruption failed: {result.stderr.strip().splitlines()[-1:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    summary.pop("config_hash", None)  # hashes the whole config, num_workers included
    return summary, np.load(out / "corrupted_indices.npy")


def workers(*, root: Path, num_batches: int = 40, train_steps: int = 20, compile_cache: str | None = None,
            with_training: bool = True) -> dict[str, Any]:
    """Row 7: the corrupted set and the served batches, then training itself, with 0 and 2 workers."""
    import numpy as np

    start = time.monotonic()
    (sum0, set0), (sum2, set2) = corruption_manifest(0, root / "manifest0"), corruption_manifest(2, root / "manifest2")
    corrupted = set(int(i) for i in set0)
    result: dict[str, Any] = {"row": "corruption with 0 and 2 grain workers",
                              "num_corrupted": sum0["num_corrupted"], "num_examples": sum0["num_examples"],
                              "manifest_equal": bool(sum0 == sum2 and np.array_equal(set0, set2))}
    # fixed: the small run's own data; random (redrawn each epoch): a 96-example synthetic set, so
    # that the batches compared span several epochs.
    modes = {"fixed": [], "random": ["data.name=synthetic", "data.num_examples=96", "data.corruption.mode=random"]}
    for mode, overrides in modes.items():
        zero, two = served_batches(0, num_batches, overrides), served_batches(2, num_batches, overrides)
        equal = all(np.array_equal(a[k], b[k]) for a, b in zip(zero, two) for k in FIELDS)
        flags = np.concatenate([b["corrupted"] for b in zero])
        indices = np.concatenate([b["index"] for b in zero])
        labels_differ = np.concatenate([b["label"] != b["clean_label"] for b in zero])
        result[f"{mode}_batches_equal"] = bool(equal)
        result[f"{mode}_examples_compared"] = int(indices.size)
        result[f"{mode}_corrupted_served"] = int(flags.sum())
        result[f"{mode}_flags_are_flipped_labels"] = bool(np.array_equal(flags, labels_differ))
        result[f"{mode}_epochs"] = int(np.concatenate([b["epoch"] for b in zero]).max()) + 1
        if mode == "fixed":
            result["fixed_flags_match_manifest"] = bool(np.array_equal(flags, np.isin(indices, list(corrupted))))
    if with_training:
        env = job_env(1, compile_cache)
        readers = {n: StateReader([f"data.num_workers={n}"]) for n in (0, 2)}
        finals = {}
        extra = [f"--config.train.num_steps={train_steps}", f"--config.checkpoint.every_steps={train_steps // 2}"]
        for n in (0, 2):
            job = train(root / f"train_w{n}", [*extra, f"--config.data.num_workers={n}"], root / "logs", f"train_w{n}", env)
            finals[n] = readers[n].latest(root / f"train_w{n}") if job.process.returncode == 0 else None
            result[f"train_w{n}_tracebacks"] = tracebacks(job.stderr)
        result["trained_state_equal"] = bool(finals[0] and finals[2] and finals[0][0] == finals[2][0]
                                             and bitwise_equal(finals[0][1], finals[2][1])
                                             and bitwise_equal(finals[0][2], finals[2][2]))
        # num_workers may change on resume (check_compatible lets it): save with 2, resume with 0.
        cross = root / "train_cross"
        train(cross, [f"--config.train.num_steps={train_steps // 2}", f"--config.checkpoint.every_steps={train_steps // 2}",
                      "--config.data.num_workers=2"], root / "logs", "cross_w2", env)
        job = train(cross, [*extra, "--config.data.num_workers=0"], root / "logs", "cross_w0", env)
        result["resume_2_to_0_workers_rc"] = job.process.returncode
        result["resume_2_to_0_workers_message"] = _job_error(job)[0] if job.process.returncode else ""
        if job.process.returncode == 0:
            result["resume_2_to_0_workers_equal"] = bitwise_equal(readers[0].latest(cross)[1], finals[0][1])
    result["ok"] = bool(result["manifest_equal"] and result["fixed_batches_equal"] and result["random_batches_equal"]
                        and result["fixed_flags_match_manifest"] and result.get("trained_state_equal", True)
                        and result.get("resume_2_to_0_workers_equal", not with_training))
    result["wall_s"] = round(time.monotonic() - start, 1)
    return result


# --------------------------------------------------------------------------- command line


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python tools/reliability.py", description=__doc__.splitlines()[0])
    parser.add_argument("row", nargs="?", default="kills", choices=["kills", "disk_full", "read_only", "items", "workers"])
    parser.add_argument("--kills", type=int, default=20, help="kills: how many SIGKILLs")
    parser.add_argument("--seed", type=int, default=0, help="kills: the kill moments' seed (also the run's seed)")
    parser.add_argument("--steps", type=int, default=0, help="kills: steps of the run (default 20 per kill)")
    parser.add_argument("--every", type=int, default=5, help="kills: checkpoint.every_steps")
    parser.add_argument("--size_mb", type=int, default=150, help="disk_full: the tmpfs size")
    parser.add_argument("--root", default="", help="scratch folder (default: a new one under $TMPDIR)")
    parser.add_argument("--keep_files", action="store_true", help="keep the scratch folder")
    parser.add_argument("--compile_cache", default="", help="a JAX persistent compilation cache folder to share")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    flags = parser.parse_args(argv)
    root = Path(flags.root or tempfile.mkdtemp(prefix="reliability-")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if flags.verbose else (lambda s: None)
    cache = flags.compile_cache or None
    provenance = stamp(argv)  # the tree as the campaign starts
    try:
        if flags.row in ("disk_full", "read_only"):
            reason = can_mount(root)
            if reason:
                print(f"reliability {flags.row}: {reason}", file=sys.stderr)
                return 2
        if flags.row == "kills":
            result = kill_campaign(kills=flags.kills, seed=flags.seed, root=root, steps=flags.steps or None,
                                   every=flags.every, compile_cache=cache, log=log)
        elif flags.row == "disk_full":
            result = disk_full(root=root, size_mb=flags.size_mb, compile_cache=cache)
        elif flags.row == "read_only":
            result = read_only(root=root, compile_cache=cache)
        elif flags.row == "items":
            result = items(root=root, compile_cache=cache)
        else:
            result = workers(root=root, compile_cache=cache)
    finally:
        stop_started_jobs()
        if not flags.keep_files:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({**result, **provenance}), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
