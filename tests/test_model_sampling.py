"""A real model through the samplers: guidance at scale 1 is the conditional model, CEP stays out
of sampling, and every sampler runs jitted end to end."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.diffusion.samplers import guided, sample
from diffcorrupt.diffusion.schedules import make_schedule
from diffcorrupt.models.conditioning import ConditionNoise
from diffcorrupt.models.dit import DiT
from diffcorrupt.models.registry import example_inputs
from weights import away_from_zero

SHAPE = (8, 8, 4)


@pytest.fixture(scope="module")
def model_and_params():
    model = DiT(input_size=8, in_channels=4, patch=2, hidden=32, depth=2, num_heads=2, num_classes=5,
                learned_sigma=True, noise=ConditionNoise(cep="gaussian", gamma=5.0))
    variables = nn.meta.unbox(model.init({"params": jax.random.key(0)}, *example_inputs(model, SHAPE, 2)))
    params = away_from_zero(variables["params"])
    return model, params


def _guidable(model, params, labels):
    def model_fn(x, t, null_mask):
        return model.apply({"params": params}, x, t, jnp.concatenate([labels, labels]), null_mask)
    return model_fn


def test_guidance_scale_one_is_the_conditional_output_on_all_channels(model_and_params):
    model, params = model_and_params
    labels = jnp.array([0, 1, 2, 3])
    x, t = jax.random.normal(jax.random.key(2), (4, *SHAPE)), jnp.array([10, 200, 500, 900])
    conditional = model.apply({"params": params}, x, t, labels, jnp.zeros(4, bool))
    # equal up to the float rounding of a doubled batch (the combination itself is exact at scale 1)
    np.testing.assert_allclose(guided(_guidable(model, params, labels), 1.0, 4)(x, t), conditional, rtol=1e-5, atol=1e-6)
    unconditional = model.apply({"params": params}, x, t, labels, jnp.ones(4, bool))
    scaled = guided(_guidable(model, params, labels), 3.0, 4)(x, t)
    np.testing.assert_allclose(scaled[..., :4], unconditional[..., :4] + 3.0 * (conditional[..., :4] - unconditional[..., :4]),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaled[..., 4:], conditional[..., 4:], rtol=1e-5, atol=1e-6)


def test_cep_is_absent_at_sampling(model_and_params):
    model, params = model_and_params
    x, t, labels = jax.random.normal(jax.random.key(3), (2, *SHAPE)), jnp.array([5, 50]), jnp.array([1, 2])
    a = model.apply({"params": params}, x, t, labels, jnp.zeros(2, bool))
    b = model.apply({"params": params}, x, t, labels, jnp.zeros(2, bool), rngs={"cep": jax.random.key(9)})
    trained = model.apply({"params": params}, x, t, labels, jnp.zeros(2, bool), train=True, rngs={"cep": jax.random.key(9)})
    assert np.array_equal(a, b)
    assert not np.allclose(a, trained)


@pytest.mark.parametrize("sampler,steps", [("ddpm", 10), ("ddim", 10), ("dpm", 8)])
def test_every_sampler_runs_a_guided_model_jitted(model_and_params, sampler, steps):
    model, params = model_and_params
    schedule = make_schedule("linear", 1000)
    labels = jnp.array([0, 4])

    @jax.jit
    def run(noise, keys):
        return sample(guided(_guidable(model, params, labels), 2.0, 4), noise, schedule, sampler=sampler,
                      steps=steps, learned_sigma=True, rng=keys)

    noise = jax.random.normal(jax.random.key(4), (2, *SHAPE))
    out = run(noise, jax.random.split(jax.random.key(5), 2))
    assert out.shape == (2, *SHAPE) and np.isfinite(out).all()
