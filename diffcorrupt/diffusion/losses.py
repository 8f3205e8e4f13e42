"""The training objective, and with it what a denoiser's output means.

A denoiser sees x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps (ab = alphas_cumprod) and predicts, in
its first C channels (NHWC: the last axis), either eps (``prediction="eps"``) or
v = sqrt(ab_t) eps - sqrt(1 - ab_t) x_0 (``"v"``, Salimans & Ho 2022). With ``learned_sigma`` its
last C channels hold values in [-1, 1] that interpolate the log variance of p(x_{t-1} | x_t)
between the posterior variance and beta_t (improved DDPM's learned range). Samplers must read an
output exactly as training defined it, so the helpers that do so live here with the loss.

``loss="mse"`` is the simple loss of DDPM; ``"hybrid"`` is improved DDPM's / DiT's
L_simple + lambda L_vlb, where the variational bound only trains the variance (the mean it sees is
stop-gradient'ed). Input perturbation (Ning et al. 2023) noises x_t with eps + gamma xi while the
target stays eps.

Min-SNR-gamma weighting (Hang et al. 2023) caps each timestep's weight, read as a weight on the x_0
error, at SNR = gamma: the nearly clean timesteps, whose easy targets otherwise dominate the
gradient, stop crowding out the noisy ones where a sample's shape and class are decided. For an eps
target that is min(SNR, gamma) / SNR, for v min(SNR, gamma) / (SNR + 1); gamma = 0 turns it off.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from diffcorrupt.diffusion.gaussians import discretized_gaussian_log_likelihood, normal_kl
from diffcorrupt.diffusion.schedules import Schedule

PREDICTIONS = ("eps", "v")
LOSSES = ("mse", "hybrid")

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def check_prediction(prediction: str) -> None:
    """Raises a ValueError naming the choices unless ``prediction`` is one of ``PREDICTIONS``."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")


def split_output(output: jax.Array, data_shape: tuple[int, ...],
                 learned_sigma: bool) -> tuple[jax.Array, jax.Array | None]:
    """(prediction, variance values or None) of a model output for data of ``data_shape``, in float32."""
    channels = data_shape[-1]
    expected = (*data_shape[:-1], 2 * channels if learned_sigma else channels)
    if tuple(output.shape) != expected:
        raise ValueError(f"the model output has shape {tuple(output.shape)}; for data of shape {tuple(data_shape)} "
                         f"and learned_sigma={learned_sigma} it must have shape {expected}")
    output = output.astype(jnp.float32)
    if not learned_sigma:
        return output, None
    return output[..., :channels], output[..., channels:]


def eps_and_x0(pred: jax.Array, x_t: jax.Array, sqrt_ab: jax.Array, sqrt_one_minus_ab: jax.Array,
               prediction: str) -> tuple[jax.Array, jax.Array]:
    """The (eps, x_0) that a prediction of kind ``prediction`` at x_t implies."""
    if prediction == "eps":
        return pred, (x_t - sqrt_one_minus_ab * pred) / sqrt_ab
    return sqrt_one_minus_ab * x_t + sqrt_ab * pred, sqrt_ab * x_t - sqrt_one_minus_ab * pred


def learned_log_variance(var_values: jax.Array, min_log: jax.Array, max_log: jax.Array) -> jax.Array:
    """Improved DDPM's learned range: -1 gives ``min_log``, +1 gives ``max_log``, linear in log."""
    frac = (var_values + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log


def variational_bound_terms(output: jax.Array, x0: jax.Array, x_t: jax.Array, t: jax.Array,
                            schedule: Schedule, *, prediction: str = "eps") -> jax.Array:
    """The term L_t of the variational bound for each example, in bits per dimension.

    ``output`` is a learned-sigma model output (2C channels) at (x_t, t). For t > 0 the term is
    KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); for t = 0 it is the negative log-likelihood of
    x_0 under the discretised Gaussian decoder p(x_0 | x_1).
    """
    check_prediction(prediction)
    pred, var_values = split_output(output, x0.shape, learned_sigma=True)

    def at(values: jax.Array) -> jax.Array:
        return _at(values, t, x0.ndim)

    _, x0_pred = eps_and_x0(pred, x_t, at(schedule.sqrt_alphas_cumprod),
                            at(schedule.sqrt_one_minus_alphas_cumprod), prediction)
    coef1, coef2 = at(schedule.posterior_mean_coef1), at(schedule.posterior_mean_coef2)
    true_mean, model_mean = coef1 * x0 + coef2 * x_t, coef1 * x0_pred + coef2 * x_t
    true_log_variance = at(schedule.posterior_log_variance_clipped)
    model_log_variance = learned_log_variance(var_values, true_log_variance, at(jnp.log(schedule.betas)))
    kl = _mean_flat(normal_kl(true_mean, true_log_variance, model_mean, model_log_variance))
    decoder_nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_variance))
    return jnp.where(t == 0, decoder_nll, kl) / math.log(2.0)


def training_losses(model_fn: ModelFn, x0: jax.Array, rng: jax.Array, schedule: Schedule, *,
                    prediction: str = "eps", learned_sigma: bool = False, loss: str = "mse",
                    input_perturbation: float = 0.0, min_snr_gamma: float = 0.0) -> dict[str, jax.Array]:
    """Per-example losses at uniformly drawn timesteps: {"loss", "mse", "vb" (hybrid only), "t"}.

    ``model_fn(x_t, t)`` takes a float32 batch like ``x0`` and (B,) int32 timesteps. The hybrid
    bound is scaled by T/1000, improved DDPM's lambda = 1/1000 times the T terms of L_vlb, which
    at T = 1000 is DiT's plain sum mse + vb. ``input_perturbation`` and ``min_snr_gamma`` are
    Python floats; the weighting applies to the mse term (the one that trains the mean).
    """
    check_prediction(prediction)
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if (loss == "hybrid") != learned_sigma:
        raise ValueError("the hybrid loss needs learned_sigma=True, and learned_sigma needs loss='hybrid' "
                         "(only the variational bound trains the variance channels)")
    x0 = jnp.asarray(x0, jnp.float32)
    t_key, eps_key, perturbation_key = jax.random.split(rng, 3)
    t = jax.random.randint(t_key, (x0.shape[0],), 0, schedule.num_steps)
    eps = jax.random.normal(eps_key, x0.shape)
    noise = eps
    if input_perturbation:
        noise = eps + input_perturbation * jax.random.normal(perturbation_key, x0.shape)
    sqrt_ab = _at(schedule.sqrt_alphas_cumprod, t, x0.ndim)
    sqrt_one_minus_ab = _at(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim)
    x_t = sqrt_ab * x0 + sqrt_one_minus_ab * noise
    output = model_fn(x_t, t)
    pred, var_values = split_output(output, x0.shape, learned_sigma)
    target = eps if prediction == "eps" else sqrt_ab * eps - sqrt_one_minus_ab * x0
    mse = _mean_flat((target - pred) ** 2)
    weighted = mse * min_snr_weight(schedule, t, prediction, min_snr_gamma) if min_snr_gamma else mse
    if loss == "mse":
        return {"loss": weighted, "mse": mse, "t": t}
    frozen_mean = jnp.concatenate([jax.lax.stop_gradient(pred), var_values], axis=-1)
    vb = variational_bound_terms(frozen_mean, x0, x_t, t, schedule, prediction=prediction)
    vb = vb * (schedule.num_steps / 1000.0)
    return {"loss": weighted + vb, "mse": mse, "vb": vb, "t": t}


def min_snr_weight(schedule: Schedule, t: jax.Array, prediction: str, gamma: float) -> jax.Array:
    """The min-SNR-gamma weight of the ``prediction`` target's mse at timesteps ``t``."""
    ab = schedule.alphas_cumprod[t]
    snr = ab / (1.0 - ab)
    return jnp.minimum(snr, gamma) / (snr if prediction == "eps" else snr + 1.0)


def _at(values: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """values[t], shaped to broadcast against a batch of rank ``ndim``."""
    return values[t].reshape((-1,) + (1,) * (ndim - 1))


def _mean_flat(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))
