"""The train job end to end, in subprocesses: SIGTERM, resuming on other device counts, and the bad
inputs (corrupted checkpoint, incompatible config, NaN, a workdir that cannot be written). SIGKILL:
tests/test_reliability.py (during saves) and tests/test_multiprocess.py (between them)."""

import json
import signal
import subprocess
import sys
import time

from train_runs import REPO, SMALL, env_with_devices, wait_for


def _train(workdir, *extra, devices=1, check=True):
    result = subprocess.run([sys.executable, "-m", "diffcorrupt", "train", *SMALL, f"--workdir={workdir}", *extra],
                            cwd=REPO, env=env_with_devices(devices), capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _summary(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def _start(workdir, *extra, devices=1):
    return subprocess.Popen([sys.executable, "-m", "diffcorrupt", "train", *SMALL, f"--workdir={workdir}", *extra],
                            cwd=REPO, env=env_with_devices(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_sigterm_saves_the_current_step_and_exits_zero(tmp_path):
    process = _start(tmp_path, "--config.train.num_steps=100000", "--config.checkpoint.every_steps=50")
    wait_for(tmp_path / "checkpoints" / "50" / "commit_success.txt", process)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["preempted"] and summary["last_step"] > 50
    assert (tmp_path / "checkpoints" / str(summary["last_step"]) / "commit_success.txt").exists()


def test_a_run_saved_on_eight_devices_resumes_on_four_and_on_one(tmp_path):
    eight = _summary(_train(tmp_path, "--config.train.num_steps=20", "--config.checkpoint.every_steps=10", devices=8))
    four = _summary(_train(tmp_path, "--config.train.num_steps=30", "--config.checkpoint.every_steps=10", devices=4))
    one = _summary(_train(tmp_path, "--config.train.num_steps=40", "--config.checkpoint.every_steps=10", devices=1))
    assert (eight["last_step"], four["first_step"], four["last_step"], one["first_step"], one["last_step"]) == (20, 20, 30, 30, 40)


def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous_and_is_kept(tmp_path):
    _train(tmp_path, "--config.train.num_steps=20", "--config.checkpoint.every_steps=10")
    for path in (tmp_path / "checkpoints" / "20" / "state").rglob("*"):
        if path.is_file() and path.name != "commit_success.txt":
            path.write_bytes(b"\0" * 7)  # truncated, as a crash mid-copy would leave it
    result = _train(tmp_path, "--config.train.num_steps=30", "--config.checkpoint.every_steps=10")
    summary = _summary(result)
    assert summary["first_step"] == 10 and summary["last_step"] == 30
    assert "step 20" in result.stderr
    aside = list((tmp_path / "checkpoints_unreadable").iterdir())
    assert [p.name.split("-")[0] for p in aside] == ["20"]  # kept for inspection, not deleted
    assert (tmp_path / "checkpoints" / "20" / "commit_success.txt").exists()  # saved again by the resumed run


def test_an_incompatible_config_is_refused_and_the_checkpoints_stay(tmp_path):
    _train(tmp_path, "--config.train.num_steps=10", "--config.checkpoint.every_steps=10",
           "--config.train.sample_every=10", "--config.train.log_every=5")
    # what the first run leaves beside its checkpoints: metrics, TensorBoard events, an EMA sample grid
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "step" in r] == [5, 10]
    assert {"loss", "loss_corrupted", "loss_clean", "grad_norm", "learning_rate", "examples_per_s_per_device",
            "data_wait_fraction"} <= set(records[-1])
    assert list(tmp_path.glob("events.out.tfevents.*")) and (tmp_path / "samples" / "step_10.png").exists()
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    result = _train(tmp_path, "--config.train.num_steps=20", "--config.data.corruption.seed=7", check=False)
    assert result.returncode == 2
    assert "data.corruption.seed" in result.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


def test_a_nan_loss_stops_with_the_step_and_writes_no_poisoned_checkpoint(tmp_path):
    result = _train(tmp_path, "--config.train.num_steps=50", "--config.checkpoint.every_steps=1",
                    "--config.train.log_every=1", "--config.train.lr=1e30", check=False)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "non-finite" in message and "intact" in message
    bad_step = int(message.split("step ")[1].split()[0])
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and max(saved) <= bad_step


def test_a_workdir_that_cannot_be_written_gets_one_sentence(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep")
    result = _train(blocker / "run", check=False)
    assert result.returncode == 2
    assert "error:" in result.stderr.strip().splitlines()[-1] and "Traceback" not in result.stderr
    assert blocker.read_text() == "keep"
