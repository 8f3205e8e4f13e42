"""What the job tests share: the tiny run they train in subprocesses, and reading back its state."""

import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np

from diffcorrupt.config.loading import load_config
from diffcorrupt.data.pipeline import corrupted_source, make_iterator
from diffcorrupt.models.registry import model_from_config
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.parallel.sharding import DEFAULT_RULES
from diffcorrupt.training.batches import input_spec
from diffcorrupt.training.checkpoints import Checkpointer
from diffcorrupt.training.optimizer import make_optimizer
from diffcorrupt.training.state import abstract_state, create_state

REPO = pathlib.Path(__file__).resolve().parent.parent
# A model of four 4x4 patches on 16x16 Fashion-MNIST: every step takes milliseconds.
SMALL = ["--config=configs/fmnist.py:tiny", "--config.model.name=DiT-T/8", "--config.data.image_size=16",
         "--config.train.batch_size=16", "--config.data.corruption.ratio=0.1", "--config.model.cep.kind=uniform",
         "--config.checkpoint.async_save=true"]


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
    config = load_config(str(REPO / "configs/fmnist.py:tiny"), [a[len("--config."):] for a in SMALL[1:]] + list(overrides))
    config.mesh.data = 1
    mesh = make_mesh(config.mesh, jax.devices()[:1])
    view = corrupted_source(config)
    shape, num_classes = input_spec(config, view.source)
    model = model_from_config(config, shape, num_classes)
    state, _ = create_state(model, make_optimizer(config.train)[0], shape, config.seed, mesh, DEFAULT_RULES)
    checkpointer = Checkpointer(workdir, every_steps=10**9, keep=100, async_save=False)
    assert checkpointer.latest_step() == step
    restored, restored_step = checkpointer.restore(abstract_state(state))
    checkpointer.close()
    assert restored_step == step
    return jax.device_get(restored), next(make_iterator(config, source=view, first_batch=int(restored.step)))


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
