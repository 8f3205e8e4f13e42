"""The metric formulas on inputs whose answers are known: closed forms, hand-computed cases, invariances."""

import numpy as np
import pytest
from scipy import linalg

from diffcorrupt.evaluation import frechet
from diffcorrupt.evaluation.frechet import frechet_distance, gaussian_stats, spatial_features
from diffcorrupt.evaluation.inception_score import inception_score
from diffcorrupt.evaluation.manifold import k_smallest_squared_distances, precision_recall
from diffcorrupt.evaluation.memorization import memorization


def _gaussian_w2_squared(mu1, s1, mu2, s2):
    """Closed form through the symmetric root (S1^1/2 S2 S1^1/2)^1/2, independent of the code's sqrtm(S1 S2)."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w)) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0.0, None)).sum()
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2.0 * cross)


def _random_gaussian(rng, dim):
    a = rng.normal(size=(dim, dim))
    return rng.normal(size=dim), a @ a.T / dim + 0.5 * np.eye(dim)


# --- Fréchet distance ---------------------------------------------------------------------------------


def test_frechet_distance_of_diagonal_gaussians_matches_the_analytic_formula():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_true_parameters_matches_the_symmetric_closed_form():
    rng = np.random.default_rng(1)
    (mu1, s1), (mu2, s2) = _random_gaussian(rng, 5), _random_gaussian(rng, 5)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_gaussian_w2_squared(mu1, s1, mu2, s2), rel=1e-9)


def test_fid_of_gaussian_samples_converges_to_the_closed_form():
    rng = np.random.default_rng(2)
    (mu1, s1), (mu2, s2) = _random_gaussian(rng, 4), _random_gaussian(rng, 4)
    a = rng.multivariate_normal(mu1, s1, size=100_000)
    b = rng.multivariate_normal(mu2, s2, size=100_000)
    # Over 20 seeds the estimate's standard deviation is about 0.02 here (FID about 3); 0.1 is 5 sigma.
    assert frechet_distance(*gaussian_stats(a), *gaussian_stats(b)) == pytest.approx(
        _gaussian_w2_squared(mu1, s1, mu2, s2), abs=0.1
    )


def test_fid_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(3).normal(size=(500, 64)) * 3.0 + 1.0
    mu, sigma = gaussian_stats(features)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)


def test_fid_is_symmetric():
    rng = np.random.default_rng(4)
    sa = gaussian_stats(rng.normal(size=(300, 32)))
    sb = gaussian_stats(rng.normal(size=(300, 32)) * 1.3 + 0.2)
    assert frechet_distance(*sa, *sb) == pytest.approx(frechet_distance(*sb, *sa), rel=1e-8)


def test_sfid_is_symmetric_with_fewer_samples_than_dimensions():
    # A 5x5 map keeps sqrtm fast; the reduction is the same as for Inception's 17x17 map.
    rng = np.random.default_rng(5)
    sa = gaussian_stats(spatial_features(rng.random((60, 5, 5, 10))))
    sb = gaussian_stats(spatial_features(rng.random((60, 5, 5, 10)) + 0.1))
    forward, backward = frechet_distance(*sa, *sb), frechet_distance(*sb, *sa)
    assert np.isfinite(forward)
    assert forward == pytest.approx(backward, rel=1e-6)


def test_near_singular_covariances_give_a_finite_distance():
    rng = np.random.default_rng(6)
    value = frechet_distance(*gaussian_stats(rng.normal(size=(10, 32))), *gaussian_stats(rng.normal(size=(10, 32))))
    assert np.isfinite(value) and value > 0


def test_a_non_finite_root_is_retried_with_eps_on_the_diagonals(monkeypatch):
    calls = []
    real_sqrtm = linalg.sqrtm

    def flaky_sqrtm(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(frechet.linalg, "sqrtm", flaky_sqrtm)
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])
    value = frechet_distance(np.zeros(2), s1, np.zeros(2), s2, eps=1e-3)
    np.testing.assert_allclose(calls[1], (s1 + 1e-3 * np.eye(2)) @ (s2 + 1e-3 * np.eye(2)))
    assert value == pytest.approx(2.0, abs=1e-2)  # 1 + 4 + 4 + 1 - 2 (2 + 2) with a slightly shifted root


def test_a_large_imaginary_part_is_an_error_and_a_small_one_is_dropped(monkeypatch):
    for imag, should_raise in ((1e-2, True), (1e-4, False)):
        monkeypatch.setattr(frechet.linalg, "sqrtm", lambda a, imag=imag: np.eye(2) + 1j * imag * np.eye(2))
        if should_raise:
            with pytest.raises(ValueError, match="imaginary"):
                frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))
        else:
            assert frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2)) == pytest.approx(0.0)


def test_frechet_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_gaussian_stats_is_float64_and_needs_two_samples():
    mu, sigma = gaussian_stats(np.arange(12, dtype=np.float32).reshape(4, 3))
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (3, 3)
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(np.ones((1, 3)))


def test_spatial_features_keep_the_first_seven_channels_in_nhwc_order():
    spatial = np.random.default_rng(7).random((2, 17, 17, 768), dtype=np.float32)
    features = spatial_features(spatial)
    assert features.shape == (2, 17 * 17 * 7)
    h, w, c = 5, 11, 6
    assert features[1, (h * 17 + w) * 7 + c] == spatial[1, h, w, c]
    with pytest.raises(ValueError, match="NHWC"):
        spatial_features(spatial[..., :6])


# --- precision and recall -----------------------------------------------------------------------------


def test_precision_recall_hand_computed_1d():
    # k=1 squared radii: real 0,1,3,7,12 -> 1,1,4,16,25; fake -1,5,30,31 -> 36,36,1,1.
    # fake -1 is on real 0's sphere and 5 inside real 7's ball (<= counts); 30 and 31 are outside: precision 2/4.
    # real 0,1 lie in fake -1's ball, 3 and 7 in fake 5's; 12 is 7 from 5 (49 > 36): recall 4/5.
    real = np.array([[0.0], [1.0], [3.0], [7.0], [12.0]])
    fake = np.array([[-1.0], [5.0], [30.0], [31.0]])
    assert precision_recall(real, fake, k=1) == {"precision": 0.5, "recall": 0.8}


def test_a_point_on_a_manifold_boundary_is_inside():
    result = precision_recall(np.array([[0.0], [1.0]]), np.array([[2.0], [10.0]]), k=1)
    assert result["precision"] == 0.5  # 2 is exactly at distance 1 = the radius of real point 1


def test_identical_sets_have_full_precision_and_recall():
    real = np.random.default_rng(8).normal(size=(200, 16))
    assert precision_recall(real, real.copy()) == {"precision": 1.0, "recall": 1.0}


def test_a_tight_cluster_inside_the_real_set_is_precise_but_does_not_cover_it():
    rng = np.random.default_rng(9)
    real = rng.normal(size=(500, 2))
    fake = 0.01 * rng.normal(size=(100, 2))
    result = precision_recall(real, fake)
    assert result["precision"] == 1.0
    assert result["recall"] < 0.05


def test_far_away_samples_have_zero_precision_and_recall():
    real = np.random.default_rng(10).normal(size=(200, 8))
    assert precision_recall(real, real + 100.0) == {"precision": 0.0, "recall": 0.0}


def test_batching_does_not_change_precision_recall():
    rng = np.random.default_rng(11)
    real, fake = rng.normal(size=(300, 8)), rng.normal(size=(250, 8)) * 1.2 + 0.3
    small, large = precision_recall(real, fake, batch_size=7), precision_recall(real, fake, batch_size=10000)
    assert small == large
    assert 0.0 < small["precision"] < 1.0 and 0.0 < small["recall"] < 1.0


def test_k_smallest_squared_distances_matches_brute_force():
    rng = np.random.default_rng(12)
    queries, refs = rng.normal(size=(40, 5)), rng.normal(size=(90, 5))
    brute = np.sort(((queries[:, None, :] - refs[None, :, :]) ** 2).sum(-1), axis=1)[:, :4]
    found = k_smallest_squared_distances(queries, refs, 4, batch_size=7)
    np.testing.assert_allclose(found, brute, rtol=1e-5, atol=1e-5)


def test_precision_recall_needs_more_points_than_k():
    with pytest.raises(ValueError, match="k=3"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))


# --- Inception Score ----------------------------------------------------------------------------------


def test_inception_score_of_uniform_predictions_is_one():
    assert inception_score(np.zeros((100, 10))) == pytest.approx((1.0, 0.0))


def test_inception_score_of_confident_balanced_predictions_is_the_class_count():
    classes = 10
    logits = 30.0 * np.eye(classes)[np.arange(1000) % classes]
    mean, std = inception_score(logits, split_size=100)
    assert mean == pytest.approx(classes, rel=1e-6)
    assert std == pytest.approx(0.0, abs=1e-6)


def test_inception_score_splits_consecutively_and_reports_their_spread():
    classes = 10
    confident = 30.0 * np.eye(classes)[np.arange(50) % classes]
    logits = np.concatenate([confident, np.zeros((50, classes))])
    mean, std = inception_score(logits, split_size=50)  # splits score 10 and 1
    assert mean == pytest.approx(5.5, rel=1e-6)
    assert std == pytest.approx(4.5, rel=1e-6)
    assert inception_score(logits, split_size=5000)[1] == 0.0  # one split when N < split_size


def test_inception_score_is_stable_for_huge_logits():
    logits = 1e4 * np.eye(4)[np.arange(40) % 4]
    assert inception_score(logits) == pytest.approx((4.0, 0.0))


# --- memorization -------------------------------------------------------------------------------------


def test_samples_equal_to_training_points_are_memorized():
    train = np.random.default_rng(13).normal(size=(50, 16))
    result = memorization(train[:10] * 3.0, train)  # the scale is removed by normalisation
    assert result["memorization_ratio"] == 1.0
    assert result["nearest_distance_mean"] < 2e-3


def test_top5_distance_is_zero_when_each_sample_has_five_duplicates():
    points = np.random.default_rng(14).normal(size=(20, 16))
    result = memorization(points, np.repeat(points, 5, axis=0))
    assert result["top5_distance"] < 2e-3


def test_far_samples_are_not_memorized():
    rng = np.random.default_rng(15)
    direction = np.eye(16)[0]
    train = direction + 0.1 * rng.normal(size=(100, 16))
    result = memorization(-direction + 0.1 * rng.normal(size=(20, 16)), train)
    assert result["memorization_ratio"] == 0.0
    assert result["nearest_distance_mean"] > 1.5  # nearly antipodal on the unit sphere


def test_memorization_hand_computed_top5():
    # Sample 0.5: distances 0.5, 0.5, 1.5, 2.5, 3.5 (mean 1.7); sample 10: 0, 5, 6, 7, 8 (mean 5.2).
    train = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [10.0]])
    result = memorization(np.array([[0.5], [10.0]]), train, normalize=False, batch_size=3)
    assert result["top5_distance"] == pytest.approx(3.45, abs=1e-5)
    assert result["nearest_distance_mean"] == pytest.approx(0.25, abs=1e-5)
    assert result["memorization_ratio"] == 0.5


def test_batching_does_not_change_memorization():
    rng = np.random.default_rng(16)
    samples, train = rng.normal(size=(60, 8)), rng.normal(size=(130, 8))
    small = memorization(samples, train, batch_size=7)
    large = memorization(samples, train)
    for key in small:
        assert small[key] == pytest.approx(large[key], rel=1e-6)


def test_zero_feature_vectors_cannot_be_normalised():
    with pytest.raises(ValueError, match="zero"):
        memorization(np.zeros((2, 4)), np.ones((6, 4)))
