"""Copies of training images among samples, judged in pixel space, and the grid that shows them.

Feature-space memorization (memorization.py) asks whether a sample lies near *some* training image,
which in a 10-class classifier's features is true of any good sample. The copy criterion of the
memorization literature (Yoon et al. 2023, Gu et al. 2023 "On memorization in diffusion models")
asks whether it reproduces *one*: its nearest training image, in pixel L2, is at least three times
closer than the second nearest. A sample that only resembles its class is about equally far from
many training images; a copy stands out from all but one. The share of copies is the measure the
memorization-regime experiment follows over N and training steps.

The search is exact (nearest_neighbours.k_nearest over the raw pixels in [0, 1]), streamed a chunk
of training images at a time, and the distances to the neighbours it finds are recomputed in float64;
its cost is samples x training pixels, so it runs where the training set holds at most
``MAX_TRAIN_VALUES`` pixel values and says why where it does not.
"""

from __future__ import annotations

import pathlib
from typing import Callable

import numpy as np

from diffcorrupt.evaluation.nearest_neighbours import k_nearest
from diffcorrupt.report.figures import save_tiled

COPY_RATIO = 1 / 3  # nearest / second-nearest distance below which a sample is a copy
MAX_TRAIN_VALUES = 2_000_000_000  # e.g. 60,000 images at 96x96x3; ImageNet at 256 px is 100 times more
GRID_ROWS = 8
GRID_NEIGHBOURS = 3


class _PixelRows:
    """Training images ``images(start, stop)`` (uint8 NHWC) seen as rows of floats in [0, 1]."""

    def __init__(self, images: Callable[[int, int], np.ndarray], total: int, dim: int):
        self.images, self.shape = images, (total, dim)

    def __getitem__(self, rows: slice) -> np.ndarray:
        batch = self.images(rows.start, min(rows.stop, self.shape[0]))
        return batch.reshape(len(batch), -1).astype(np.float32) / 255.0


def copy_note(samples: np.ndarray, train_shape: tuple[int, ...], total: int) -> str | None:
    """Why copies cannot be judged for these samples and training images, or None when they can."""
    if tuple(samples.shape[1:]) != tuple(train_shape):
        return (f"copies are judged in pixel space, and the samples ({'x'.join(map(str, samples.shape[1:]))}) and "
                f"the training images ({'x'.join(map(str, train_shape))}) differ in shape")
    if total < 2:
        return "copies need at least two training images (nearest against second nearest)"
    if total * int(np.prod(train_shape)) > MAX_TRAIN_VALUES:
        return (f"copies are judged in pixel space only for training sets of at most {MAX_TRAIN_VALUES:,} pixel "
                f"values; this one has {total * int(np.prod(train_shape)):,}")
    return None


def copies(samples: np.ndarray, images: Callable[[int, int], np.ndarray], total: int,
           grid_path: pathlib.Path | None = None) -> dict[str, float]:
    """{copy_ratio, nearest_pixel_distance_mean, distance_ratio_median} of uint8 NHWC ``samples``
    against the ``total`` training images ``images(start, stop)`` of the same shape; with
    ``grid_path``, the samples with the lowest nearest/second-nearest ratio beside their nearest
    training images, one row each, are saved there."""
    queries = samples.reshape(len(samples), -1).astype(np.float32) / 255.0
    keys = _PixelRows(images, total, queries.shape[1])
    _, candidates = k_nearest(queries, keys, min(GRID_NEIGHBOURS, total))
    distances, indices = _exact(queries, keys, candidates)
    ratio = distances[:, 0] / np.maximum(distances[:, 1], 1e-12)
    if grid_path is not None:
        _save_grid(grid_path, samples, images, indices, np.argsort(ratio, kind="stable")[:GRID_ROWS])
    return {
        "copy_ratio": float(np.mean(ratio < COPY_RATIO)),
        "nearest_pixel_distance_mean": float(distances[:, 0].mean()),
        "distance_ratio_median": float(np.median(ratio)),
    }


def _exact(queries: np.ndarray, keys: _PixelRows, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 distances to each query's candidates, re-sorted. The search's float32 matmul errs by
    about 1e-3 in squared distance, as large as an exact copy's true distance of 0; the ratio that
    judges a copy needs the distances themselves, so they are recomputed from the images."""
    distances = np.empty(candidates.shape)
    for row, (query, found) in enumerate(zip(queries.astype(np.float64), candidates)):
        images = np.stack([keys[slice(int(i), int(i) + 1)][0] for i in found]).astype(np.float64)
        distances[row] = np.linalg.norm(images - query, axis=1)
    order = np.argsort(distances, axis=1, kind="stable")
    return np.take_along_axis(distances, order, 1), np.take_along_axis(candidates, order, 1)


def _save_grid(path: pathlib.Path, samples: np.ndarray, images: Callable[[int, int], np.ndarray],
               indices: np.ndarray, rows: np.ndarray) -> None:
    """Each row: a sample, then its nearest training images in order of distance."""
    tiles = []
    for row in rows:
        tiles.append(samples[row])
        tiles.extend(images(int(i), int(i) + 1)[0] for i in indices[row])
    save_tiled(path, np.stack(tiles), columns=1 + indices.shape[1])
