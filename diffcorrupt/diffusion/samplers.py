"""Samplers (ancestral DDPM, DDIM, DPM-Solver++(2M)) and classifier-free guidance.

Each sampler is one ``jax.lax.scan`` over precomputed float64-derived per-step coefficients, so
``sample`` traces once under ``jax.jit`` whatever the number of steps. With T training steps and
S = ``steps``, the model is evaluated at these training timesteps:

  ddpm  ADM's ``space_timesteps(T, "S")``: round(i (T-1)/(S-1)), keeping t = T-1 and t = 0, with
        the betas respaced (ADM's SpacedDiffusion) so that the kept marginals are unchanged. This is
        how ADM and DiT sample. Variance: fixed small (the posterior variance) or learned range.
  ddim  DDIM's "uniform" (leading) spacing: floor(i T/S) for i < S, which is range(0, T, T/S) when
        S divides T; the last step goes to alpha_bar = 1, i.e. returns the x_0 prediction at t = 0.
  lcm   a consistency-distilled run's multistep sampler (diffusion/consistency.py): at each of S
        timesteps of the distillation grid (``origin_steps`` = N timesteps) the consistency
        function's x_0 estimate, re-noised with fresh noise to the next timestep; after the last,
        the estimate itself. Guidance is the student's input, not a doubled batch.
  dpm   DPM-Solver's "time_uniform" grid for discrete-time models, round(linspace(T-1, 0, S+1)):
        S multistep updates in log-SNR lambda = log(alpha/sigma) with data (x_0) prediction, the
        first of first order, the rest of second order (2M) except the last, which is first order
        at every S (``lower_order_final``; the reference code lowers it only below 10 steps, but on
        this grid the last lambda step is several times the one before it and the second-order
        extrapolation overshoots: with the linear schedule and 20 steps the variance of Gaussian
        data comes out 28% wrong instead of 3%). The state at t = 0 is then replaced by its x_0
        prediction (DPM-Solver's ``denoise_to_zero``): S+1 model evaluations, DDIM's end point.

x_0 predictions are never clipped (latent models have no [-1, 1] range). Samples are independent:
example b's result is a function of its initial noise ``noise[b]`` and, where noise is added
(DDPM, DDIM with eta > 0, LCM), its own key ``rng[b]`` with the step index folded in, whatever batch it
is drawn in.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffcorrupt.diffusion.consistency import consistency_output, sampling_timesteps
from diffcorrupt.diffusion.losses import check_prediction, eps_and_x0, learned_log_variance, split_output
from diffcorrupt.diffusion.schedules import Schedule, respace

SAMPLERS = ("ddpm", "ddim", "dpm", "lcm")
NOISY_SAMPLERS = ("ddpm", "lcm")  # and ddim with eta > 0: they need one key per sample

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]
GuidableFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def space_timesteps(num_steps: int, steps: int) -> np.ndarray:
    """ADM's evenly spaced subsequence of ``steps`` of ``num_steps`` timesteps, increasing."""
    if not 1 <= steps <= num_steps:
        raise ValueError(f"need 1 <= steps <= {num_steps} training steps, got {steps}")
    stride = 1.0 if steps == 1 else (num_steps - 1) / (steps - 1)
    taken, position = [], 0.0
    for _ in range(steps):
        taken.append(round(position))
        position += stride
    return np.asarray(taken)


def leading_timesteps(num_steps: int, steps: int) -> np.ndarray:
    """DDIM's uniform ("leading") subsequence floor(i T/S), i < S, increasing."""
    if not 1 <= steps <= num_steps:
        raise ValueError(f"need 1 <= steps <= {num_steps} training steps, got {steps}")
    return np.arange(steps) * num_steps // steps


def sample(denoise_fn: DenoiseFn, noise: jax.Array, schedule: Schedule, *, sampler: str, steps: int,
           eta: float = 0.0, prediction: str = "eps", learned_sigma: bool = False,
           rng: jax.Array | None = None, origin_steps: int = 50) -> jax.Array:
    """Runs ``sampler`` from x_T = ``noise`` (B, ..., C) and returns the float32 samples x_0.

    ``denoise_fn(x, t)`` gets a float32 batch and (B,) int32 training timesteps and returns the
    model output as in training (C channels, 2C with ``learned_sigma``). ``rng``, needed by ddpm,
    lcm and ddim with ``eta`` > 0, is a (B,) array of typed keys (``jax.random.key``), one per
    sample. ``eta`` (in [0, 1]) is DDIM's. ``steps``, ``sampler``, ``eta`` and ``prediction`` are
    static, and so is ``origin_steps``, the lcm grid's N (the run's ``distill.ddim_timesteps``).
    """
    check_prediction(prediction)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if not 0.0 <= eta <= 1.0 or (eta and sampler != "ddim"):
        raise ValueError(f"eta must lie in [0, 1] and is DDIM's alone; got eta={eta} for {sampler}")
    x = jnp.asarray(noise, jnp.float32)
    if sampler in NOISY_SAMPLERS or eta:
        _check_keys(rng, x.shape[0], sampler)
    model = _ModelReader(denoise_fn, prediction, learned_sigma)
    if sampler == "lcm":
        return _lcm(model, x, schedule, steps, origin_steps, rng)
    if sampler == "ddpm":
        return _ddpm(model, x, schedule, steps, rng)
    if sampler == "ddim":
        return _ddim(model, x, schedule, steps, eta, rng)
    return _dpm_solver_2m(model, x, schedule, steps)


def guided(model_fn: GuidableFn, scale: float | jax.Array, channels: int) -> DenoiseFn:
    """Classifier-free guidance: a ``denoise_fn`` from a model that can drop its condition.

    ``model_fn(x, t, null_mask)`` is evaluated once on the doubled batch [x; x] with ``null_mask``
    False for the first half (conditional) and True for the second (the null condition); a
    ``model_fn`` closing over per-example conditions must therefore hold them twice,
    concatenate([cond, cond]). All ``channels`` prediction channels are guided,
    cond + (scale - 1)(cond - uncond) = uncond + scale (cond - uncond), which is exactly the
    conditional output at scale 1 (DiT's sample code guides only 3 of its 4 latent channels). Any
    further channels (a learned variance) are the conditional half's. ``scale`` is one number or
    one per example (the teacher of a consistency distillation guides each at its own scale).
    """

    def denoise_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        batch = x.shape[0]
        output = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.arange(2 * batch) >= batch)
        cond, uncond = output[:batch, ..., :channels], output[batch:, ..., :channels]
        weight = jnp.reshape(jnp.asarray(scale, jnp.float32) - 1.0, (-1,) + (1,) * (x.ndim - 1))
        return jnp.concatenate([cond + weight * (cond - uncond), output[:batch, ..., channels:]], axis=-1)

    return denoise_fn


class _ModelReader:
    """Evaluates the denoiser at one timestep for the whole batch and reads (eps, x_0, variance)."""

    def __init__(self, denoise_fn: DenoiseFn, prediction: str, learned_sigma: bool):
        self.denoise_fn, self.prediction, self.learned_sigma = denoise_fn, prediction, learned_sigma

    def __call__(self, x: jax.Array, t: jax.Array, sqrt_ab: jax.Array,
                 sqrt_one_minus_ab: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        output = self.denoise_fn(x, jnp.full((x.shape[0],), t, jnp.int32))
        pred, var_values = split_output(output, x.shape, self.learned_sigma)
        eps, x0 = eps_and_x0(pred, x, sqrt_ab, sqrt_one_minus_ab, self.prediction)
        return eps, x0, var_values


def _ddpm(model: _ModelReader, x: jax.Array, schedule: Schedule, steps: int, rng: jax.Array) -> jax.Array:
    if steps < 2:
        raise ValueError(f"ddpm needs at least 2 steps, got {steps}")
    timesteps = space_timesteps(schedule.num_steps, steps)
    spaced = respace(schedule, timesteps)
    coefficients = {
        "index": jnp.arange(steps),
        "t": jnp.asarray(timesteps[::-1], jnp.int32),
        "sqrt_ab": spaced.sqrt_alphas_cumprod[::-1],
        "sqrt_one_minus_ab": spaced.sqrt_one_minus_alphas_cumprod[::-1],
        "coef1": spaced.posterior_mean_coef1[::-1],
        "coef2": spaced.posterior_mean_coef2[::-1],
        "min_log": spaced.posterior_log_variance_clipped[::-1],
        "max_log": jnp.log(spaced.betas)[::-1],
    }

    def step(x: jax.Array, c: dict[str, jax.Array]) -> tuple[jax.Array, None]:
        _, x0, var_values = model(x, c["t"], c["sqrt_ab"], c["sqrt_one_minus_ab"])
        mean = c["coef1"] * x0 + c["coef2"] * x
        log_variance = c["min_log"]
        if var_values is not None:
            log_variance = learned_log_variance(var_values, c["min_log"], c["max_log"])
        noisy = mean + jnp.exp(0.5 * log_variance) * _per_example_normal(rng, c["index"], x.shape)
        return jnp.where(c["index"] == steps - 1, mean, noisy), None

    return jax.lax.scan(step, x, coefficients)[0]


def _descent(schedule: Schedule, timesteps: np.ndarray) -> tuple[dict[str, jax.Array], np.ndarray, np.ndarray]:
    """What DDIM and LCM scan over for decreasing ``timesteps``: each step's index, timestep, its
    sqrt(alpha_bar) and sqrt(1 - alpha_bar) and the next step's sqrt(alpha_bar) (1 after the last,
    which ends at x_0); with alpha_bar at the steps and at the next ones, in float64."""
    ab = schedule.alphas_cumprod_f64[timesteps]
    ab_next = np.append(schedule.alphas_cumprod_f64[timesteps[1:]], 1.0)
    table = {"index": jnp.arange(len(timesteps)), "t": jnp.asarray(timesteps, jnp.int32), "sqrt_ab": _f32(np.sqrt(ab)),
             "sqrt_one_minus_ab": _f32(np.sqrt(1.0 - ab)), "sqrt_ab_next": _f32(np.sqrt(ab_next))}
    return table, ab, ab_next


def _ddim(model: _ModelReader, x: jax.Array, schedule: Schedule, steps: int, eta: float,
          rng: jax.Array | None) -> jax.Array:
    coefficients, ab, ab_prev = _descent(schedule, leading_timesteps(schedule.num_steps, steps)[::-1])
    sigma = eta * np.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
    coefficients.update(eps_coef=_f32(np.sqrt(np.maximum(1.0 - ab_prev - sigma**2, 0.0))), sigma=_f32(sigma))

    def step(x: jax.Array, c: dict[str, jax.Array]) -> tuple[jax.Array, None]:
        eps, x0, _ = model(x, c["t"], c["sqrt_ab"], c["sqrt_one_minus_ab"])
        x = c["sqrt_ab_next"] * x0 + c["eps_coef"] * eps
        if eta:
            x = x + c["sigma"] * _per_example_normal(rng, c["index"], x.shape)
        return x, None

    return jax.lax.scan(step, x, coefficients)[0]


def _dpm_solver_2m(model: _ModelReader, x: jax.Array, schedule: Schedule, steps: int) -> jax.Array:
    if not 1 <= steps < schedule.num_steps:
        raise ValueError(f"dpm needs 1 <= steps < {schedule.num_steps} training steps, got {steps}")
    timesteps = space_timesteps(schedule.num_steps, steps + 1)[::-1]
    ab = schedule.alphas_cumprod_f64[timesteps]
    alpha, sigma = np.sqrt(ab), np.sqrt(1.0 - ab)
    lam = np.log(alpha) - np.log(sigma)
    h = np.diff(lam)  # h[k] = lambda_{k+1} - lambda_k > 0
    first = alpha[1:] * -np.expm1(-h)  # x_{k+1} = (sigma_{k+1}/sigma_k) x_k + first_k D_k + ...
    second_order = (np.arange(steps) > 0) & (np.arange(steps) < steps - 1)
    r = np.append(1.0, h[:-1] / h[1:])  # r_k = h_{k-1}/h_k
    coefficients = {
        "t": jnp.asarray(timesteps[:-1], jnp.int32),
        "sqrt_ab": _f32(alpha[:-1]),
        "sqrt_one_minus_ab": _f32(sigma[:-1]),
        "ratio": _f32(sigma[1:] / sigma[:-1]),
        "first": _f32(first),
        "second": _f32(np.where(second_order, 0.5 * first / r, 0.0)),  # ... + second_k (D_k - D_{k-1})
    }

    def step(carry: tuple[jax.Array, jax.Array],
             c: dict[str, jax.Array]) -> tuple[tuple[jax.Array, jax.Array], None]:
        x, previous = carry
        _, data, _ = model(x, c["t"], c["sqrt_ab"], c["sqrt_one_minus_ab"])
        x = c["ratio"] * x + c["first"] * data + c["second"] * (data - previous)
        return (x, data), None

    x, _ = jax.lax.scan(step, (x, jnp.zeros_like(x)), coefficients)[0]
    return model(x, timesteps[-1], _f32(alpha[-1]), _f32(sigma[-1]))[1]


def _lcm(model: _ModelReader, x: jax.Array, schedule: Schedule, steps: int, origin_steps: int,
         rng: jax.Array) -> jax.Array:
    coefficients, _, ab_next = _descent(schedule, sampling_timesteps(schedule.num_steps, origin_steps, steps))
    coefficients["sqrt_one_minus_ab_next"] = _f32(np.sqrt(1.0 - ab_next))  # 0 after the last: no noise is added

    def step(x: jax.Array, c: dict[str, jax.Array]) -> tuple[jax.Array, None]:
        _, x0, _ = model(x, c["t"], c["sqrt_ab"], c["sqrt_one_minus_ab"])
        denoised = consistency_output(x, x0, c["t"])
        noise = _per_example_normal(rng, c["index"], x.shape)
        return c["sqrt_ab_next"] * denoised + c["sqrt_one_minus_ab_next"] * noise, None

    return jax.lax.scan(step, x, coefficients)[0]


def _check_keys(rng: jax.Array | None, batch: int, sampler: str) -> None:
    typed = rng is not None and jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
    if not typed or rng.shape != (batch,):
        got = "None" if rng is None else f"{rng.dtype}{list(rng.shape)}"
        raise ValueError(f"{sampler} with noise needs rng: one typed key per sample, shape ({batch},), e.g. "
                         f"jax.random.split(jax.random.key(seed), {batch}); got {got}")


def _per_example_normal(keys: jax.Array, index: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal noise for step ``index``, drawn for each sample from its own key."""
    return jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, index), shape[1:]))(keys)


def _f32(values: np.ndarray) -> jax.Array:
    return jnp.asarray(values, jnp.float32)
