"""TopP&R (Kim et al., NeurIPS 2023): precision and recall on supports that keep only the
statistically significant part of each feature set, so that outliers do not inflate either.

For each set (real X, generated Y), following the authors' ``top_pr`` package (0.2.1) on features of
more than three dimensions:
1. Features are first projected to ``PROJECTED_DIM`` dimensions by a fixed random Gaussian matrix
   (Xavier-normal, as theirs; drawn here from ``numpy`` with ``PROJECTION_SEED``, so the projected
   values differ from theirs, which come from torch's generator).
2. Bandwidth h: for each point i but the last k, the distance to its k-th nearest point among the
   points after it (k = 5 x dimension), and h the lower median of those distances (their "balloon
   estimator", with its ordering kept).
3. A cosine-kernel density estimate at the set's own points, p(x) = (1/n) (pi / 4h)^d
   sum_j cos(pi/2 ||x - x_j|| / h) over ||x - x_j|| <= h, and a confidence band c: the (1 - alpha)
   quantile over ``BOOTSTRAPS`` bootstrap resamples of max_x |p(x) - p*(x)|. A point is significant
   where p(x) > c.
4. Precision: the share of significant generated points that also lie in the real set's support
   (the real KDE at that point above the real band); recall the same with the sets swapped; F1 their
   harmonic mean (0 when either is below 1e-4, as theirs).

Their code computes every distance matrix whole; here it runs in blocks of ``BLOCK`` rows, and the
bootstrap resamples become weights on one kernel matrix (a resample is a count per point), so memory
stays at BLOCK x n and each matrix is computed once. The bootstrap draws come from one
``numpy.random.RandomState(seed)``, real set first, as their global generator after their seeding.
The real set's bandwidth, density and band are kept for the next generated set (``reference_memo``).
"""

from __future__ import annotations

import numpy as np

from diffcorrupt.evaluation.manifold import squared_distances
from diffcorrupt.evaluation.reference_memo import from_reference

ALPHA = 0.1
BOOTSTRAPS = 10
PROJECTED_DIM = 32
PROJECTION_SEED = 99
SEED = 42
BLOCK = 2048


def _distances(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.sqrt(squared_distances(queries, points, np.float64))


def balloon_bandwidth(points: np.ndarray, k: int) -> float:
    """The lower median over points i < n - k of the distance to the k-th nearest of the points after i."""
    n = len(points)
    if n <= k + 1:
        raise ValueError(f"TopP&R needs more than {k + 1} points per set at this dimension, got {n}")
    radii = np.empty(n - k)
    for start in range(0, n - k, BLOCK):
        rows = np.arange(start, min(start + BLOCK, n - k))
        block = _distances(points[rows], points)
        block[np.arange(n)[None, :] <= rows[:, None]] = np.inf  # only the points after each row
        radii[rows] = np.partition(block, k - 1, axis=1)[:, k - 1]
    return float(np.sort(radii)[int(len(radii) * 0.5) - 1])


def cosine_kde(points: np.ndarray, queries: np.ndarray, h: float, weights: np.ndarray | None = None) -> np.ndarray:
    """The cosine-kernel density of ``points`` at ``queries``; with ``weights`` (n, w), one column per weighting
    of the points (a bootstrap resample as counts), shape (queries, w)."""
    weights = np.ones((len(points), 1)) if weights is None else weights
    scale = (np.pi / (4.0 * h)) ** points.shape[1] / len(points)
    out = np.empty((len(queries), weights.shape[1]))
    for start in range(0, len(queries), BLOCK):
        distance = _distances(queries[start:start + BLOCK], points)
        kernel = np.where(distance <= h, np.cos(np.pi / 2.0 * np.minimum(distance / h, 1.0)), 0.0)
        out[start:start + BLOCK] = scale * (kernel @ weights)
    return out


def _resample_counts(n: int, rng: np.random.RandomState) -> np.ndarray:
    """``BOOTSTRAPS`` resamples of n points with replacement, as counts per point (n, BOOTSTRAPS)."""
    return np.stack([np.bincount(rng.choice(np.arange(n), size=n, replace=True), minlength=n)
                     for _ in range(BOOTSTRAPS)], axis=1)


def significance(points: np.ndarray, h: float, counts: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, float]:
    """The KDE of ``points`` at themselves and its confidence band over the bootstrap resamples ``counts``."""
    n = len(points)
    densities = cosine_kde(points, points, h, np.concatenate([np.ones((n, 1)), counts], axis=1))
    theta = np.sqrt(n) * np.max(np.abs(densities[:, :1] - densities[:, 1:]), axis=0)
    return densities[:, 0], float(np.quantile(theta, 1.0 - alpha)) / np.sqrt(n)


def project(features: np.ndarray, dim: int = PROJECTED_DIM, seed: int = PROJECTION_SEED) -> np.ndarray:
    """A fixed Xavier-normal random projection to ``dim`` dimensions; features of ``dim`` or fewer are kept."""
    if features.shape[1] <= dim:
        return features
    std = np.sqrt(2.0 / (features.shape[1] + dim))
    return features @ (np.random.default_rng(seed).standard_normal((features.shape[1], dim)) * std)


def min_points(dim: int, random_projection: bool = True) -> int:
    """The fewest points per set the bandwidth estimate can work with, for features of ``dim`` dimensions."""
    return 5 * (min(dim, PROJECTED_DIM) if random_projection else dim) + 2


def top_pr(real: np.ndarray, fake: np.ndarray, *, alpha: float = ALPHA, random_projection: bool = True,
           seed: int = SEED) -> dict[str, float]:
    """``top_precision``, ``top_recall`` and ``top_f1`` of ``fake`` (N2, D) against ``real`` (N1, D)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features must be (N1, D) and (N2, D), got {real.shape} and {fake.shape}")
    if random_projection:
        real, fake = project(real), project(fake)
    if real.shape[1] <= 3:
        raise ValueError("TopP&R's low-dimensional path (a grid and persistent homology) is not implemented; "
                         "use features of more than 3 dimensions")
    k = 5 * real.shape[1]
    rng = np.random.RandomState(seed)
    real_counts = _resample_counts(len(real), rng)  # drawn every time: the generated set's draws follow them

    def real_side():
        h = balloon_bandwidth(real, k)
        return (h, *significance(real, h, real_counts, alpha))

    h_real, real_density, real_band = from_reference("top_pr", real, real_side, alpha, seed)
    h_fake = balloon_bandwidth(fake, k)
    fake_density, fake_band = significance(fake, h_fake, _resample_counts(len(fake), rng), alpha)
    real_significant, fake_significant = real_density > real_band, fake_density > fake_band
    fake_at_real = cosine_kde(fake, real, h_fake)[:, 0] > fake_band
    real_at_fake = cosine_kde(real, fake, h_real)[:, 0] > real_band
    precision = float(np.sum(fake_significant & real_at_fake) / max(np.sum(fake_significant), 1))
    recall = float(np.sum(real_significant & fake_at_real) / max(np.sum(real_significant), 1))
    f1 = 2.0 / (1.0 / precision + 1.0 / recall) if precision > 1e-4 and recall > 1e-4 else 0.0
    return {"top_precision": precision, "top_recall": recall, "top_f1": f1}
