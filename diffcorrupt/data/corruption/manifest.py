"""The manifest of a corruption: what was corrupted, how much, and into what.

Computed in chunks over the whole dataset with the vectorised form of the per-index functions, so
it agrees with what the pipeline serves element by element (a test holds the two together).
"""

from __future__ import annotations

import numpy as np

from diffcorrupt.data.corruption.build import Corruption
from diffcorrupt.data.corruption.caption_swap import CaptionSwap
from diffcorrupt.data.sources.base import Source

_CHUNK = 1 << 20
_EXAMPLE_PAIRS = 5


def compute_manifest(source: Source, corruption: Corruption, epoch: int = 0) -> tuple[dict, np.ndarray]:
    """(summary, sorted corrupted indices) for one epoch (any epoch, when the mode is fixed)."""
    n = len(source)
    summary = corruption.describe()
    summary["epoch"] = epoch if corruption.mode == "random" else None
    corrupted_chunks = []
    if isinstance(corruption, CaptionSwap):
        pairs = []
        for start in range(0, n, _CHUNK):
            indices = np.arange(start, min(n, start + _CHUNK))
            partners = corruption.partners(indices, epoch)
            corrupted_chunks.append(indices[partners >= 0])
            pairs.extend((int(i), int(p)) for i, p in zip(indices, partners) if 0 <= p and i < p)
            pairs = pairs[:_EXAMPLE_PAIRS]
        summary["example_swaps"] = [
            {"index": i, "partner": p, "caption": source.caption(i), "shown_caption": source.caption(p)}
            for i, p in pairs
        ]
    else:
        labels = source.labels()
        flips = np.zeros((corruption.num_classes, corruption.num_classes), np.int64)
        for start in range(0, n, _CHUNK):
            indices = np.arange(start, min(n, start + _CHUNK))
            observed, corrupted = corruption.observe(indices, labels[start:start + len(indices)], epoch)
            np.add.at(flips, (labels[start:start + len(indices)][corrupted], observed[corrupted]), 1)
            corrupted_chunks.append(indices[corrupted])
        summary["num_classes"] = corruption.num_classes
        summary["class_names"] = list(getattr(source, "class_names", []))
        summary["flip_matrix"] = flips.tolist()
    corrupted_indices = np.concatenate(corrupted_chunks) if corrupted_chunks else np.empty(0, np.int64)
    summary["num_corrupted"] = int(len(corrupted_indices))
    summary["actual_ratio"] = len(corrupted_indices) / n
    return summary, corrupted_indices
