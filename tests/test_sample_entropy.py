"""Sample entropy on codebooks whose code usage, and so whose entropy, is known in closed form."""

import numpy as np
import pytest

from diffcorrupt.evaluation.sample_entropy import code_probabilities, feature_codebook, feature_entropy, sample_entropy

CODEBOOK = np.eye(8) * 10.0  # 8 codes, 100 apart in squared distance: assignments are hard at tau 1


def test_even_use_of_every_code_reaches_log_k():
    latents = np.tile(CODEBOOK, (5, 1)).reshape(10, 2, 2, 8)  # (samples, h, w, d)
    assert sample_entropy(latents, CODEBOOK)["sample_entropy"] == pytest.approx(np.log(8), abs=1e-9)


def test_a_collapsed_set_has_no_entropy():
    latents = np.repeat(CODEBOOK[3:4], 40, axis=0)
    assert sample_entropy(latents, CODEBOOK)["sample_entropy"] == pytest.approx(0.0, abs=1e-9)


def test_uneven_use_gives_the_entropy_of_the_usage():
    usage = np.array([4, 2, 1, 1, 0, 0, 0, 0]) / 8
    latents = np.repeat(CODEBOOK, (usage * 8).astype(int), axis=0)
    assert sample_entropy(latents, CODEBOOK)["sample_entropy"] == pytest.approx(-np.sum(usage[:4] * np.log(usage[:4])))


def test_tau_sets_the_softness():
    """A vector halfway between two codes splits evenly; squared distances d1, d2 split as softmax(-d/tau)."""
    codebook = np.array([[0.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(code_probabilities(np.array([[1.0, 0.0]]), codebook), [0.5, 0.5])
    point = np.array([[0.5, 0.0]])  # squared distances 0.25 and 2.25
    for tau in (0.5, 1.0, 4.0):
        expected = np.exp(-np.array([0.25, 2.25]) / tau)
        np.testing.assert_allclose(code_probabilities(point, codebook, tau), expected / expected.sum())
    numbers = sample_entropy(point, codebook, tau=4.0)
    assert numbers["sample_entropy_tau"] == 4.0 and numbers["sample_entropy_codes"] == 2


def test_blocks_do_not_change_the_answer():
    rng = np.random.default_rng(0)
    latents, codebook = rng.normal(size=(1000, 4)), rng.normal(size=(16, 4))
    np.testing.assert_allclose(code_probabilities(latents, codebook, batch_size=37),
                               code_probabilities(latents, codebook), rtol=1e-12)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="tau must be positive"):
        code_probabilities(CODEBOOK, CODEBOOK, tau=0.0)
    with pytest.raises(ValueError, match="no latent vectors"):
        code_probabilities(np.zeros((0, 8)), CODEBOOK)


def test_feature_entropy_sees_a_collapse():
    """Real features in 8 tight clusters: samples drawn like them score the reference's own entropy,
    samples from one cluster about log 8 less."""
    rng = np.random.default_rng(0)
    centres = np.eye(16)[:8] * 5
    real = centres[rng.integers(0, 8, 4000)] + rng.normal(size=(4000, 16)) * 0.05
    alike = centres[rng.integers(0, 8, 1000)] + rng.normal(size=(1000, 16)) * 0.05
    collapsed = centres[np.zeros(1000, int)] + rng.normal(size=(1000, 16)) * 0.05
    diverse, narrow = feature_entropy(alike, real), feature_entropy(collapsed, real)
    assert diverse["sample_entropy"] == pytest.approx(diverse["sample_entropy_real"], abs=0.05)
    assert diverse["sample_entropy_real"] > np.log(8) - 0.05
    assert narrow["sample_entropy"] < diverse["sample_entropy"] - np.log(8) + np.log(2)  # one cluster of eight: about log 8 lower
    assert diverse["sample_entropy_codes"] == 200  # 4000 features / 20 per code, under the 256 cap


def test_feature_codebook_is_k_means():
    real = np.concatenate([np.tile([1.0, 0.0], (50, 1)), np.tile([0.0, 1.0], (50, 1))])
    codebook, tau = feature_codebook(real, codes=2)
    assert sorted(map(tuple, np.round(codebook, 9))) == [(0.0, 1.0), (1.0, 0.0)] and tau == pytest.approx(0.0)
