"""Elementwise Gaussian log-likelihood terms of the variational bound (improved DDPM / ADM).

The bound's t > 0 terms are KL divergences between two diagonal Gaussians, its t = 0 term is the
likelihood of 8-bit data under a Gaussian discretised into 256 bins on [-1, 1]. ADM evaluates the
normal CDF with a tanh approximation; here it is the exact CDF (``ndtr``/``log_ndtr``), which
differs from ADM's by < 1e-3 and stays accurate in the tails. All results are in nats, per element.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtr

_HALF_BIN = 1.0 / 255.0  # half the width of one of the 256 bins that cover [-1, 1]
_TINY = 1e-12


def normal_kl(mean1: jax.Array, logvar1: jax.Array, mean2: jax.Array, logvar2: jax.Array) -> jax.Array:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: jax.Array, means: jax.Array, log_scales: jax.Array) -> jax.Array:
    """log P(x) for data x in [-1, 1] quantised to 256 levels, under N(means, exp(log_scales)^2).

    The outermost bins extend to -inf and +inf, so the probabilities of the 256 levels sum to one.
    """
    inv_std = jnp.exp(-log_scales)
    upper = inv_std * (x - means + _HALF_BIN)
    lower = inv_std * (x - means - _HALF_BIN)
    log_cdf_upper = log_ndtr(upper)
    log_survival_lower = log_ndtr(-lower)
    # Take the bin's mass from the nearer tail, where the two CDF values do not cancel.
    mass = jnp.where(lower > 0, ndtr(-lower) - ndtr(-upper), ndtr(upper) - ndtr(lower))
    log_bin = jnp.log(jnp.maximum(mass, _TINY))
    return jnp.where(x < -0.999, log_cdf_upper, jnp.where(x > 0.999, log_survival_lower, log_bin))
