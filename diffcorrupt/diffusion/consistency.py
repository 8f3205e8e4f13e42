"""Latent consistency models (Luo et al. 2023) on discrete-time schedules: the pieces that the
distillation loss and the multistep sampler must agree on.

A consistency function maps any x_t on a trajectory of the guided teacher to that trajectory's
origin. LCM parametrises it from the model's x_0 prediction as
``f(x_t, t) = c_skip(t) x_t + c_out(t) x0(x_t, t)``, with the consistency models' boundary scalings
evaluated at ``10 t`` (t the integer training timestep, sigma_data = 0.5): c_skip(0) = 1 and
c_out(0) = 0, so f is the identity at t = 0 as the boundary condition demands, and from t of about
5 on f is the x_0 prediction alone. These constants are those of LCM's code (its scheduler's
``timestep_scaling`` and ``sigma_data``), so imported LCM weights sample as they were trained.

Distillation and sampling both live on the skipping-step grid tau_i = (i + 1) T/N - 1, i < N
(T = 1000, N = 50: 19, 39, ..., 999): the loss asks f at tau_n to match the target network's f at
tau_{n-1} after one guided DDIM step of the teacher, and the sampler visits a few of these timesteps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def solver_timesteps(num_train_steps: int, grid_size: int) -> np.ndarray:
    """LCM's skipping-step grid: tau_i = (i + 1) T/N - 1 for i < N, increasing (T/N rounded down,
    as LCM's DDIMSolver)."""
    if not 1 <= grid_size <= num_train_steps:
        raise ValueError(f"need 1 <= grid size <= {num_train_steps} training steps, got {grid_size}")
    return np.arange(1, grid_size + 1) * (num_train_steps // grid_size) - 1


def sampling_timesteps(num_train_steps: int, grid_size: int, steps: int) -> np.ndarray:
    """The ``steps`` timesteps the multistep sampler visits, decreasing from tau_{N-1}: the grid read
    from its top at floor(k N / steps), k < steps (diffusers' LCMScheduler), so 4 of 50 are
    999, 759, 499, 259."""
    grid = solver_timesteps(num_train_steps, grid_size)
    if not 1 <= steps <= grid_size:
        raise ValueError(f"the lcm sampler takes 1 to {grid_size} steps (distill.ddim_timesteps), got {steps}")
    return grid[::-1][np.floor(np.arange(steps) * grid_size / steps).astype(int)]


def boundary_scalings(t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(c_skip, c_out) at integer timesteps ``t``."""
    scaled = jnp.asarray(t, jnp.float32) * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / jnp.sqrt(scaled**2 + SIGMA_DATA**2)
    return c_skip, c_out


def consistency_output(x_t: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
    """f(x_t, t) from the x_0 prediction at x_t; ``t`` is a scalar or one timestep per example."""
    c_skip, c_out = boundary_scalings(t)
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    return jnp.reshape(c_skip, shape) * x_t + jnp.reshape(c_out, shape) * x0


def distance(a: jax.Array, b: jax.Array, loss: str, huber_c: float) -> jax.Array:
    """Per-example mean of LCM's pseudo-Huber distance sqrt(d^2 + c^2) - c (``huber``) or of d^2 (``l2``)."""
    squared = jnp.square(a - b)
    elementwise = jnp.sqrt(squared + huber_c**2) - huber_c if loss == "huber" else squared
    return elementwise.reshape(elementwise.shape[0], -1).mean(axis=1)
