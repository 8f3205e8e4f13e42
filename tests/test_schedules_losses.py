"""Noise schedules (endpoints, source formulas, posterior algebra, respacing) and training losses."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.diffusion.gaussians import discretized_gaussian_log_likelihood, normal_kl
from diffcorrupt.diffusion.losses import training_losses, variational_bound_terms
from diffcorrupt.diffusion.schedules import SCHEDULES, make_schedule, respace

F32 = dict(rtol=2e-6, atol=0)


# --- schedules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("num_steps", [10, 1000])
def test_shapes_and_monotone_alphas_cumprod(name, num_steps):
    schedule = make_schedule(name, num_steps)
    assert schedule.num_steps == num_steps
    for field in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                  "sqrt_one_minus_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                  "posterior_mean_coef1", "posterior_mean_coef2"):
        array = getattr(schedule, field)
        assert array.shape == (num_steps,) and array.dtype == jnp.float32, field
        assert np.all(np.isfinite(array)), field
    ab = np.asarray(schedule.alphas_cumprod_f64)
    assert np.all(np.diff(ab) < 0) and ab[0] < 1 and ab[-1] >= 0
    np.testing.assert_allclose(schedule.alphas_cumprod, ab, **F32)
    np.testing.assert_allclose(schedule.alphas_cumprod_prev, np.append(1.0, ab[:-1]), **F32)
    np.testing.assert_allclose(schedule.sqrt_alphas_cumprod, np.sqrt(ab), **F32)
    np.testing.assert_allclose(schedule.sqrt_one_minus_alphas_cumprod, np.sqrt(1 - ab), rtol=1e-5)


def test_linear_endpoints():
    betas = np.asarray(make_schedule("linear", 1000).betas, np.float64)
    np.testing.assert_allclose(betas[[0, -1]], [1e-4, 0.02], **F32)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-4)


@pytest.mark.parametrize("name,start,end", [("ldm_linear", 0.0015, 0.0195), ("ldm_txt_linear", 0.00085, 0.012)])
def test_ldm_linear_is_compvis_formula(name, start, end):
    schedule = make_schedule(name, 1000)
    # ldm/modules/diffusionmodules/util.py make_beta_schedule("linear", 1000, start, end)
    expected = [(math.sqrt(start) + i * (math.sqrt(end) - math.sqrt(start)) / 999) ** 2 for i in range(1000)]
    np.testing.assert_allclose(schedule.betas, expected, **F32)
    np.testing.assert_allclose(np.asarray(schedule.betas)[[0, -1]], [start, end], **F32)


def test_cosine_endpoints_and_alpha_bar():
    schedule = make_schedule("cosine", 1000)
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = np.asarray(schedule.betas)
    assert betas[-1] == np.float32(0.999) and betas.max() <= np.float32(0.999)
    np.testing.assert_allclose(betas[0], 1 - alpha_bar(1e-3) / alpha_bar(0.0), rtol=1e-5)
    # Before the clip bites, alphas_cumprod telescopes to alpha_bar((t + 1)/T) / alpha_bar(0).
    t = np.arange(0, 990, 7)
    np.testing.assert_allclose(schedule.alphas_cumprod_f64[t],
                               [alpha_bar((i + 1) / 1000) / alpha_bar(0.0) for i in t], rtol=1e-10)


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="linear, ldm_linear, ldm_txt_linear, cosine"):
        make_schedule("quadratic")


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_is_bayes_rule(name):
    """q(x_{t-1} | x_t, x_0) from q(x_{t-1} | x_0) and q(x_t | x_{t-1}), derived independently."""
    schedule = make_schedule(name, 1000)
    ab = schedule.alphas_cumprod_f64
    ab_prev = np.append(1.0, ab[:-1])
    beta = 1 - ab / ab_prev
    t = np.arange(1, 1000)
    precision = 1 / (1 - ab_prev[t]) + (1 - beta[t]) / beta[t]
    variance = 1 / precision
    coef_x0 = variance * np.sqrt(ab_prev[t]) / (1 - ab_prev[t])
    coef_xt = variance * np.sqrt(1 - beta[t]) / beta[t]
    np.testing.assert_allclose(schedule.posterior_variance[t], variance, rtol=1e-4)
    np.testing.assert_allclose(schedule.posterior_mean_coef1[t], coef_x0, rtol=1e-4)
    np.testing.assert_allclose(schedule.posterior_mean_coef2[t], coef_xt, rtol=1e-4)
    # t = 0: the posterior is the point x_0; its clipped log variance borrows t = 1's.
    assert schedule.posterior_variance[0] == 0 and schedule.posterior_mean_coef1[0] == 1
    assert schedule.posterior_mean_coef2[0] == 0
    np.testing.assert_allclose(schedule.posterior_log_variance_clipped[0], np.log(variance[0]), rtol=1e-5)
    np.testing.assert_allclose(schedule.posterior_log_variance_clipped[1:], np.log(variance), rtol=1e-4, atol=1e-5)


def test_respace_keeps_kept_marginals():
    schedule = make_schedule("linear", 1000)
    timesteps = np.array([0, 100, 250, 600, 999])
    spaced = respace(schedule, timesteps)
    assert spaced.num_steps == 5
    np.testing.assert_allclose(spaced.alphas_cumprod_f64, schedule.alphas_cumprod_f64[timesteps], rtol=1e-12)
    np.testing.assert_allclose(respace(schedule, np.arange(1000)).betas, schedule.betas, rtol=1e-6)
    with pytest.raises(ValueError, match="increasing"):
        respace(schedule, np.array([5, 3]))


# --- losses --------------------------------------------------------------------------------------

X0 = jax.random.uniform(jax.random.key(0), (256, 4, 4, 3), minval=-1, maxval=1)


def losses_and_x_t(output_fn, rng, schedule, **options):
    """training_losses under jit, with a model_fn that returns output_fn(x_t, t), and the x_t it saw."""
    seen = {}

    def model_fn(x_t, t):
        seen["x_t"] = x_t
        return output_fn(x_t, t)

    @jax.jit
    def run(rng):
        out = training_losses(model_fn, X0, rng, schedule, **options)
        return out, seen["x_t"]

    return run(rng)


def zeros(x_t, t):
    return jnp.zeros_like(x_t)


def true_eps(schedule, x0):
    """The exact eps of x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, recovered from x_t (no perturbation)."""

    def eps(x_t, t):
        sqrt_ab = schedule.sqrt_alphas_cumprod[t][:, None, None, None]
        return (x_t - sqrt_ab * x0) / schedule.sqrt_one_minus_alphas_cumprod[t][:, None, None, None]

    return eps


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_mse_of_a_zero_model_is_the_target_power(prediction):
    schedule = make_schedule("linear", 1000)
    out, x_t = losses_and_x_t(zeros, jax.random.key(1), schedule, prediction=prediction)
    assert set(out) == {"loss", "mse", "t"} and out["loss"].shape == (256,)
    t = out["t"]
    assert t.min() >= 0 and t.max() < 1000 and len(np.unique(t)) > 100
    eps = true_eps(schedule, X0)(x_t, t)
    sqrt_ab = schedule.sqrt_alphas_cumprod[t][:, None, None, None]
    target = eps if prediction == "eps" else sqrt_ab * eps - jnp.sqrt(1 - sqrt_ab**2) * X0
    np.testing.assert_allclose(out["mse"], jnp.mean(target**2, axis=(1, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(out["loss"], out["mse"])
    if prediction == "eps":
        assert abs(float(out["mse"].mean()) - 1.0) < 0.05


def test_mse_of_the_true_eps_is_zero():
    schedule = make_schedule("cosine", 1000)
    out, _ = losses_and_x_t(true_eps(schedule, X0), jax.random.key(2), schedule)
    assert float(out["mse"].max()) < 1e-6


def test_input_perturbation_moves_x_t_but_not_the_target():
    schedule = make_schedule("linear", 1000)
    plain, x_plain = losses_and_x_t(zeros, jax.random.key(3), schedule)
    perturbed, x_perturbed = losses_and_x_t(zeros, jax.random.key(3), schedule, input_perturbation=0.1)
    np.testing.assert_array_equal(plain["t"], perturbed["t"])
    np.testing.assert_array_equal(plain["mse"], perturbed["mse"])  # same eps target
    t = plain["t"]
    xi = (x_perturbed - x_plain) / (0.1 * schedule.sqrt_one_minus_alphas_cumprod[t][:, None, None, None])
    assert abs(float(jnp.std(xi)) - 1.0) < 0.05 and abs(float(jnp.mean(xi))) < 0.05


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weights_are_the_x0_weight_capped_at_gamma(prediction):
    """Read as a weight on the x_0 error, every timestep weighs min(SNR, gamma): an eps error is
    SNR times an x_0 error, a v error SNR + 1 times."""
    schedule = make_schedule("linear", 1000)
    plain, _ = losses_and_x_t(zeros, jax.random.key(4), schedule, prediction=prediction)
    weighted, _ = losses_and_x_t(zeros, jax.random.key(4), schedule, prediction=prediction, min_snr_gamma=5.0)
    np.testing.assert_array_equal(plain["mse"], weighted["mse"])  # the logged mse stays the plain one
    ab = np.asarray(schedule.alphas_cumprod)[np.asarray(weighted["t"])]
    snr = ab / (1 - ab)
    x0_weight = np.asarray(weighted["loss"] / plain["mse"]) * (snr if prediction == "eps" else snr + 1)
    np.testing.assert_allclose(x0_weight, np.minimum(snr, 5.0), rtol=1e-4)
    assert (snr > 5).any() and (snr < 5).any()  # both sides of the cap were drawn


def test_vb_terms_known_values():
    schedule = make_schedule("linear", 1000)
    x0 = jnp.array([-1.0, -0.5, 0.0, 0.3, 1.0]).reshape(1, 1, 5, 1) * jnp.ones((3, 1, 1, 1))
    t = jnp.array([0, 1, 3])
    eps = jnp.full_like(x0, 0.7)
    x_t = (schedule.sqrt_alphas_cumprod[t][:, None, None, None] * x0
           + schedule.sqrt_one_minus_alphas_cumprod[t][:, None, None, None] * eps)
    # The exact mean with var value -1 (the posterior variance): KL = 0 at t > 0.
    vb = jax.jit(lambda var_value: variational_bound_terms(
        jnp.concatenate([eps, jnp.full_like(x0, var_value)], -1), x0, x_t, t, schedule))
    small = vb(-1.0)
    sigma = math.sqrt(float(schedule.posterior_variance[1]))  # the t = 0 decoder's std
    half_bin = 1 / 255 / sigma
    interior = -math.log(math.erf(half_bin / math.sqrt(2)))  # Phi(h) - Phi(-h) = erf(h / sqrt 2)
    edge = -math.log(0.5 * (1 + math.erf(half_bin / math.sqrt(2))))  # Phi(h)
    np.testing.assert_allclose(small[0], (2 * edge + 3 * interior) / 5 / math.log(2), rtol=1e-3)
    np.testing.assert_allclose(small[1:], 0.0, atol=1e-5)
    # Var value +1 gives beta_t: KL of two zero-mean-difference Gaussians per dimension.
    large = vb(1.0)
    for i in (1, 2):
        ratio = float(schedule.betas[t[i]] / schedule.posterior_variance[t[i]])
        np.testing.assert_allclose(large[i], 0.5 * (-1 + math.log(ratio) + 1 / ratio) / math.log(2), rtol=1e-3)


def test_gaussian_helpers():
    np.testing.assert_allclose(normal_kl(0.3, 0.0, 0.3, 0.0), 0.0)
    # KL(N(1, 1) || N(0, 4)) = (log 4 + (1 + 1)/4 - 1) / 2
    np.testing.assert_allclose(normal_kl(1.0, 0.0, 0.0, math.log(4.0)), 0.5 * (math.log(4) + 0.5 - 1), rtol=1e-6)
    # The 256 bins of [-1, 1] carry all the probability.
    levels = jnp.linspace(-1, 1, 256)[:, None]
    means, log_scales = jnp.array([0.1, 0.9, -0.5, 0.0]), jnp.array([-3.0, -1.0, 0.5, -8.0])
    totals = jnp.exp(jax.jit(discretized_gaussian_log_likelihood)(levels, means, log_scales)).sum(0)
    np.testing.assert_allclose(totals, 1.0, rtol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_hybrid_loss(prediction):
    schedule = make_schedule("linear", 20)  # short, so that t = 0 is drawn too
    weights = 0.1 * jax.random.normal(jax.random.key(4), (3, 6))
    out, _ = losses_and_x_t(lambda x_t, t: jnp.tanh(x_t @ weights), jax.random.key(5), schedule,
                            prediction=prediction, learned_sigma=True, loss="hybrid")
    assert set(out) == {"loss", "mse", "vb", "t"} and 0 in out["t"]
    assert np.all(np.isfinite(out["loss"])) and np.all(out["vb"] >= 0)
    np.testing.assert_allclose(out["loss"], out["mse"] + out["vb"], rtol=1e-6)
    # A perfect mean with the posterior variance: vb is the t = 0 decoder term alone, scaled by T/1000.
    def perfect(x_t, t):
        return jnp.concatenate([true_eps(schedule, X0)(x_t, t), -jnp.ones_like(x_t)], -1)

    out, _ = losses_and_x_t(perfect, jax.random.key(5), schedule, learned_sigma=True, loss="hybrid")
    assert float(out["vb"][out["t"] > 0].max()) < 1e-5 * 20 / 1000
    assert float(out["vb"][out["t"] == 0].min()) > 1e-3


def test_hybrid_needs_learned_sigma_and_output_width_is_checked():
    schedule = make_schedule("linear", 10)
    with pytest.raises(ValueError, match="learned_sigma"):
        training_losses(lambda x, t: x, X0, jax.random.key(0), schedule, loss="hybrid")
    with pytest.raises(ValueError, match=r"must have shape \(.*6\)"):
        training_losses(lambda x, t: x, X0, jax.random.key(0), schedule, learned_sigma=True, loss="hybrid")
    with pytest.raises(ValueError, match="eps, v"):
        training_losses(lambda x, t: x, X0, jax.random.key(0), schedule, prediction="x0")


def test_gradients_flow_and_vb_trains_only_the_variance():
    schedule = make_schedule("cosine", 100)

    def loss(params, kind):
        def model_fn(x_t, t):
            return jnp.concatenate([x_t @ params["mean"], jnp.tanh(x_t @ params["var"])], -1)
        out = training_losses(model_fn, X0, jax.random.key(6), schedule, learned_sigma=True, loss="hybrid")
        return jnp.mean(out[kind])

    params = {"mean": 0.1 * jnp.eye(3), "var": 0.1 * jnp.ones((3, 3))}
    gradient = jax.jit(jax.grad(loss), static_argnums=1)
    hybrid, mse_only = gradient(params, "loss"), gradient(params, "mse")
    assert float(jnp.abs(hybrid["mean"]).min()) > 0 and float(jnp.abs(hybrid["var"]).max()) > 0
    np.testing.assert_allclose(hybrid["mean"], mse_only["mean"], rtol=1e-5)  # vb's mean is stop-gradient'ed
    assert float(jnp.abs(mse_only["var"]).max()) == 0
