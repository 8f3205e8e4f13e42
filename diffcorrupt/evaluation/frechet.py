"""Fréchet distance between Gaussian fits of feature sets: FID (pool_3 features) and sFID (spatial features).

This follows the ADM evaluator (openai/guided-diffusion ``evaluations/evaluator.py``), itself the TTUR /
pytorch-fid formula, so numbers are comparable with published ones:

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)).
"""

import numpy as np
from absl import logging
from scipy import linalg

# ADM (and pytorch-fid) accept a matrix square root whose diagonal has imaginary parts up to this size
# and keep the real part: sqrtm of a product of two PSD matrices is real in exact arithmetic, and the
# Schur method leaves imaginary round-off that grows with the dimension and the conditioning. Anything
# larger means the product is far from PSD (broken statistics), which is an error, not round-off.
IMAGINARY_TOLERANCE = 1e-3

# ADM's sFID keeps the first 7 channels of Inception's mixed_6/conv output (N, 17, 17, 192), which gives
# 17 * 17 * 7 = 2023 features: about as many as pool_3's 2048, so the covariance stays tractable.
SPATIAL_CHANNELS = 7


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, unbiased, one row per sample) of ``features`` of shape (N, D).

    ADM takes ``np.cov(rowvar=False)`` of the float32 activations; the mean is also taken in float64 here
    (ADM keeps it float32), which changes FID only at the level of float32 round-off.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    When the covariance product is so close to singular that its square root is not finite (typically
    fewer samples than dimensions), ``eps`` is added to both diagonals and the root retried, as ADM does.
    If even that root is not finite this raises instead of returning NaN as ADM would.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"covariances differ in shape: {sigma1.shape} vs {sigma2.shape}")
    if sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"covariance shape {sigma1.shape} does not match mean shape {mu1.shape}")

    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        logging.warning("the covariance product is singular; adding %g to the diagonals of both covariances", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError(f"the covariance product has no finite square root even with {eps} added to the diagonals")

    if np.iscomplexobj(covmean):
        if np.max(np.abs(np.diagonal(covmean).imag)) > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"the square root of the covariance product has an imaginary component of "
                f"{np.max(np.abs(covmean.imag)):.3g}; the statistics are not valid covariances"
            )
        covmean = covmean.real

    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def spatial_features(spatial: np.ndarray) -> np.ndarray:
    """sFID features from Inception mixed_6/conv activations: (N, 17, 17, C) NHWC -> (N, 17 * 17 * 7).

    The channel slice comes before the flatten, in NHWC order, as in ADM, so the feature order matches
    ADM's precomputed reference statistics (``mu_s``, ``sigma_s``) and they can be used as they are.
    """
    spatial = np.asarray(spatial)
    if spatial.ndim != 4 or spatial.shape[-1] < SPATIAL_CHANNELS:
        raise ValueError(
            f"spatial activations must be NHWC with at least {SPATIAL_CHANNELS} channels, got {spatial.shape}"
        )
    return spatial[..., :SPATIAL_CHANNELS].reshape(spatial.shape[0], -1)
