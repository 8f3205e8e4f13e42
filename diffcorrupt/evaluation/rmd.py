"""Relative Mahalanobis distance (RMD; Ren et al. 2021), the paper's measure of how far samples reach
into the low-density regions of the real distribution (Fig. 4 and 11g).

Fitted on real features with their classes: class Gaussians N(mu_k, Sigma) sharing one covariance
(the pooled within-class scatter) and one class-agnostic Gaussian N(mu_0, Sigma_0) of all features.
A feature z of class k scores

    RMD_k(z) = (z - mu_k)^T Sigma^-1 (z - mu_k) - (z - mu_0)^T Sigma_0^-1 (z - mu_0),

the class-conditional Mahalanobis distance with the part any image shares removed: large where z is
atypical for its class but not simply far from all data. Samples are scored at the class they were
generated for; without classes (caption runs), at the nearest class, min_k RMD_k (Ren et al.'s
out-of-distribution score). The paper reports the "top-1% RMD" without saying how the top 1% is
summarised; here it is the mean RMD of the 1% of samples that score highest (at least one sample),
so it grows when a model reaches further into the tails.

Covariances get a ridge of ``RIDGE`` times their mean eigenvalue before inversion: feature spaces
with more dimensions than well-spread points (ReLU features with dead units) are singular otherwise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg

from diffcorrupt.evaluation.reference_memo import from_reference

RIDGE = 1e-6
TOP_SHARE = 0.01


@dataclasses.dataclass(frozen=True)
class RmdGaussians:
    class_means: np.ndarray  # (K, D)
    shared_precision: np.ndarray  # (D, D): the inverse of the pooled within-class covariance
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D): the inverse of the covariance of all features


def _precision(covariance: np.ndarray) -> np.ndarray:
    ridge = RIDGE * max(float(np.trace(covariance)) / len(covariance), np.finfo(np.float64).tiny)
    return scipy.linalg.inv(covariance + ridge * np.eye(len(covariance)), check_finite=True)


def fit_gaussians(features: np.ndarray, labels: np.ndarray) -> RmdGaussians:
    """The class Gaussians (shared covariance) and the class-agnostic Gaussian of real ``features``
    (N, D) with integer ``labels`` (N,) in [0, K); every class needs at least one feature."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"features must be (N, D) and labels (N,), got {features.shape} and {labels.shape}")
    num_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=num_classes)
    if np.any(counts == 0):
        raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} have no real features to fit")
    class_means = np.zeros((num_classes, features.shape[1]))
    np.add.at(class_means, labels, features)
    class_means /= counts[:, None]
    within = features - class_means[labels]
    mean = features.mean(axis=0)
    centred = features - mean
    return RmdGaussians(class_means, _precision(within.T @ within / len(features)), mean,
                        _precision(centred.T @ centred / len(features)))


def _squared_mahalanobis(z: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(N, M) squared distances of the rows of ``z`` (N, D) to each of ``means`` (M, D)."""
    projected_z, projected_means = z @ precision, means @ precision
    return (np.einsum("nd,nd->n", projected_z, z)[:, None] - 2.0 * projected_z @ means.T
            + np.einsum("md,md->m", projected_means, means)[None, :])


def relative_mahalanobis(gaussians: RmdGaussians, features: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """RMD (N,) of ``features`` (N, D): at ``labels`` where given, else at the nearest class."""
    z = np.asarray(features, np.float64)
    class_part = _squared_mahalanobis(z, gaussians.class_means, gaussians.shared_precision)
    agnostic = _squared_mahalanobis(z, gaussians.mean[None], gaussians.precision)[:, 0]
    if labels is None:
        return class_part.min(axis=1) - agnostic
    labels = np.asarray(labels)
    if labels.shape != (len(z),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(gaussians.class_means):
        raise ValueError(f"labels must be (N,) = ({len(z)},) in [0, {len(gaussians.class_means)})")
    return class_part[np.arange(len(z)), labels] - agnostic


def top_share_mean(scores: np.ndarray, share: float = TOP_SHARE) -> float:
    """The mean of the ``share`` of ``scores`` that are largest (at least one score)."""
    scores = np.sort(np.asarray(scores, np.float64))
    if not len(scores):
        raise ValueError("no scores to summarise")
    return float(scores[-max(1, int(share * len(scores))):].mean())


def rmd_scores(real: np.ndarray, real_labels: np.ndarray, samples: np.ndarray,
               sample_labels: np.ndarray | None) -> tuple[dict[str, float], np.ndarray]:
    """The metrics JSON's RMD numbers and the per-sample RMD (kept for the density plot)."""
    gaussians = from_reference("rmd", real, lambda: fit_gaussians(real, real_labels), np.asarray(real_labels).tobytes())
    scores = relative_mahalanobis(gaussians, samples, sample_labels)
    return {"rmd_top1pct": top_share_mean(scores), "rmd_mean": float(scores.mean())}, scores
