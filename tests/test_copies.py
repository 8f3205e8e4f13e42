"""Copies of training images in pixel space: exact copies count, class look-alikes and noise do not,
and the neighbour grid shows each flagged sample beside its nearest training images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from diffcorrupt.data.sources.fashion_mnist import FashionMnistSource
from diffcorrupt.evaluation import copies as copies_module
from diffcorrupt.evaluation.copies import GRID_NEIGHBOURS, GRID_ROWS, copies, copy_note

TRAIN = FashionMnistSource("test")._images[:300]  # uint8 (300, 28, 28, 1)


def _images(start: int, stop: int) -> np.ndarray:
    return TRAIN[start:stop]


def test_copies_are_counted_and_look_alikes_are_not(tmp_path):
    rng = np.random.default_rng(0)
    exact = TRAIN[[5, 17, 250]]
    nudged = np.clip(TRAIN[[40, 41]].astype(int) + rng.integers(-3, 4, (2, 28, 28, 1)), 0, 255).astype(np.uint8)
    # Unseen images of the same classes: near many training images, a copy of none.
    unseen = FashionMnistSource("test")._images[5000:5005]
    noise = rng.integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    samples = np.concatenate([exact, nudged, unseen, noise])
    result = copies(samples, _images, len(TRAIN), tmp_path / "grid.png")
    assert result["copy_ratio"] == 5 / 12
    flagged = copies(np.concatenate([exact, nudged]), _images, len(TRAIN))
    assert flagged["copy_ratio"] == 1.0 and flagged["nearest_pixel_distance_mean"] < 0.2
    assert copies(unseen, _images, len(TRAIN))["copy_ratio"] == 0.0
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (GRID_ROWS * 28, (1 + GRID_NEIGHBOURS) * 28)
    # The most copy-like sample comes first, its nearest training image (itself) beside it.
    np.testing.assert_array_equal(grid[:28, :28], grid[:28, 28:56])


def test_a_duplicated_training_image_reproduced_is_a_copy():
    """Nearest and second nearest both at distance 0: the sample reproduces an image the training set
    holds twice, which is still memorization, not a look-alike."""
    twin = np.concatenate([TRAIN[:10], TRAIN[3:4]])
    assert copies(TRAIN[3:4], lambda a, b: twin[a:b], len(twin))["copy_ratio"] == 1.0


def test_notes_say_why_copies_cannot_be_judged(monkeypatch):
    samples = np.zeros((4, 28, 28, 1), np.uint8)
    assert copy_note(samples, (28, 28, 1), 300) is None
    assert "differ in shape" in copy_note(samples, (32, 32, 1), 300)
    assert "at least two" in copy_note(samples, (28, 28, 1), 1)
    monkeypatch.setattr(copies_module, "MAX_TRAIN_VALUES", 1000)
    assert "at most 1,000 pixel values" in copy_note(samples, (28, 28, 1), 300)
