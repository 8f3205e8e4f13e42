"""The training objective: one jitted loss over a real model, with its corrupted/clean split."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.config.schema import base_config
from diffcorrupt.config.validate import validate
from diffcorrupt.diffusion.schedules import make_schedule
from diffcorrupt.errors import ConfigError
from diffcorrupt.models.registry import example_inputs, model_from_config
from diffcorrupt.models.tokenizer import ByteTokenizer
from diffcorrupt.training.objective import make_loss_fn

SHAPE = (8, 8, 3)


def _setup(num_classes=5, **model_overrides):
    config = base_config()
    config.model.name = "DiT-T/4"
    config.model.update(model_overrides)
    config.model.cep.kind = "uniform"
    if config.model.learned_sigma:
        config.diffusion.loss = "hybrid"
    config.model.text_max_length = 16
    model = model_from_config(config, SHAPE, num_classes)
    params = nn.meta.unbox(model.init({"params": jax.random.key(0)}, *example_inputs(model, SHAPE, 2)))["params"]
    return config, model, params, make_loss_fn(model, make_schedule("linear", 1000), config)


def _batch(num_classes=5):
    batch = {"image": jax.random.normal(jax.random.key(1), (6, *SHAPE)),
             "corrupted": jnp.array([True, False, False, True, False, False])}
    if num_classes:
        batch["label"] = jnp.arange(6) % num_classes
    else:
        batch["tokens"] = jnp.asarray(ByteTokenizer(16).encode_batch(["a red circle", "two blue squares"] * 3))
    return batch


@pytest.mark.parametrize("num_classes", [5, 0])
def test_loss_is_jittable_with_finite_gradients_and_splits_over_corruption(num_classes):
    _, _, params, loss_fn = _setup(num_classes)
    batch = _batch(num_classes)
    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, batch, jax.random.key(2))
    assert np.isfinite(float(loss))
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert float(metrics["num_corrupted"]) == 2
    total = float(metrics["loss_sum_corrupted"] + metrics["loss_sum_clean"])
    assert total == pytest.approx(6 * float(loss), rel=1e-5)


def test_the_loss_is_a_function_of_the_step_key():
    _, _, params, loss_fn = _setup()
    batch = _batch()
    a, _ = loss_fn(params, batch, jax.random.key(3))
    b, _ = loss_fn(params, batch, jax.random.key(3))
    c, _ = loss_fn(params, batch, jax.random.key(4))
    assert float(a) == float(b) and float(a) != float(c)


def test_hybrid_loss_with_learned_sigma_reports_its_bound():
    _, _, params, loss_fn = _setup(learned_sigma=True)
    loss, metrics = jax.jit(loss_fn)(params, _batch(), jax.random.key(5))
    assert float(metrics["vb"]) >= 0
    assert float(loss) == pytest.approx(float(metrics["mse"] + metrics["vb"]), rel=1e-5)


def test_validate_rejects_mismatched_variance_settings_and_sampler_steps():
    config = base_config()
    config.model.learned_sigma = True
    with pytest.raises(ConfigError, match="diffusion.loss"):
        validate(config, check_data=False)
    config = base_config()
    config.sample.steps = 2000
    with pytest.raises(ConfigError, match="sample.steps"):
        validate(config, check_data=False)
    config = base_config()
    config.model.label_drop = 1.0
    with pytest.raises(ConfigError, match="model.label_drop"):
        validate(config, check_data=False)
