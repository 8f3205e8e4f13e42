"""Latent consistency pieces: LCM's grids and scalings, the multistep sampler, the guidance input of
a student, and per-example guidance."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.diffusion.consistency import (
    boundary_scalings, consistency_output, distance, sampling_timesteps, solver_timesteps,
)
from diffcorrupt.diffusion.samplers import guided, sample
from diffcorrupt.diffusion.schedules import make_schedule
from diffcorrupt.models.registry import example_inputs, make_model


def test_grids_are_lcms():
    assert solver_timesteps(1000, 50).tolist() == list(range(19, 1000, 20))
    assert sampling_timesteps(1000, 50, 4).tolist() == [999, 759, 499, 259]  # diffusers' LCMScheduler
    assert sampling_timesteps(1000, 50, 1).tolist() == [999]
    assert sampling_timesteps(1000, 50, 50).tolist() == list(range(999, 0, -20))
    with pytest.raises(ValueError, match="1 to 50 steps"):
        sampling_timesteps(1000, 50, 51)


def test_boundary_condition_holds_at_zero_and_vanishes_early():
    c_skip, c_out = boundary_scalings(jnp.array([0, 1, 19, 999]))
    assert float(c_skip[0]) == 1.0 and float(c_out[0]) == 0.0  # f(x, 0) = x
    assert float(c_skip[1]) == pytest.approx(0.25 / 100.25) and float(c_out[1]) == pytest.approx(10 / np.sqrt(100.25))
    assert float(c_skip[2]) < 1e-3 and float(c_out[3]) == pytest.approx(1.0, abs=1e-7)
    x, x0 = jnp.ones((2, 2, 2, 1)), jnp.zeros((2, 2, 2, 1))
    np.testing.assert_array_equal(consistency_output(x, x0, jnp.array([0, 0])), x)


def test_pseudo_huber_is_l1_far_and_half_l2_near():
    c = 0.001
    far = distance(jnp.full((1, 4), 1.0), jnp.zeros((1, 4)), "huber", c)
    near = distance(jnp.full((1, 4), 1e-5), jnp.zeros((1, 4)), "huber", c)
    assert float(far[0]) == pytest.approx(1.0 - c, rel=1e-6)
    assert float(near[0]) == pytest.approx(0.5 * 1e-10 / c, rel=1e-2)  # float32 cancellation
    assert float(distance(jnp.full((1, 4), 2.0), jnp.zeros((1, 4)), "l2", c)[0]) == 4.0


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_lcm_sampler_lands_on_a_point_mass_and_keeps_samples_independent(steps):
    # Data all equal to c: the exact eps-prediction makes every x_0 estimate c, so every step count
    # must return c; re-noising between steps draws from each sample's own key.
    schedule = make_schedule("linear", 1000)
    c = jnp.array([0.5, -0.25])

    def eps(x, t):
        ab = schedule.alphas_cumprod[t][:, None, None, None]
        return (x - jnp.sqrt(ab) * c) / jnp.sqrt(1 - ab)

    keys = jax.random.split(jax.random.key(0), 6)
    noise = jax.random.normal(jax.random.key(1), (6, 1, 1, 2))
    out = sample(eps, noise, schedule, sampler="lcm", steps=steps, rng=keys)
    np.testing.assert_allclose(out, np.broadcast_to(c, out.shape), atol=1e-4)
    alone = sample(eps, noise[2:3], schedule, sampler="lcm", steps=steps, rng=keys[2:3])
    np.testing.assert_allclose(alone, out[2:3], atol=1e-6)


def test_lcm_sampler_needs_keys():
    schedule = make_schedule("linear", 1000)
    with pytest.raises(ValueError, match="one typed key per sample"):
        sample(lambda x, t: x, jnp.zeros((2, 1, 1, 1)), schedule, sampler="lcm", steps=2)


@pytest.mark.parametrize("name", ["DiT-T/4", "LDM-small"])
def test_student_starts_as_its_teacher_whatever_its_guidance(name):
    teacher = make_model(name, input_shape=(8, 8, 4), num_classes=10)
    student = make_model(name, input_shape=(8, 8, 4), num_classes=10, guidance_dim=32)
    inputs = example_inputs(teacher, (8, 8, 4), batch=2)
    x = jax.random.normal(jax.random.key(0), inputs[0].shape)
    inputs = (x, jnp.array([10, 900]), jnp.array([3, 7]), inputs[3])
    teacher_params = nn.meta.unbox(teacher.init({"params": jax.random.key(1)}, *inputs)["params"])
    student_params = nn.meta.unbox(student.init({"params": jax.random.key(1)}, *inputs)["params"])
    flat = jax.tree_util.tree_flatten_with_path(student_params)[0]
    extra = [leaf for p, leaf in flat if "cond_proj" in jax.tree_util.keystr(p)]
    assert len(extra) == 1 and not jnp.any(extra[0])  # one map, zero-initialised
    merged = jax.tree_util.tree_map_with_path(
        lambda p, leaf: leaf if "cond_proj" in jax.tree_util.keystr(p) else _at(teacher_params, p), student_params)
    expected = teacher.apply({"params": teacher_params}, *inputs)
    for scale in (1.0, 4.5):
        got = student.apply({"params": merged}, *inputs, guidance=jnp.full((2,), scale))
        np.testing.assert_array_equal(got, expected)
    moved = jax.tree.map(lambda leaf: leaf + 0.05, merged)  # off DiT's zero-initialised output layers too
    low = student.apply({"params": moved}, *inputs, guidance=jnp.full((2,), 1.0))
    high = student.apply({"params": moved}, *inputs, guidance=jnp.full((2,), 4.5))
    assert float(jnp.max(jnp.abs(low - high))) > 1e-4  # once trained, the scale is heard


def _at(tree, path):
    for entry in path:
        tree = tree[entry.key]
    return tree


def test_guidance_scales_per_example():
    def model_fn(x, t, null):
        return jnp.where(null[:, None, None, None], 1.0, 3.0) * jnp.ones_like(x)

    out = guided(model_fn, jnp.array([1.0, 2.0, 4.0]), channels=1)(jnp.zeros((3, 1, 1, 1)), jnp.zeros(3, jnp.int32))
    np.testing.assert_allclose(out[:, 0, 0, 0], [3.0, 5.0, 9.0])  # uncond + s (cond - uncond)
