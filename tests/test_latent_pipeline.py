"""Latent diffusion end to end on the procedural captions: a small autoencoder is trained, the
dataset pre-encoded (resumably, to the same bytes), a text DiT trained on the latents, and its
samples decoded to pixels by the sampler."""

import json
import pathlib
import types

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from diffcorrupt import sample
from diffcorrupt.config.loading import load_config
from diffcorrupt.data.latent_encoding import encode_dataset
from diffcorrupt.autoencoders.storage import load_autoencoder
from diffcorrupt.data.preprocess import Preprocess, training_pixels
from diffcorrupt.data.sources.latent_records import make_latent_source
from diffcorrupt.data.sources.registry import make_source
from diffcorrupt.errors import UserError
from diffcorrupt.training.autoencoder_training import train_autoencoder
from diffcorrupt.training.loop import train

DATA = load_config("configs/shapes.py:tiny", ["data.image_size=16", "data.num_examples=600"]).data


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("ae") / "kl"
    summary = train_autoencoder(DATA, "kl-f4-small", out, steps=30, batch_size=16)
    assert summary["scale_factor"] > 0 and np.isfinite(summary["held_out_mse"])
    return out


@pytest.fixture(scope="module")
def latents(tmp_path_factory, autoencoder) -> pathlib.Path:
    out = tmp_path_factory.mktemp("latents") / "shapes"
    summary = encode_dataset(DATA, autoencoder, out, batch_size=64, shard_size=256)
    assert summary["shards"] == 3 and summary["encoded_now"] == 600 and summary["kind"] == "moments"
    return out


def test_flips_store_the_encoding_of_each_mirrored_image(autoencoder, latents, tmp_path):
    out = tmp_path / "flips"
    assert encode_dataset(DATA, autoencoder, out, batch_size=64, shard_size=256, flips=True)["flips"]
    mirrored, plain = make_latent_source(str(out)), make_latent_source(str(latents))
    assert mirrored.meta["flips"] and not plain.meta["flips"] and "latent_flipped" not in plain[0]
    np.testing.assert_array_equal(mirrored[5]["latent"], plain[5]["latent"])
    image = training_pixels(make_source(DATA)[5]["image"], DATA.image_size, DATA.channels)
    loaded = load_autoencoder(autoencoder)
    x = jnp.asarray(image[None, :, ::-1], jnp.float32) / 127.5 - 1.0
    mean, logvar = loaded.module.apply(loaded.params, x, method="encode")
    np.testing.assert_allclose(mirrored[5]["latent_flipped"], np.concatenate([mean, logvar], -1)[0], atol=1e-5)
    # A mirrored latent is not the latent of the mirrored image: this autoencoder is no exception.
    assert np.abs(mirrored[5]["latent_flipped"] - plain[5]["latent"][:, ::-1]).max() > 1e-2


def test_encoding_resumed_after_an_interruption_gives_the_same_shards(autoencoder, latents, tmp_path):
    out = tmp_path / "again"
    encode_dataset(DATA, autoencoder, out, batch_size=32, shard_size=256)
    (out / "latents-00001.array_record").unlink()  # as if killed while writing shard 1
    (out / "meta.json").unlink()
    (out / "latents-00002.array_record.tmp").write_bytes(b"half a shard")
    assert encode_dataset(DATA, autoencoder, out, batch_size=64, shard_size=256)["encoded_now"] == 256
    for path in sorted(latents.iterdir()):
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    assert not list(out.glob("*.tmp"))
    with pytest.raises(UserError, match="shard_size differ"):
        encode_dataset(DATA, autoencoder, out, shard_size=128)


def test_records_keep_index_and_clean_caption_and_moments_sample_per_epoch(latents):
    source = make_latent_source(str(latents))
    meta = source.meta
    assert meta["latent_shape"] == [4, 4, 4] and meta["condition"] == "text"
    element = source[17]
    assert element["latent"].shape == (4, 4, 8)  # mean and log-variance
    assert element["caption"] == make_source(DATA)[17]["caption"]
    preprocess = Preprocess(16, 3, False, seed=0, latent_kind="moments", scale_factor=meta["scale_factor"])
    draw = lambda epoch: preprocess({**element, "index": 17}, epoch)["latent"]  # noqa: E731
    np.testing.assert_array_equal(draw(0), draw(0))
    assert draw(0).shape == (4, 4, 4) and not np.array_equal(draw(0), draw(1))
    mean = np.split(element["latent"], 2, axis=-1)[0] * meta["scale_factor"]
    assert np.abs(np.mean([draw(e) for e in range(200)], axis=0) - mean).max() < 0.5


def test_a_text_model_trained_on_latents_samples_decoded_images(latents, tmp_path):
    workdir = tmp_path / "run"
    config = load_config("configs/shapes.py:tiny", [
        "data.name=latent_records", f"data.data_dir={latents}", "data.num_examples=0", "model.name=DiT-T/2",
        "train.batch_size=8", "train.num_steps=2", "checkpoint.every_steps=2", "train.sample_every=2"])
    train(config, str(workdir))
    assert Image.open(workdir / "samples" / "step_2.png").size == (64, 64)  # 16 decoded 16x16 previews
    recorded = json.loads((workdir / "model.json").read_text())["autoencoder"]
    assert recorded == json.loads((latents / "meta.json").read_text())["autoencoder"]["path"]
    (tmp_path / "captions.txt").write_text("one small red circle on the left\n")
    flags = types.SimpleNamespace(workdir=str(workdir), step=None, num_samples=4, sampler="ddim", steps=3, cfg_scale="2",
                                  eta=None, seed=0, batch_size=4, captions=str(tmp_path / "captions.txt"),
                                  out=str(tmp_path / "samples"), mesh="-1,1,1", autoencoder=None, controls=None)
    folder = pathlib.Path(sample.sample_run(flags)[0]["samples"])
    images = np.load(next(folder.glob("samples_*.npz")))["arr_0"]
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8  # pixels, not 4x4x4 latents
    flags.autoencoder, flags.out = str(tmp_path / "nowhere"), str(tmp_path / "other")
    with pytest.raises(UserError, match="--autoencoder=.*nowhere is not an autoencoder folder"):
        sample.sample_run(flags)


def test_bad_inputs(autoencoder, tmp_path):
    grey = load_config("configs/fmnist.py:tiny").data
    with pytest.raises(UserError, match="3-channel images but data.channels is 1"):
        encode_dataset(grey, autoencoder, tmp_path / "grey")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        encode_dataset(DATA, autoencoder, tmp_path / "full")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_control_maps_of_latents_are_the_edges_of_the_images_they_encode(latents):
    from diffcorrupt.data.edges import canny_edges
    from diffcorrupt.data.pipeline import make_iterator

    config = load_config("configs/shapes.py:tiny", ["data.name=latent_records", f"data.data_dir={latents}",
                                                    "data.num_examples=0", "data.control=canny", "data.subset=[100:116]",
                                                    "data.shuffle=false", "train.batch_size=16"])
    batch = next(make_iterator(config))
    assert batch["latent"].shape == (16, 4, 4, 4) and batch["control"].shape == (16, 16, 16, 1)
    pixels = make_source(DATA)
    for row, control in enumerate(batch["control"]):
        expected = canny_edges(training_pixels(pixels[100 + row]["image"], DATA.image_size, DATA.channels))
        np.testing.assert_array_equal(control[..., 0], expected.astype(np.float32))
    assert "image" not in batch  # the pixels were read for the edges alone
