"""bfloat16 compute stays close to float32 (same parameters), and the peers bench degrades to one
'unavailable' JSON line without PyTorch.

bf16 is how the GPU check trains (``--dtype=bfloat16``); these checks catch a layer that loses its
precision there (a norm or softmax computed in bf16, a sum that overflows) on CPU, before GPU time
is spent. Parameters are drawn at a trained network's scale rather than initialised: DiT's zero
start would make both outputs exactly zero and the comparison empty. LDM-small is left out: its two
compiles cost 10 s of this file's 30 (its bf16 eps error was 1.8% on 2026-11-28).
"""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt import bench
from diffcorrupt.config.schema import base_config
from diffcorrupt.diffusion.schedules import make_schedule
from diffcorrupt.weights import wheels
from diffcorrupt.models.registry import example_inputs, make_model, model_from_config
from diffcorrupt.training.objective import make_loss_fn
from diffcorrupt.training.optimizer import make_optimizer
from diffcorrupt.training.state import TrainState
from diffcorrupt.training.step import make_train_step

# Bounds on |bf16 - fp32| / |fp32|. One bf16 rounding is up to 2^-8 = 3.9e-3; measured 2026-11-28:
# eps 0.9%, loss 0.04%, gradient norm 0.03%.
EPS_RELATIVE_ERROR = 2e-2
LOSS_RELATIVE_ERROR = 5e-3
GRAD_NORM_RELATIVE_ERROR = 1e-2
DTYPES = ("float32", "bfloat16")


def _random_params(model: nn.Module, input_shape: tuple[int, int, int]):
    """Float32 parameters of ``model``'s shapes: kernels and embeddings N(0, 1/fan_in), norm scales
    1 + N(0, 0.1^2), biases N(0, 0.1^2)."""
    shapes = nn.meta.unbox(jax.eval_shape(model.init, {"params": jax.random.key(0)},
                                          *example_inputs(model, input_shape))["params"])
    paths, tree = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.default_rng(0)
    leaves = []
    for path, leaf in paths:
        name = jax.tree_util.keystr(path[-1:])
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if "scale" in name:
            leaves.append(1 + 0.1 * noise)
        elif "bias" in name:
            leaves.append(0.1 * noise)
        else:
            leaves.append(noise / np.sqrt(np.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 1))
    return jax.tree.unflatten(tree, [jnp.asarray(leaf) for leaf in leaves])


def _relative_error(approx: jax.Array, exact: jax.Array) -> float:
    return float(jnp.linalg.norm(approx - exact) / jnp.linalg.norm(exact))


def test_bf16_forward_matches_fp32():
    input_shape = (16, 16, 4)
    models = {dtype: make_model("DiT-T/4", input_shape=input_shape, num_classes=10, learned_sigma=True, dtype=dtype)
              for dtype in DTYPES}
    params = _random_params(models["float32"], input_shape)
    x = jax.random.normal(jax.random.key(2), (4, *input_shape))
    t, labels, null_mask = jnp.array([0, 250, 500, 999]), jnp.arange(4), jnp.array([False, False, False, True])
    eps = {dtype: jax.jit(model.apply)({"params": params}, x, t, labels, null_mask)[..., :input_shape[-1]]
           for dtype, model in models.items()}
    assert eps["bfloat16"].dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(eps["bfloat16"])))
    assert float(jnp.std(eps["float32"])) > 1e-2  # a live output
    assert _relative_error(eps["bfloat16"], eps["float32"]) < EPS_RELATIVE_ERROR


def _first_step(dtype: str) -> tuple[TrainState, dict[str, float]]:
    """The train job's step function (hybrid loss, learned sigma, AdamW, EMA, guard) once on DiT-T/4."""
    config = base_config()
    config.model.name, config.model.dtype, config.model.learned_sigma = "DiT-T/4", dtype, True
    config.diffusion.loss = "hybrid"
    model = model_from_config(config, (16, 16, 4), 10)
    optimizer, lr_schedule = make_optimizer(config.train)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
    step = make_train_step(make_loss_fn(model, schedule, config), optimizer, lr_schedule, config.train.ema_decay)
    params = _random_params(model, (16, 16, 4))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                       opt_state=optimizer.init(params), rng=jax.random.key_data(jax.random.key(0)),
                       first_nonfinite_step=jnp.full((), -1, jnp.int32))
    rng = np.random.default_rng(0)
    batch = {"image": rng.standard_normal((8, 16, 16, 4)).astype(np.float32),
             "label": rng.integers(0, 10, 8).astype(np.int32), "corrupted": np.zeros(8, bool)}
    state, metrics = jax.jit(step)(state, batch)
    return state, {key: float(metrics[key]) for key in ("loss", "grad_norm")}


def test_bf16_train_step_loss_matches_fp32():
    (_, fp32), (state, bf16) = _first_step("float32"), _first_step("bfloat16")
    assert int(state.first_nonfinite_step) == -1 and int(state.step) == 1
    assert np.isfinite(bf16["loss"]) and np.isfinite(bf16["grad_norm"])
    assert abs(bf16["loss"] - fp32["loss"]) / fp32["loss"] < LOSS_RELATIVE_ERROR
    assert abs(bf16["grad_norm"] - fp32["grad_norm"]) / fp32["grad_norm"] < GRAD_NORM_RELATIVE_ERROR


def _peers_line(capsys, *args: str) -> dict:
    assert bench.main(["peers", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


@pytest.mark.parametrize("what", ["train", "sample", "inception"])
def test_peers_without_torch_print_one_unavailable_line(what, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    result = _peers_line(capsys, f"--what={what}", "--model=DiT-T/8", "--input_shape=16,16,4", "--num_classes=10")
    assert result["bench"] == "peers" and result["what"] == what
    assert result["peer_available"] is False and "torch" in result["peer_unavailable"]
    assert "ours" not in result and "ratio_ours_over_peer" not in result


def test_peers_without_diffusers_name_it(monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.setitem(sys.modules, "diffusers", None)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    result = _peers_line(capsys, "--what=train", "--model=DiT-T/8", "--input_shape=16,16,4", "--num_classes=10")
    assert result["peer_available"] is False and list(result["peer_unavailable"]) == ["diffusers"]


def test_peers_inception_without_the_wheel_says_why(monkeypatch, capsys):
    pytest.importorskip("torch")
    offline = subprocess.CompletedProcess([], 1, stdout="", stderr="ERROR: No matching distribution (offline)")
    monkeypatch.setattr(wheels.subprocess, "run", lambda *args, **kwargs: offline)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    result = _peers_line(capsys, "--what=inception", "--input_shape=16,16,3", "--batch_size=4")
    assert result["peer_available"] is False and "offline" in result["peer_unavailable"]["peer"]
    assert "ours" not in result


@pytest.mark.parametrize("policy, expected", [("default", None), ("passive", "PASSIVE"), ("active", "ACTIVE")])
def test_peer_wait_policy_is_libgomps_default_unless_asked(policy, expected, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    _peers_line(capsys, "--what=train", "--model=DiT-T/8", "--input_shape=16,16,4", "--num_classes=10",
                f"--peer_wait_policy={policy}")
    assert os.environ.get("OMP_WAIT_POLICY") == expected
