"""What every data source offers: random access by example index, grain's data-source protocol.

Elements are dicts of NumPy values: ``image`` (uint8, HWC) or ``latent`` (float, HWC), plus either
``label`` (int, class-conditional sources) or ``caption`` (str, text-conditional sources). The
example index is the identity that corruption, shuffling and augmentation key on, so a source must
return the same element for the same index on every host, every time.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from diffcorrupt.errors import ConfigError

Element = dict[str, Any]


class Source(abc.ABC):
    """A finite, random-access dataset (grain ``RandomAccessDataSource``)."""

    condition: str  # "class" or "text"

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Element: ...


class ClassSource(Source):
    """A class-conditional source with labels in [0, num_classes)."""

    condition = "class"
    num_classes: int
    class_names: list[str]

    def labels(self) -> np.ndarray:
        """Every label in index order; sources override this with a read that skips the images."""
        return np.fromiter((self[i]["label"] for i in range(len(self))), dtype=np.int64, count=len(self))

    def default_groups(self) -> list[list[int]] | None:
        """Class groups for asymmetric corruption when the config names none."""
        return None

    def class_id(self, item: int | str, where: str) -> int:
        """A class named by id or by name in ``where`` (a file or config key, for the message)."""
        if isinstance(item, int) and 0 <= item < self.num_classes:
            return item
        if isinstance(item, str) and item in self.class_names:
            return self.class_names.index(item)
        raise ConfigError(f"{where} names class {item!r}, which this dataset does not have; use its class names or "
                          f"ids in [0, {self.num_classes})")


class TextSource(Source):
    """A text-conditional source."""

    condition = "text"

    def caption(self, index: int) -> str:
        """The caption of one example; sources override this with a read that skips the image."""
        return self[index]["caption"]
