"""Samplers against the exact denoiser of Gaussian (and Gaussian-mixture) data, and guidance.

For data N(mu, Sigma) the optimal eps-prediction is known in closed form,
eps*(x_t, t) = sqrt(1 - ab_t) Sigma_t^-1 (x_t - sqrt(ab_t) mu), Sigma_t = ab_t Sigma + (1 - ab_t) I,
so a correct sampler driven by it must reproduce mu and Sigma up to sampling error and its own
(small, known) discretisation error. "Images" are (B, 1, 1, d).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.diffusion.samplers import guided, leading_timesteps, sample, space_timesteps
from diffcorrupt.diffusion.schedules import make_schedule

N = 4096
N_SIGMA = 5.0  # tolerance in standard errors of the sample statistics

MU3 = np.array([1.0, -0.5, 0.3])
# Eigenvalues 0.64 to 1.66: a spread the samplers resolve to well within the tolerances below (their
# discretisation error grows in low-variance directions; see test_deterministic_samplers_converge).
SIGMA3 = np.array([[1.0, 0.3, 0.1], [0.3, 1.5, -0.2], [0.1, -0.2, 0.8]])


class Gaussian:
    """N(mu, Sigma) data and its exact denoiser under ``schedule``."""

    def __init__(self, mu, sigma):
        self.mu, self.sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(self.sigma)

    def _parts(self, schedule, x, t):
        ab = schedule.alphas_cumprod[t][:, None]
        centred = (x[:, 0, 0, :] - jnp.sqrt(ab) * self.mu) @ self.eigenvectors
        inverse = 1.0 / (ab * self.eigenvalues + 1.0 - ab)  # Sigma_t^-1 in the eigenbasis
        eps = jnp.sqrt(1.0 - ab) * (centred * inverse) @ self.eigenvectors.T
        x0 = self.mu + jnp.sqrt(ab) * (centred * self.eigenvalues * inverse) @ self.eigenvectors.T
        return eps.astype(jnp.float32), x0.astype(jnp.float32), ab.astype(jnp.float32)

    def log_density(self, schedule, x, t):
        """log N(x_t; sqrt(ab) mu, Sigma_t) up to a constant shared by all Gaussians of this dimension."""
        ab = schedule.alphas_cumprod[t][:, None]
        centred = (x[:, 0, 0, :] - jnp.sqrt(ab) * self.mu) @ self.eigenvectors
        variances = ab * self.eigenvalues + 1.0 - ab
        return -0.5 * jnp.sum(centred**2 / variances + jnp.log(variances), axis=-1)

    def eps_fn(self, schedule):
        return lambda x, t: self._parts(schedule, x, t)[0][:, None, None, :]

    def v_fn(self, schedule):
        def v(x, t):
            eps, x0, ab = self._parts(schedule, x, t)
            return (jnp.sqrt(ab) * eps - jnp.sqrt(1.0 - ab) * x0)[:, None, None, :]

        return v


class Mixture:
    """sum_k w_k N(mu_k, Sigma_k); eps* is the posterior-weighted mixture of the components' eps*."""

    def __init__(self, weights, components):
        self.log_weights, self.components = np.log(np.asarray(weights)), components

    def eps_fn(self, schedule):
        def eps(x, t):
            logits = jnp.stack([c.log_density(schedule, x, t) for c in self.components], -1) + self.log_weights
            responsibilities = jax.nn.softmax(logits, axis=-1)[:, None, None, None, :]
            per_component = jnp.stack([c.eps_fn(schedule)(x, t) for c in self.components], -1)
            return jnp.sum(responsibilities * per_component, axis=-1)

        return eps


def initial_noise(d, n=N, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, 1, 1, d))


def keys(n=N, seed=2):
    return jax.random.split(jax.random.key(seed), n)


def run(denoise_fn, schedule, noise, rng=None, **options):
    """``sample`` under jit, with the denoiser and options closed over."""
    return jax.jit(lambda noise, rng: sample(denoise_fn, noise, schedule, rng=rng, **options))(noise, rng)


def assert_matches_gaussian(samples, mu, sigma):
    """Whitened samples z = Sigma^-1/2 (x - mu) must have mean 0 and covariance I within N_SIGMA s.e."""
    x = np.asarray(samples, np.float64).reshape(len(samples), -1)
    n, d = x.shape
    eigenvalues, eigenvectors = np.linalg.eigh(sigma)
    z = (x - mu) @ eigenvectors @ np.diag(eigenvalues**-0.5) @ eigenvectors.T
    mean_error = np.abs(z.mean(0)).max()
    assert mean_error < N_SIGMA / np.sqrt(n), f"whitened mean off by {mean_error:.4f}"
    covariance_error = np.abs(np.cov(z.T) - np.eye(d)) / np.where(np.eye(d, dtype=bool), np.sqrt(2 / n), np.sqrt(1 / n))
    assert covariance_error.max() < N_SIGMA, f"whitened covariance off by {covariance_error.max():.1f} s.e."


SAMPLER_OPTIONS = {
    "ddpm-250": dict(sampler="ddpm", steps=250),
    "ddim-100": dict(sampler="ddim", steps=100),
    "ddim-250-eta1": dict(sampler="ddim", steps=250, eta=1.0),
    "dpm-20": dict(sampler="dpm", steps=20),
}


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("options", SAMPLER_OPTIONS.values(), ids=SAMPLER_OPTIONS.keys())
def test_samplers_reproduce_a_gaussian(schedule_name, options):
    schedule = make_schedule(schedule_name)
    data = Gaussian(MU3, SIGMA3)
    samples = run(data.eps_fn(schedule), schedule, initial_noise(3), keys(), **options)
    assert samples.shape == (N, 1, 1, 3) and samples.dtype == jnp.float32
    assert_matches_gaussian(samples, MU3, SIGMA3)


@pytest.mark.parametrize("options", [SAMPLER_OPTIONS["ddpm-250"], SAMPLER_OPTIONS["dpm-20"]], ids=["ddpm", "dpm"])
def test_v_prediction(options):
    mu = np.array([0.5, -1.0, 0.0, 2.0])
    sigma = np.diag([0.6, 1.0, 2.0, 0.8]) + 0.1
    schedule = make_schedule("cosine")
    data = Gaussian(mu, sigma)
    from_v = run(data.v_fn(schedule), schedule, initial_noise(4), keys(), prediction="v", **options)
    assert_matches_gaussian(from_v, mu, sigma)
    from_eps = run(data.eps_fn(schedule), schedule, initial_noise(4), keys(), **options)
    np.testing.assert_allclose(from_v, from_eps, atol=2e-3)


@pytest.mark.parametrize("options", [SAMPLER_OPTIONS["ddpm-250"], SAMPLER_OPTIONS["ddim-100"],
                                     SAMPLER_OPTIONS["dpm-20"]], ids=["ddpm", "ddim", "dpm"])
def test_samplers_reproduce_a_gaussian_mixture(options):
    weights = np.array([0.3, 0.7])
    components = [Gaussian([-2.0, 0.0], 0.25 * np.eye(2)), Gaussian([2.0, 1.0], [[0.5, 0.2], [0.2, 0.3]])]
    schedule = make_schedule("linear")
    samples = np.asarray(run(Mixture(weights, components).eps_fn(schedule), schedule, initial_noise(2), keys(),
                             **options))[:, 0, 0, :]
    second = samples[:, 0] > 0  # the components are 4 standard deviations apart along the first axis
    assert abs(second.mean() - weights[1]) < N_SIGMA * np.sqrt(weights[0] * weights[1] / N)
    for component, members in zip(components, [samples[~second], samples[second]]):
        variances = np.diag(component.sigma)
        assert np.all(np.abs(members.mean(0) - component.mu) < N_SIGMA * np.sqrt(variances / len(members)))
        assert np.all(np.abs(members.var(0) / variances - 1) < N_SIGMA * np.sqrt(2 / len(members)))


def test_ddim_and_dpm_solver_are_the_same_deterministic_map():
    schedule = make_schedule("linear")
    data = Gaussian(MU3, SIGMA3)
    noise = initial_noise(3, n=256)
    ddim = run(data.eps_fn(schedule), schedule, noise, sampler="ddim", steps=500)
    dpm = run(data.eps_fn(schedule), schedule, noise, sampler="dpm", steps=20)
    # DDIM-500 is within 0.2% (rms) of DDIM-1000 here; DPM-Solver's 20 steps add ~1.4%, mostly from
    # the first-order final step into t = 0.
    assert float(jnp.sqrt(jnp.mean((dpm - ddim) ** 2))) < 0.02
    np.testing.assert_allclose(dpm, ddim, atol=0.08)
    noise_changed = run(data.eps_fn(schedule), schedule, noise + 0.1, sampler="dpm", steps=20)
    assert float(jnp.abs(noise_changed - dpm).mean()) > 0.05


@pytest.mark.parametrize("options, tolerance", [(dict(sampler="ddim", steps=1000), 1e-2),
                                                (dict(sampler="dpm", steps=200), 2e-3)], ids=["ddim", "dpm"])
def test_deterministic_samplers_converge_to_the_exact_map(options, tolerance):
    """Noise-free: for Gaussian data the sampler is an affine map x_T -> A x_T + c, read off from
    d + 1 inputs, and the probability-flow ODE from t = T-1 has the closed form
    x_0 = mu + Sigma^1/2 Sigma_T^-1/2 (x_T - sqrt(ab_T) mu); x_T ~ N(0, I) is pushed to
    N(mu - Sigma^1/2 Sigma_T^-1/2 sqrt(ab_T) mu, Sigma Sigma_T^-1). DPM-Solver++ converges at second order."""
    schedule = make_schedule("linear")
    data = Gaussian(MU3, SIGMA3)
    inputs = jnp.concatenate([jnp.zeros((1, 3)), jnp.eye(3)])[:, None, None, :]
    outputs = np.asarray(run(data.eps_fn(schedule), schedule, inputs, **options), np.float64)[:, 0, 0, :]
    offset, matrix = outputs[0], (outputs[1:] - outputs[0]).T
    ab = schedule.alphas_cumprod_f64[-1]
    values, vectors = data.eigenvalues, data.eigenvectors
    exact_matrix = vectors @ np.diag(np.sqrt(values / (ab * values + 1 - ab))) @ vectors.T
    whiten = vectors @ np.diag(values**-0.5) @ vectors.T
    np.testing.assert_allclose(whiten @ offset, whiten @ (MU3 - exact_matrix @ (np.sqrt(ab) * MU3)), atol=tolerance)
    np.testing.assert_allclose(whiten @ matrix @ matrix.T @ whiten, whiten @ exact_matrix @ exact_matrix.T @ whiten,
                               atol=tolerance)


@pytest.mark.parametrize("options", [dict(sampler="ddpm", steps=50), dict(sampler="ddim", steps=50, eta=1.0),
                                     dict(sampler="dpm", steps=10)], ids=["ddpm", "ddim", "dpm"])
def test_each_sample_depends_only_on_its_own_noise_and_key(options):
    schedule = make_schedule("cosine")
    denoise_fn = Gaussian(MU3, SIGMA3).eps_fn(schedule)
    noise, rng = initial_noise(3, n=4), keys(n=4)
    batch = run(denoise_fn, schedule, noise, rng, **options)
    alone = run(denoise_fn, schedule, noise[:1], rng[:1], **options)
    np.testing.assert_allclose(batch[:1], alone, rtol=1e-5, atol=1e-6)
    others_changed = run(denoise_fn, schedule, noise.at[1:].multiply(-1.0), keys(n=4, seed=3).at[0].set(rng[0]),
                         **options)
    np.testing.assert_allclose(others_changed[:1], alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(batch[1:], others_changed[1:])


def test_ddpm_learned_range_ends():
    schedule = make_schedule("linear")
    data = Gaussian(MU3, SIGMA3)
    noise, rng = initial_noise(3, n=512), keys(n=512)

    def with_variance(value):
        return lambda x, t: jnp.concatenate([data.eps_fn(schedule)(x, t), jnp.full_like(x, value)], -1)

    fixed_small = run(data.eps_fn(schedule), schedule, noise, rng, sampler="ddpm", steps=100)
    learned_min = run(with_variance(-1.0), schedule, noise, rng, sampler="ddpm", steps=100, learned_sigma=True)
    learned_max = run(with_variance(1.0), schedule, noise, rng, sampler="ddpm", steps=100, learned_sigma=True)
    np.testing.assert_allclose(learned_min, fixed_small, rtol=1e-5, atol=1e-5)
    assert np.trace(np.cov(np.asarray(learned_max)[:, 0, 0].T)) > np.trace(np.cov(np.asarray(fixed_small)[:, 0, 0].T))


def test_timestep_grids():
    assert space_timesteps(10, 4).tolist() == [0, 3, 6, 9]
    adm_250 = space_timesteps(1000, 250)
    assert len(adm_250) == 250 and adm_250[0] == 0 and adm_250[-1] == 999 and np.all(np.diff(adm_250) > 0)
    assert space_timesteps(1000, 1000).tolist() == list(range(1000))
    assert leading_timesteps(1000, 50).tolist() == list(range(0, 1000, 20))
    assert len(np.unique(leading_timesteps(1000, 300))) == 300
    with pytest.raises(ValueError, match="steps"):
        space_timesteps(1000, 1001)


def test_argument_errors():
    schedule = make_schedule("linear", 100)
    noise = initial_noise(3, n=2)
    denoise_fn = Gaussian(MU3, SIGMA3).eps_fn(schedule)
    with pytest.raises(ValueError, match="ddpm, ddim, dpm"):
        sample(denoise_fn, noise, schedule, sampler="euler", steps=10)
    with pytest.raises(ValueError, match="one typed key per sample"):
        sample(denoise_fn, noise, schedule, sampler="ddpm", steps=10)
    with pytest.raises(ValueError, match="one typed key per sample"):
        sample(denoise_fn, noise, schedule, sampler="ddim", steps=10, eta=0.5, rng=jax.random.key(0))
    with pytest.raises(ValueError, match="DDIM's"):
        sample(denoise_fn, noise, schedule, sampler="dpm", steps=10, eta=0.5)
    with pytest.raises(ValueError, match=r"must have shape \(.*6\)"):
        sample(denoise_fn, noise, schedule, sampler="ddim", steps=10, learned_sigma=True)


# --- classifier-free guidance --------------------------------------------------------------------


def two_headed(x, t, null_mask):
    """A 4-channel model with a learned variance: conditional and null outputs differ per channel."""
    null = null_mask[:, None, None, None]
    eps = jnp.where(null, 0.5 * x, x + jnp.array([1.0, 2.0, 3.0, 4.0]))
    variance = jnp.where(null, -x, x) * 0.1 + t[:, None, None, None] / 1000
    return jnp.concatenate([eps, variance], -1)


def test_guidance_scale_one_is_the_conditional_output():
    x = jax.random.normal(jax.random.key(0), (3, 2, 2, 4))
    t = jnp.array([5, 500, 999])
    conditional = two_headed(x, t, jnp.zeros(3, bool))
    np.testing.assert_allclose(guided(two_headed, 1.0, 4)(x, t), conditional, rtol=0, atol=0)


def test_guidance_guides_every_channel_with_one_model_call():
    x = jax.random.normal(jax.random.key(0), (3, 2, 2, 4))
    t = jnp.array([5, 500, 999])
    calls = []

    def model_fn(x, t, null_mask):
        calls.append(null_mask)
        return two_headed(x, t, null_mask)

    out = guided(model_fn, 4.0, 4)(x, t)
    (null_mask,) = calls
    np.testing.assert_array_equal(null_mask, [False] * 3 + [True] * 3)
    conditional, unconditional = two_headed(x, t, jnp.zeros(3, bool)), two_headed(x, t, jnp.ones(3, bool))
    expected = unconditional[..., :4] + 4.0 * (conditional[..., :4] - unconditional[..., :4])
    np.testing.assert_allclose(out[..., :4], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[..., 4:], conditional[..., 4:])
