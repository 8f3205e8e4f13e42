"""Closed forms of the paper's Gaussian-mixture theory (paper section 7), batched over leading axes.

Setting, in the paper's symbols: class k of the data is N(mu_k, I) in R^d; a dataset holds n_k samples of it, with
empirical mean mu_hat_k and biased (divide by n_k) covariance Sigma_k, eigenvalues lambda_i. Training a linear
denoiser eps = W_t x_t + V_t c(y) on conditions c(y) + gamma*xi, the model generates (T -> inf)

  clean (gamma = 0): N(mu_hat_k, Sigma_k)
  corrupted:         N(mu_hat_k / (1 + gamma^2), Sigma_k + a I),   a = gamma^2 ||mu_hat_k||^2 / (1 + gamma^2).

Two readings of the corrupted covariance are offered, because they differ by a factor of about d:

* ``"paper"``: Sigma_k + a I, as printed. It is the reading that reproduces the paper's numeric check
  (d=16, n_k=200: +0.0057, +0.0179, -0.0146 at gamma 0.05, 0.1, 0.2), so it is the default. The check also fixes
  the normalisation that section 7 leaves open: Sigma_k is biased (an unbiased one misses gamma = 0.1 by ~3.7
  standard errors). a uses ||mu_hat_k||^2 as printed; the true ||mu_k||^2 would fit the check equally well.
* ``"exact"``: Sigma_k + a u u^T with u = mu_hat_k / ||mu_hat_k||. This is what the minimiser of the stated
  training objective actually generates: only the condition's own coordinate correlates with x, so the noise on it
  leaks variance along mu_hat_k alone. ``simulate`` fits that minimiser numerically and lands on this reading.
  Sigma_k + a I is its upper bound in the Loewner order (u u^T <= I).

Everything here assumes Sigma_k is full rank (n_k > d); the paper's extra assumption lambda_i in (0, 1] is not
needed by any formula and is not met by sample covariances, whose eigenvalues spread around 1.
"""

from __future__ import annotations

import numpy as np

READINGS = ("paper", "exact")


def spread(mu_hat: np.ndarray, gamma: np.ndarray | float) -> np.ndarray:
    """a = gamma^2 ||mu_hat_k||^2 / (1 + gamma^2): the variance the corrupted model adds."""
    gamma2 = np.square(gamma)
    return gamma2 * np.sum(np.square(mu_hat), axis=-1) / (1.0 + gamma2)


def corrupted_covariance(mu_hat: np.ndarray, sigma: np.ndarray, gamma: np.ndarray | float,
                         reading: str = "paper") -> np.ndarray:
    """Covariance of the corrupted model's generated law (T -> inf): Sigma_k + a I, or Sigma_k + a u u^T."""
    a = spread(mu_hat, gamma)[..., None, None]
    if reading == "paper":
        return sigma + a * np.eye(sigma.shape[-1])
    if reading == "exact":
        u = mu_hat / np.linalg.norm(mu_hat, axis=-1, keepdims=True)
        return sigma + a * u[..., :, None] * u[..., None, :]
    raise ValueError(f"reading must be one of {READINGS}, not {reading!r}")


def generated_law(mu_hat: np.ndarray, sigma: np.ndarray, gamma: np.ndarray | float, reading: str = "paper",
                  horizon: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of what the optimal model generates from x_T ~ N(0, I) by the probability-flow ODE.

    The target law is N(m, C) with m = mu_hat_k / (1 + gamma^2) and C from ``corrupted_covariance`` (gamma = 0 is
    the clean model). At a finite horizon T, per eigendirection of C with eigenvalue lambda (lambda -> lambda + a
    for the corrupted model, in the paper's words), the mean is scaled by
    1 - sqrt(lambda) e^{-T} / sqrt(1 + (lambda - 1) e^{-2T}) and the variance is lambda / (1 + (lambda - 1) e^{-2T}).
    These are the paper's finite-T factors; the simulation's solver error is measured against them.
    """
    mean = mu_hat / np.asarray(1.0 + np.square(gamma))[..., None]
    cov = corrupted_covariance(mu_hat, sigma, gamma, reading)
    if np.isinf(horizon):
        return mean, cov
    lam, vectors = np.linalg.eigh(cov)
    decay = np.exp(-horizon)
    spread_at_t = 1.0 + (lam - 1.0) * decay**2
    mean_factor = 1.0 - np.sqrt(lam) * decay / np.sqrt(spread_at_t)
    return (_in_basis(vectors, mean_factor) @ mean[..., None])[..., 0], _in_basis(vectors, lam / spread_at_t)


def _in_basis(vectors: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The symmetric matrix with these eigenvectors (columns) and eigenvalues."""
    return (vectors * values[..., None, :]) @ np.swapaxes(vectors, -1, -2)


def gaussian_entropy(cov: np.ndarray) -> np.ndarray:
    """H(N(m, C)) = 1/2 log det(2 pi e C), the entropy Theorem 1 compares."""
    d = cov.shape[-1]
    return 0.5 * (d * np.log(2.0 * np.pi * np.e) + np.linalg.slogdet(cov)[1])


def entropy_gain(mu_hat: np.ndarray, sigma: np.ndarray, gamma: np.ndarray | float,
                 reading: str = "paper") -> np.ndarray:
    """Theorem 1: H_corrupt - H_clean = 1/2 sum_i log(1 + a / lambda_i) (paper reading), which is Theta(gamma^2 d).

    The exact reading adds a only along u, so the gain is 1/2 log(1 + a u^T Sigma_k^{-1} u) = Theta(gamma^2),
    with no factor d (matrix determinant lemma).
    """
    a = spread(mu_hat, gamma)
    if reading == "paper":
        lam = np.linalg.eigvalsh(sigma)
        return 0.5 * np.sum(np.log1p(a[..., None] / lam), axis=-1)
    if reading == "exact":
        u = mu_hat / np.linalg.norm(mu_hat, axis=-1, keepdims=True)
        quad = np.sum(u * np.linalg.solve(sigma, u[..., None])[..., 0], axis=-1)
        return 0.5 * np.log1p(a * quad)
    raise ValueError(f"reading must be one of {READINGS}, not {reading!r}")


def w2_squared(mean: np.ndarray, cov: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """W2^2(N(mu_k, I), N(m, C)) = ||m - mu_k||^2 + d + sum_i lambda_i - 2 sum_i sqrt(lambda_i), lambda_i of C.

    Theorem 2's expression (the true class has identity covariance, so the cross term is tr C^{1/2}).
    """
    lam = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    d = cov.shape[-1]
    return np.sum(np.square(mean - mu), axis=-1) + d + np.sum(lam - 2.0 * np.sqrt(lam), axis=-1)


def w2_gain(mu: np.ndarray, mu_hat: np.ndarray, sigma: np.ndarray, gamma: np.ndarray | float,
            reading: str = "paper") -> np.ndarray:
    """Theorem 2's quantity for one dataset: W2^2(P, Q_clean) - W2^2(P, Q_corrupt), T -> inf.

    Positive means corruption brought the generated law closer to the true class. Theorem 2 says its expectation
    over datasets is Omega(gamma^2 d / n_k) > 0 for gamma = O(1 / sqrt(n_k)); larger gamma makes it negative, since
    the mean shrinkage mu_hat_k / (1 + gamma^2) and the added spread a eventually cost more than they repair.
    """
    clean = w2_squared(mu_hat, sigma, mu)
    return clean - w2_squared(*generated_law(mu_hat, sigma, gamma, reading), mu)
