"""Memorization measures of the paper (section 4): how close samples come to training images.

The paper measures, in L2-normalised CLIP feature space, the average distance from each sample to its
top-5 nearest training images and the memorization ratio: the share of samples whose nearest training
image is closer than 0.12. CLIP needs weights this project cannot fetch, so the same measures are taken
in the feature spaces we have (Inception pool_3, a small classifier's features) as a stand-in: after
normalisation the distances live on the unit sphere (0 to 2) like CLIP's, but the 0.12 threshold was
chosen for CLIP and is only comparable across runs in the same feature space, not with the paper.
"""

import numpy as np

from diffcorrupt.evaluation.nearest_neighbours import KEY_CHUNK, k_nearest


def _l2_normalise(features: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{int(np.sum(norms == 0))} {name} feature vectors are zero and cannot be normalised")
    return features / norms


class _NormalisedRows:
    """``features`` whose row slices come L2-normalised: k_nearest reads the training features a chunk at a
    time, so an ``np.memmap`` of 1.28M of them is streamed, never copied whole into memory."""

    def __init__(self, features: np.ndarray):
        self.features, self.shape = features, features.shape

    def __getitem__(self, rows: slice) -> np.ndarray:
        return _l2_normalise(np.asarray(self.features[rows], dtype=np.float32), "training")


def memorization(
    samples: np.ndarray,
    train: np.ndarray,
    *,
    threshold: float = 0.12,
    k: int = 5,
    normalize: bool = True,
    batch_size: int = KEY_CHUNK,
) -> dict[str, float]:
    """Nearest-training-feature statistics of ``samples`` (N, D) against ``train`` (M, D).

    Returns ``memorization_ratio`` (fraction of samples whose nearest training feature is at L2 distance
    strictly below ``threshold``), ``top5_distance`` (mean over samples of the mean distance to the ``k``
    nearest training features; the paper's name, kept for any ``k``) and ``nearest_distance_mean``.

    The search is ``nearest_neighbours.k_nearest`` on all local devices: ``train`` (an array or an
    ``np.memmap``, normalised chunk by chunk) is streamed to them ``batch_size`` rows at a time, so the
    paper's 1.28M training features need neither the devices' nor this process's memory whole. Distances
    come from a float32 matmul; near 0 their absolute error is about 1e-3 on the unit sphere, far below
    the threshold.
    """
    samples = np.asarray(samples, dtype=np.float32)
    train = np.asarray(train)  # no copy of an array or memmap: k_nearest reads it a chunk at a time
    if samples.ndim != 2 or train.ndim != 2 or samples.shape[1] != train.shape[1]:
        raise ValueError(f"samples and train must have shapes (N, D) and (M, D), got {samples.shape} and {train.shape}")
    if len(samples) == 0:
        raise ValueError("memorization needs at least one sample")
    if normalize:
        samples, train = _l2_normalise(samples, "sample"), _NormalisedRows(train)

    squared, _ = k_nearest(samples, train, k, key_chunk=batch_size)
    distances = np.sqrt(squared.astype(np.float64))
    nearest = distances[:, 0]
    return {
        "memorization_ratio": float(np.mean(nearest < threshold)),
        "top5_distance": float(distances.mean(axis=1).mean()),
        "nearest_distance_mean": float(nearest.mean()),
    }
