"""Several real JAX processes on localhost (``diffcorrupt.parallel.local_processes``: jax.distributed
over a local coordinator, CPU collectives through gloo), against one process: training, kill -9
of one process and restart, SIGTERM, resuming on other process counts, sampling, evaluate and
report.

The runs are the tiny 16x16 DiT of ``train_runs`` for 20 steps, so that the file stays within a
few minutes of CI (the runs share one fixture). The longer matrix (4
processes, the report across processes) is marked ``long``: ``pytest -m long tests/test_multiprocess.py``.
"""

import csv
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diffcorrupt.evaluation import classifier_training
from diffcorrupt.evaluation.inception_weights import default_weights_path
from diffcorrupt.parallel.local_processes import free_port
from diffcorrupt.report.batch import run_batch
from train_runs import REPO, SMALL, assert_close, assert_identical, env_with_devices, restore_state, wait_for

STEPS = ["--config.train.num_steps=20", "--config.checkpoint.every_steps=5", "--config.checkpoint.keep=10",
         "--config.train.log_every=1"]


class Launch:
    """``python -m diffcorrupt.parallel.local_processes`` running a job; process 0's output is the
    launcher's, process i's is ``<log_dir>/process_<i>.log``."""

    def __init__(self, tmp: Path, processes: int, devices: int, job: list[str]):
        self.log_dir = tmp / f"logs-{time.monotonic_ns()}"
        self.log_dir.mkdir(parents=True)
        self.stderr_path = self.log_dir / "launcher.err"
        self.stdout_path = self.log_dir / "launcher.out"
        command = [sys.executable, "-m", "diffcorrupt.parallel.local_processes", f"--processes={processes}",
                   f"--devices={devices}", f"--log_dir={self.log_dir}", "--", *job]
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(command, cwd=REPO, env=env_with_devices(1), stdout=out, stderr=err)

    def pids(self, count: int) -> list[int]:
        """The processes' pids, as the launcher announces them."""
        deadline = time.time() + 120
        while True:
            found = re.findall(r"process (\d+) of \d+ is pid (\d+)", self.stderr_path.read_text())
            if len(found) == count:
                return [int(pid) for _, pid in sorted(found)]
            assert time.time() < deadline and self.process.poll() is None, self.stderr_path.read_text()[-3000:]
            time.sleep(0.05)

    def wait(self, timeout: float = 600) -> int:
        return self.process.wait(timeout=timeout)

    def output(self, index: int) -> str:
        return (self.stdout_path if index == 0 else self.log_dir / f"process_{index}.log").read_text()

    def last_json(self, index: int) -> dict:
        return json.loads([line for line in self.output(index).splitlines() if line.startswith("{")][-1])

    def check(self, timeout: float = 600) -> "Launch":
        status = self.wait(timeout)
        assert status == 0, self.stderr_path.read_text()[-4000:]
        return self


def _train(tmp: Path, workdir: Path, processes: int, devices: int, *extra: str) -> Launch:
    return Launch(tmp, processes, devices, ["train", *SMALL, *STEPS, f"--workdir={workdir}", *extra])


def _train_one_process(workdir: Path, devices: int) -> None:
    result = subprocess.run([sys.executable, "-m", "diffcorrupt", "train", *SMALL, *STEPS, f"--workdir={workdir}"],
                            cwd=REPO, env=env_with_devices(devices), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _metrics(workdir: Path) -> list[dict]:
    return [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if "step" in r]


@pytest.fixture(scope="session")
def two_processes(tmp_path_factory) -> Path:
    """An uninterrupted run on 2 processes x 2 devices, checkpoints at 5, 10, 15 and 20: trained
    once a session, by whichever xdist worker needs it first (the others wait at a file lock)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    tmp = shared / "two_processes"
    with open(shared / "two_processes.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (tmp / "run" / "checkpoints" / "20" / "commit_success.txt").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            _train(tmp, tmp / "run", 2, 2).check()
    return tmp / "run"


def test_two_processes_of_two_devices_train_as_one_process_of_four(two_processes, tmp_path):
    _train_one_process(tmp_path / "one", devices=4)
    ours, theirs = _metrics(two_processes), _metrics(tmp_path / "one")
    assert [r["step"] for r in ours] == list(range(1, 21)) == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs):  # the same examples, corrupted alike, with the same noise: the same losses
        for key in ("loss", "loss_corrupted", "loss_clean", "grad_norm"):
            if key in a or key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
    assert any("loss_corrupted" in r for r in ours), "no corrupted example was served"
    state_a, batch_a = restore_state(two_processes, 20)
    state_b, batch_b = restore_state(tmp_path / "one", 20)
    assert_close(state_a, state_b, rtol=1e-5, atol=1e-6)  # the same mesh, gathered over gloo instead of in memory
    assert_identical(batch_a, batch_b)  # and the same next batch


def test_kill_9_of_one_process_then_a_restart_ends_equal_to_the_uninterrupted_run(two_processes, tmp_path):
    first = _train(tmp_path, tmp_path / "run", 2, 2)
    victim = first.pids(2)[1]
    wait_for(tmp_path / "run" / "checkpoints" / "10" / "commit_success.txt", first.process)
    subprocess.run(["kill", "-9", str(victim)], check=True)
    assert first.wait() != 0  # the launcher takes the survivor down and reports the failure
    assert "process 1 exited with status -9" in first.stderr_path.read_text()
    resumed = _train(tmp_path, tmp_path / "run", 2, 2).check()
    summary = resumed.last_json(0)
    assert 10 <= summary["first_step"] < 20 and summary["last_step"] == 20
    assert resumed.last_json(1)["first_step"] == summary["first_step"]
    state_a, batch_a = restore_state(two_processes, 20)
    state_b, batch_b = restore_state(tmp_path / "run", 20)
    assert_identical(state_a, state_b)
    assert_identical(batch_a, batch_b)
    assert [r["step"] for r in _metrics(tmp_path / "run")] == list(range(1, 21))  # each step logged once


@pytest.mark.parametrize("processes", [1, pytest.param(4, marks=pytest.mark.long)])
def test_a_two_process_checkpoint_resumes_on_another_process_count(two_processes, tmp_path, processes):
    workdir = tmp_path / "run"
    shutil.copytree(two_processes, workdir)
    for step in (15, 20):
        shutil.rmtree(workdir / "checkpoints" / str(step))
    launch = _train(tmp_path, workdir, processes, 1).check()
    summary = launch.last_json(0)
    assert (summary["first_step"], summary["last_step"]) == (10, 20)
    state_a, batch_a = restore_state(two_processes, 20)
    state_b, batch_b = restore_state(workdir, 20)
    assert_close(state_a, state_b, rtol=1e-4, atol=1e-6)  # other device counts reduce in another order
    assert_identical(batch_a, batch_b)


def test_sigterm_to_both_processes_saves_the_same_step_and_exits_zero(tmp_path):
    launch = _train(tmp_path, tmp_path / "run", 2, 1, "--config.train.num_steps=100000")
    pids = launch.pids(2)
    wait_for(tmp_path / "run" / "checkpoints" / "5" / "commit_success.txt", launch.process)
    for pid in pids:
        subprocess.run(["kill", "-TERM", str(pid)], check=True)
    launch.check(timeout=300)
    summaries = [launch.last_json(i) for i in range(2)]
    assert all(s["preempted"] for s in summaries)
    assert summaries[0]["last_step"] == summaries[1]["last_step"] >= 5
    step = summaries[0]["last_step"]
    assert (tmp_path / "run" / "checkpoints" / str(step) / "commit_success.txt").exists()


def _shards(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("samples_*.npz"))}


def test_sampling_on_two_processes_writes_the_bytes_of_one_and_resumes_after_a_kill(two_processes, tmp_path):
    sampling = ["--num_samples=160", "--batch_size=8", "--sampler=ddim", "--steps=10", "--cfg_scale=2"]
    folder = "ddim10-cfg2-seed0"
    result = subprocess.run([sys.executable, "-m", "diffcorrupt", "sample", f"--workdir={two_processes}",
                             f"--out={tmp_path / 'one'}", *sampling], cwd=REPO, env=env_with_devices(2),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one = _shards(tmp_path / "one" / folder)
    assert len(one) == 20

    job = ["sample", f"--workdir={two_processes}", f"--out={tmp_path / 'two'}", *sampling]
    killed = Launch(tmp_path, 2, 1, job)
    victim = killed.pids(2)[1]
    wait_for(tmp_path / "two" / folder / "samples_000000000.npz", killed.process)
    subprocess.run(["kill", "-9", str(victim)], check=True)
    assert killed.wait() != 0
    before = _shards(tmp_path / "two" / folder)
    assert 0 < len(before) < 20
    assert all(one[name] == data for name, data in before.items())  # what both processes wrote is one's
    resumed = Launch(tmp_path, 2, 1, job).check()
    assert resumed.last_json(0)["sampled_now"] == 160 - 8 * len(before)  # only the missing indices
    assert _shards(tmp_path / "two" / folder) == one  # the same files, byte for byte


@pytest.mark.long
def test_report_on_two_processes_samples_on_both_and_scores_on_process_zero(two_processes, tmp_path):
    if not default_weights_path().exists():
        pytest.skip(f"no converted Inception weights at {default_weights_path()}; run `python tools/convert_inception.py`")
    report = Launch(tmp_path, 2, 1, ["report", f"--workdirs={two_processes}", f"--out={tmp_path / 'report'}",
                                     "--num_samples=16", "--batch_size=8", "--sampler=ddim", "--steps=3", "--cfg_scale=1,2",
                                     "--features=inception", "--reference_count=16"]).check()
    assert report.last_json(0)["rows"] == 2 and (tmp_path / "report" / "summary.md").exists()
    assert not [line for line in report.output(1).splitlines() if line.startswith("{")]  # process 1 only sampled
    for scale in ("ddim3-cfg1-seed0", "ddim3-cfg2-seed0"):
        metrics = json.loads((two_processes / "eval" / "step_20" / scale / "metrics.json").read_text())
        assert metrics["num_samples"] == 16 and np.isfinite(metrics["networks"]["inception"]["metrics"]["fid"])


def test_the_report_of_a_two_process_run(two_processes, tmp_path, monkeypatch):
    """``report`` in this process on what two processes trained (the launch above runs it on two)."""
    monkeypatch.setenv("DIFFCORRUPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(classifier_training, "DEFAULT_STEPS", {"fashion_mnist": 30})  # real metrics, just poor
    sampling = {"cfg_scale": "2", "num_samples": 16, "sampler": "ddim", "steps": (3,), "eta": None, "seed": 0,
                "batch_size": 8, "captions": None}
    summary = run_batch([two_processes], checkpoints="latest", sample_flags=sampling, features=None,
                        inception_weights=None, reference=None, reference_count=64, out=tmp_path / "report")
    assert summary["rows"] == 2  # classifier features and pixel copies
    row = next(r for r in csv.DictReader(open(tmp_path / "report" / "results.csv")) if r["network"] == "classifier")
    assert (row["run"], row["step"], row["eta"]) == ("run", "20", "0.1") and np.isfinite(float(row["fd"]))


PEERS = """
import sys, time, pathlib
from diffcorrupt.parallel.distributed import initialize_from_environment, on_process_zero
initialize_from_environment()
import jax
out = pathlib.Path(sys.argv[1])
def work():
    time.sleep(2)
    if sys.argv[2] == "fail":
        raise RuntimeError("process 0 failed on purpose")
    (out / "done").write_text("process 0")
    return 7
result = on_process_zero("test", work)
(out / f"result_{jax.process_index()}").write_text(f"{result} {(out / 'done').exists()}")
"""


@pytest.mark.parametrize("outcome", ["ok", "fail"])
def test_host_work_runs_on_process_zero_while_the_others_wait(tmp_path, outcome):
    script = tmp_path / "peers.py"
    script.write_text(PEERS)
    env = env_with_devices(1)
    processes = []
    port = free_port()
    for index in range(2):
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(index))
        processes.append(subprocess.Popen([sys.executable, str(script), str(tmp_path), outcome], cwd=REPO, env=dict(env),
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    if outcome == "ok":
        assert [p.returncode for p in processes] == [0, 0], outputs
        # process 1 went on only after process 0's work was done
        assert [(tmp_path / f"result_{i}").read_text() for i in range(2)] == ["7 True", "None True"]
    else:
        assert all(p.returncode != 0 for p in processes), outputs
        assert "failed on process 0" in outputs[1]


def test_evaluate_started_as_several_processes_scores_on_process_zero_only(monkeypatch):
    from diffcorrupt import evaluate

    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert evaluate.main(["--samples=/nonexistent"]) == 0  # a peer returns before reading anything
