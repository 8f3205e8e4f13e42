"""RMD against its closed form on feature sets whose Gaussians are known exactly."""

import numpy as np
import pytest

from diffcorrupt.evaluation.rmd import fit_gaussians, relative_mahalanobis, rmd_scores, top_share_mean

A, S = 3.0, 0.5


def _two_classes() -> tuple[np.ndarray, np.ndarray]:
    """Classes centred at (-A, 0) and (A, 0), each with points at centre +- S on either axis: the
    pooled within-class covariance is diag(S^2/2, S^2/2), the covariance of all points
    diag(A^2 + S^2/2, S^2/2), both exactly."""
    offsets = np.array([[S, 0], [-S, 0], [0, S], [0, -S]])
    features = np.concatenate([offsets + [-A, 0], offsets + [A, 0]])
    return features, np.repeat([0, 1], 4)


def _closed_form(z: np.ndarray, centre_x: float) -> np.ndarray:
    within, overall_x = S**2 / 2, A**2 + S**2 / 2
    return ((z[:, 0] - centre_x) ** 2 + z[:, 1] ** 2) / within - (z[:, 0] ** 2 / overall_x + z[:, 1] ** 2 / within)


def test_fit_recovers_the_exact_gaussians():
    gaussians = fit_gaussians(*_two_classes())
    np.testing.assert_allclose(gaussians.class_means, [[-A, 0], [A, 0]], atol=1e-12)
    np.testing.assert_allclose(gaussians.mean, [0, 0], atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(gaussians.shared_precision), np.diag([S**2 / 2] * 2), rtol=1e-4)
    np.testing.assert_allclose(np.linalg.inv(gaussians.precision), np.diag([A**2 + S**2 / 2, S**2 / 2]), rtol=1e-4)


# The ridge (1e-6 of the mean eigenvalue) moves each Mahalanobis term by up to 1e-4 of itself; the
# two terms partly cancel, so the difference is compared at that share of the larger term.
def _close(actual: np.ndarray, expected: np.ndarray, z: np.ndarray) -> None:
    scale = 2 * (np.sum(z**2, axis=1) + A**2) / (S**2 / 2) + 1.0  # bounds the class term
    assert np.all(np.abs(actual - expected) <= 1e-4 * scale), np.max(np.abs(actual - expected) / scale)


def test_rmd_matches_the_closed_form_at_the_given_class():
    z = np.random.default_rng(0).normal(size=(50, 2)) * 2
    gaussians = fit_gaussians(*_two_classes())
    _close(relative_mahalanobis(gaussians, z, np.ones(50, int)), _closed_form(z, A), z)
    _close(relative_mahalanobis(gaussians, z, np.zeros(50, int)), _closed_form(z, -A), z)


def test_without_labels_the_nearest_class_scores():
    z = np.array([[A + 0.1, 0.2], [-A, -0.3]])
    expected = np.minimum(_closed_form(z, A), _closed_form(z, -A))
    _close(relative_mahalanobis(fit_gaussians(*_two_classes()), z), expected, z)


def test_atypical_samples_score_higher_than_typical_ones():
    rng = np.random.default_rng(1)
    real_labels = rng.integers(0, 4, 4000)
    centres = rng.normal(size=(4, 8)) * 3
    real = centres[real_labels] + rng.normal(size=(4000, 8))
    typical = centres[[0] * 200] + rng.normal(size=(200, 8))
    stretched = centres[[0] * 200] + 3 * rng.normal(size=(200, 8))
    numbers, scores = rmd_scores(real, real_labels, np.concatenate([typical, stretched]), np.zeros(400, int))
    assert scores[200:].mean() > scores[:200].mean() + 5
    assert numbers["rmd_top1pct"] >= np.percentile(scores, 99) > numbers["rmd_mean"]


def test_top_share_mean():
    assert top_share_mean(np.arange(1000)) == pytest.approx(994.5)
    assert top_share_mean(np.arange(50)[::-1]) == 49  # fewer than 100 scores: the largest alone
    with pytest.raises(ValueError, match="no scores"):
        top_share_mean(np.array([]))


def test_a_class_without_real_features_is_refused():
    features, labels = _two_classes()
    with pytest.raises(ValueError, match=r"classes \[1\] have no real features"):
        fit_gaussians(features, np.where(labels == 1, 2, labels))
