"""Control images in the pipeline: Canny edges of exactly the pixels (and flip) each example is
trained on, and control images from a user folder by example index, refused in one sentence when
the folder is missing or lacks an example's image."""

import numpy as np
import pytest
from PIL import Image

from diffcorrupt.config.loading import load_config
from diffcorrupt.data.edges import canny_edges
from diffcorrupt.data.pipeline import make_iterator
from diffcorrupt.errors import ConfigError, DataError

TINY = ["data.subset=[40:72]", "train.batch_size=32", "data.shuffle=false"]


def _batch(overrides):
    return next(make_iterator(load_config("configs/fmnist.py:tiny", TINY + overrides)))


def test_canny_controls_are_the_edges_of_the_pixels_and_flip_each_example_is_trained_on():
    batch = _batch(["data.control=canny", "data.random_flip=true"])
    assert batch["control"].shape == (32, 32, 32, 1) and batch["control"].dtype == np.float32
    assert 0 < batch["flipped"].sum() < 32  # both kinds are checked
    for image, control in zip(batch["image"], batch["control"]):
        pixels = np.round((image + 1.0) * 127.5).astype(np.uint8)
        np.testing.assert_array_equal(control[..., 0], canny_edges(pixels).astype(np.float32))
    assert batch["control"].mean() > 0.02  # a garment has edges


def _write_controls(folder, indices):
    rng = np.random.default_rng(0)
    for index in indices:  # 40 wide, 30 high, RGB: the centre 30x30 is kept, then resized by nearest neighbour
        Image.fromarray(rng.integers(0, 4, (30, 40, 3), np.uint8) * 60).save(folder / f"{index}.png")


def test_folder_controls_are_read_by_split_index_cropped_resized_to_nearest_and_flipped(tmp_path):
    _write_controls(tmp_path, range(40, 72))
    batch = _batch(["data.control=folder", f"data.control_dir={tmp_path}", "data.random_flip=true"])
    assert batch["control"].shape == (32, 32, 32, 3)
    for row, (flipped, control) in enumerate(zip(batch["flipped"], batch["control"])):
        stored = np.asarray(Image.open(tmp_path / f"{40 + row}.png"))[:, 5:35]
        expected = np.asarray(Image.fromarray(stored).resize((32, 32), Image.NEAREST)).astype(np.float32) / 255
        np.testing.assert_array_equal(control, expected[:, ::-1] if flipped else expected)
    assert set(np.unique(batch["control"] * 255).round()) <= {0, 60, 120, 180}  # no colour invented


def test_a_control_folder_that_is_missing_or_short_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="'data.control_dir' is '.*nowhere', which is no folder"):
        _batch(["data.control=folder", f"data.control_dir={tmp_path / 'nowhere'}"])
    _write_controls(tmp_path, [i for i in range(40, 72) if i != 57])
    with pytest.raises(DataError, match=r"no control image for example 57 \(1 of 32 are missing\); add 57.png"):
        _batch(["data.control=folder", f"data.control_dir={tmp_path}"])
