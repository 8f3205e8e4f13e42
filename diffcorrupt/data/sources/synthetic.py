"""A synthetic class-conditional source of any size, for benchmarks and large-N tests.

Images are constant (reading costs almost nothing), labels are a keyed hash of the index, so the
cost of everything downstream of the source (corruption, preprocessing, batching) shows clearly.
"""

from __future__ import annotations

import numpy as np

from diffcorrupt.data.keyed_random import derive_key, keyed_bits
from diffcorrupt.data.sources.base import ClassSource, Element


class SyntheticSource(ClassSource):
    def __init__(self, num_examples: int, image_shape: tuple[int, int, int] = (32, 32, 1), num_classes: int = 10):
        self._n = int(num_examples)
        self._key = derive_key(0, "synthetic_labels")
        self._image = np.full(image_shape, 127, np.uint8)
        self.num_classes = int(num_classes)
        self.class_names = [f"class_{c}" for c in range(self.num_classes)]

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Element:
        return {"image": self._image, "label": keyed_bits(self._key, index) % self.num_classes}

    def labels(self) -> np.ndarray:
        bits = keyed_bits(self._key, np.arange(self._n, dtype=np.uint64))
        return (bits % np.uint64(self.num_classes)).astype(np.int64)
