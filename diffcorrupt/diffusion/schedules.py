"""Noise schedules of the discrete-time forward process and the coefficients derived from them.

The models this project reproduces were trained with three schedules, and which one a checkpoint
used decides what its outputs mean, so each is spelled out exactly as its source computes it:

  linear      betas linear from 1e-4 to 0.02 (DDPM, ADM, DiT), for any T (no ADM 1000/T rescaling).
  ldm_linear  sqrt(beta) linear from sqrt(0.0015) to sqrt(0.0195), squared (CompVis LDM "linear",
              the class-conditional ImageNet LDMs).
  ldm_txt_linear  the same from sqrt(0.00085) to sqrt(0.012) (CompVis' text-to-image LDM and Stable
              Diffusion; diffusers' ``scaled_linear`` with their beta_start / beta_end).
  cosine      Nichol & Dhariwal's alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2), s = 0.008, betas
              1 - alpha_bar(t+1)/alpha_bar(t) clipped at 0.999.

Every coefficient is computed in float64 (as ADM does) and only then stored as a float32 array; the
float64 ``alphas_cumprod`` is kept too, so that respacing (fewer sampling steps) is exact as well.
A ``Schedule`` is a constant of a model: close over it in jitted functions, do not pass it as a
traced argument.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "ldm_linear", "ldm_txt_linear", "cosine")
_SQRT_LINEAR_ENDS = {"ldm_linear": (0.0015, 0.0195), "ldm_txt_linear": (0.00085, 0.012)}


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """The forward process q(x_t | x_0) and the posteriors q(x_{t-1} | x_t, x_0), ADM semantics.

    Arrays have one entry per step: entry t belongs to timestep t (entry i of a respaced schedule to
    its i-th kept timestep). Identity equality and hashing (``eq=False``) let a Schedule serve as a
    static argument.
    """

    name: str
    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    posterior_variance: jax.Array
    # log of the posterior variance with its t = 0 entry (zero) replaced by the t = 1 entry.
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array  # multiplies x_0
    posterior_mean_coef2: jax.Array  # multiplies x_t
    alphas_cumprod_f64: np.ndarray = dataclasses.field(repr=False)

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])


def beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """The float64 betas of schedule ``name`` over ``num_steps`` training steps."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if num_steps < 2:
        raise ValueError(f"a noise schedule needs at least 2 steps, got {num_steps}")
    if name == "linear":
        return np.linspace(1e-4, 0.02, num_steps, dtype=np.float64)
    if name in _SQRT_LINEAR_ENDS:
        start, end = _SQRT_LINEAR_ENDS[name]
        return np.linspace(math.sqrt(start), math.sqrt(end), num_steps, dtype=np.float64) ** 2
    s = 0.008
    grid = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    alpha_bar = np.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.999)


def make_schedule(name: str, num_steps: int = 1000) -> Schedule:
    """The schedule ``name`` (one of ``SCHEDULES``) over ``num_steps`` training steps."""
    return _from_betas(name, beta_schedule(name, num_steps))


def respace(schedule: Schedule, timesteps: np.ndarray) -> Schedule:
    """The schedule that jumps between the given increasing timesteps (ADM's SpacedDiffusion).

    alphas_cumprod is kept at the kept timesteps and the betas are re-derived from it, so the
    marginals q(x_t | x_0) of the kept timesteps are unchanged; entry i of the result belongs to
    timestep ``timesteps[i]`` of ``schedule``.
    """
    timesteps = np.asarray(timesteps)
    increasing = timesteps.ndim == 1 and timesteps.size > 0 and bool(np.all(np.diff(timesteps) > 0))
    if not increasing or timesteps[0] < 0 or timesteps[-1] >= schedule.num_steps:
        raise ValueError(f"respacing needs increasing timesteps in [0, {schedule.num_steps}), "
                         f"got {timesteps.tolist()}")
    alphas_cumprod = schedule.alphas_cumprod_f64[timesteps]
    betas = 1.0 - alphas_cumprod / np.append(1.0, alphas_cumprod[:-1])
    return _from_betas(schedule.name, betas)


def _from_betas(name: str, betas: np.ndarray) -> Schedule:
    if len(betas) < 2:
        raise ValueError(f"a noise schedule needs at least 2 steps, got {len(betas)}")
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    return Schedule(
        name=name,
        betas=_f32(betas),
        alphas_cumprod=_f32(alphas_cumprod),
        alphas_cumprod_prev=_f32(alphas_cumprod_prev),
        sqrt_alphas_cumprod=_f32(np.sqrt(alphas_cumprod)),
        sqrt_one_minus_alphas_cumprod=_f32(np.sqrt(1.0 - alphas_cumprod)),
        posterior_variance=_f32(posterior_variance),
        posterior_log_variance_clipped=_f32(np.log(np.append(posterior_variance[1], posterior_variance[1:]))),
        posterior_mean_coef1=_f32(betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)),
        posterior_mean_coef2=_f32((1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod)),
        alphas_cumprod_f64=alphas_cumprod,
    )


def _f32(values: np.ndarray) -> jax.Array:
    return jnp.asarray(values, jnp.float32)
