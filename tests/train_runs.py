"""What the job tests share: the tiny run they train in subprocesses, and reading back its state,
both from ``tools/reliability.py`` (whose campaign trains and reads the same run)."""

import importlib.util
import os
import pathlib
import subprocess
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("reliability", REPO / "tools" / "reliability.py")
reliability = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reliability)
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
