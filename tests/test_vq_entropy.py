"""Sample entropy in a VQ autoencoder's latent space, on the small VQ preset with random weights:
a codebook made of the encoder's own latents gives the entropy of the code usage in closed form."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from diffcorrupt.autoencoders.presets import PRESETS
from diffcorrupt.autoencoders.storage import make_autoencoder, unflatten_params
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.sample_entropy import TAU, sample_entropy
from diffcorrupt.evaluation.vq_entropy import check_vq_autoencoder, vq_sample_entropy

from autoencoder_files import random_flat_params, save_random_vq

VQ = PRESETS["vq-f4-small"]  # f = 4: a 16x16 image has 4x4 latent vectors of 3 channels, 256 codes


def _images(n, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _latents(config, flat, images):
    """h of ``images`` as the autoencoder sees them (uint8 -> [-1, 1]), computed eagerly, apart from the
    code under test."""
    params = unflatten_params({k: jnp.asarray(v) for k, v in flat.items()})
    x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
    return np.asarray(make_autoencoder(config).apply(params, x, method="encode"))


def test_codes_on_the_latents_give_the_entropy_of_the_code_usage(tmp_path):
    """Codes 0-15 are image A's 16 latent vectors, 16-31 image B's, the rest far away; with tau well
    below the codes' spacing every vector takes its own code, so H is the entropy of the histogram."""
    flat = random_flat_params(VQ)
    a, b = _images(2, seed=1)
    codes = _latents(VQ, flat, np.stack([a, b])).reshape(32, 3)
    gaps = ((codes[:, None] - codes[None]) ** 2).sum(-1)[~np.eye(32, dtype=bool)]
    assert gaps.min() > 1e-4  # 32 distinct vectors
    flat["codebook"] = np.concatenate([codes, 100.0 + flat["codebook"][32:]]).astype(np.float32)
    sha = save_random_vq(tmp_path / "ae", flat=flat)
    tau = float(gaps.min()) / 50

    def entropy(*images):
        return vq_sample_entropy(np.stack(images), tmp_path / "ae", tau=tau)

    assert entropy(a, a, a, a)["vq_sample_entropy"] == pytest.approx(np.log(16), abs=1e-4)
    assert entropy(a, b)["vq_sample_entropy"] == pytest.approx(np.log(32), abs=1e-4)
    usage = np.array([3 / 64] * 16 + [1 / 64] * 16)  # A three times as often as B
    result = entropy(a, a, a, b)
    assert result["vq_sample_entropy"] == pytest.approx(scipy.special.entr(usage).sum(), abs=1e-4)
    assert result == {"vq_sample_entropy": result["vq_sample_entropy"], "vq_sample_entropy_tau": tau,
                      "vq_sample_entropy_codes": 256, "vq_autoencoder": sha}


def test_identical_samples_score_lower_than_varied_ones(tmp_path):
    save_random_vq(tmp_path / "ae")
    varied = _images(16)
    identical = np.repeat(varied[:1], 16, axis=0)
    for tau in (TAU, 0.1):
        assert (vq_sample_entropy(identical, tmp_path / "ae", tau)["vq_sample_entropy"] + 0.01
                < vq_sample_entropy(varied, tmp_path / "ae", tau)["vq_sample_entropy"])


def test_batches_and_padding_do_not_change_the_answer(tmp_path):
    """13 images in batches of 8, 24 and 64 (padded with 3, 11, 51 blank images), against the
    definition on the host in float64."""
    flat = random_flat_params(VQ)
    save_random_vq(tmp_path / "ae", flat=flat)
    images = _images(13)
    results = [vq_sample_entropy(images, tmp_path / "ae", tau=0.1, batch_size=size)["vq_sample_entropy"]
               for size in (8, 24, 64)]
    expected = sample_entropy(_latents(VQ, flat, images), flat["codebook"], 0.1)["sample_entropy"]
    np.testing.assert_allclose(results, expected, rtol=1e-6)


def test_latents_are_unscaled_and_grey_is_repeated_into_rgb(tmp_path):
    """The codebook lives in the unscaled latent space, so the latent scale leaves H alone; a grey
    image is the RGB image with three equal channels."""
    flat = random_flat_params(VQ)
    save_random_vq(tmp_path / "one", flat=flat)
    save_random_vq(tmp_path / "half", dataclasses.replace(VQ, scale_factor=0.5), flat)
    grey = _images(6, channels=1)
    one = vq_sample_entropy(grey, tmp_path / "one")["vq_sample_entropy"]
    assert vq_sample_entropy(grey, tmp_path / "half")["vq_sample_entropy"] == pytest.approx(one, rel=1e-9)
    assert vq_sample_entropy(np.repeat(grey, 3, axis=-1), tmp_path / "one")["vq_sample_entropy"] == pytest.approx(
        one, rel=1e-9)


def test_refusals(tmp_path):
    with pytest.raises(UserError, match="is not an autoencoder folder"):
        check_vq_autoencoder(tmp_path / "nothing", "--vq_autoencoder")
    with pytest.raises(UserError, match="is not an autoencoder folder"):
        vq_sample_entropy(_images(2), tmp_path / "nothing")
    save_random_vq(tmp_path / "kl", PRESETS["kl-f4-small"])
    with pytest.raises(UserError, match=r"--vq_autoencoder=.*kl holds a KL autoencoder, which has no codebook.*"
                                        r"convert_autoencoder.py .*--preset=vq-f4"):
        check_vq_autoencoder(tmp_path / "kl", "--vq_autoencoder")
    with pytest.raises(UserError, match="has no codebook"):
        vq_sample_entropy(_images(2), tmp_path / "kl")
    save_random_vq(tmp_path / "vq")
    assert check_vq_autoencoder(tmp_path / "vq") == tmp_path / "vq"
    with pytest.raises(UserError, match="18x18 images cannot be encoded .* downsamples by 4"):
        vq_sample_entropy(_images(2, size=18), tmp_path / "vq")
    with pytest.raises(UserError, match="18x18 images cannot be encoded"):  # the jobs' check, before any work
        check_vq_autoencoder(tmp_path / "vq", "--vq_autoencoder", _images(2, size=18))
    with pytest.raises(UserError, match="takes 3-channel images but the samples have 4 channels"):
        vq_sample_entropy(_images(2, channels=4), tmp_path / "vq")
    with pytest.raises(UserError, match="needs uint8 images"):
        vq_sample_entropy(_images(2).astype(np.float32), tmp_path / "vq")
    with pytest.raises(UserError, match="at least one image"):
        vq_sample_entropy(_images(0), tmp_path / "vq")
    with pytest.raises(UserError, match="tau must be positive"):
        vq_sample_entropy(_images(2), tmp_path / "vq", tau=0.0)
    grey_vq = dataclasses.replace(VQ, in_channels=1, out_channels=1)
    save_random_vq(tmp_path / "grey", grey_vq)
    with pytest.raises(UserError, match="takes 1-channel images but the samples have 3 channels"):
        vq_sample_entropy(_images(2), tmp_path / "grey")
    assert vq_sample_entropy(_images(2, channels=1), tmp_path / "grey")["vq_sample_entropy"] > 0
