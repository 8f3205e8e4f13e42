"""What the job tests share: the tiny run they train in subprocesses, and reading back its state,
both from ``tools/reliability.py`` (whose campaign trains and reads the same run)."""

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import time
import types

import jax
import numpy as np

from diffcorrupt import sample

REPO = pathlib.Path(__file__).resolve().parent.parent


def load_tool(name: str):
    """``tools/<name>.py`` as a module (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample_run(workdir, out, controls=None):
    """40 samples of ``workdir`` at guidance 2 (5 DDIM steps) into ``out``, as the sample job's flags ask."""
    flags = types.SimpleNamespace(workdir=str(workdir), step=None, num_samples=40, sampler="ddim", steps=5,
                                  cfg_scale="2", eta=None, seed=0, batch_size=20, captions=None, out=str(out),
                                  mesh="-1,1,1", autoencoder=None, controls=controls)
    return sample.sample_run(flags)


reliability = load_tool("reliability")
SMALL = reliability.SMALL  # a model of four 4x4 patches on 16x16 Fashion-MNIST: every step takes milliseconds


def env_with_devices(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def wait_for(path: pathlib.Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended (status {process.returncode}) before {path} appeared"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def restore_state(workdir, step: int, overrides=()):
    """(state, next batch) saved at ``step`` in ``workdir``, restored in this process (1 device) as
    the train job restores them."""
    restored_step, state, batch = reliability.StateReader(list(overrides)).latest(workdir)
    assert restored_step == step
    return state, batch


def assert_identical(a, b) -> None:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def assert_close(a, b, rtol: float, atol: float) -> None:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol)


def resumed_after_kill_9(command, root: pathlib.Path, overrides, kill_at: int = 10, last: int = 20):
    """Trains ``command(workdir)`` (on 2 devices) straight through, and again killed with SIGKILL
    once checkpoint ``kill_at`` is committed, then resumed; asserts that both end bitwise identical
    (state and next batch) and returns that (state, next batch)."""
    subprocess.run(command(root / "straight"), cwd=REPO, env=env_with_devices(2), check=True, capture_output=True)
    process = subprocess.Popen(command(root / "killed"), cwd=REPO, env=env_with_devices(2),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(root / "killed" / "checkpoints" / str(kill_at) / "commit_success.txt", process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    resumed = subprocess.run(command(root / "killed"), cwd=REPO, env=env_with_devices(2), capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert kill_at <= summary["first_step"] < last and summary["last_step"] == last
    state_a, batch_a = restore_state(root / "straight", last, overrides)
    state_b, batch_b = restore_state(root / "killed", last, overrides)
    assert_identical(state_a, state_b)
    assert_identical(batch_a, batch_b)
    return state_a, batch_a
