"""A source seen through its corruption: the element of example i in epoch e, as training sees it.

Every element keeps the clean condition beside the observed one and a ``corrupted`` flag, so that
training can split its loss and evaluation can measure what the corruption did. ``read`` serves one
element (the per-index functions); ``read_many`` serves a batch with the vectorised forms, which
is what the pipeline uses, so that corruption costs a fraction of a microsecond per example.
"""

from __future__ import annotations

import numpy as np

from diffcorrupt.data.corruption.build import Corruption
from diffcorrupt.data.corruption.caption_swap import CaptionSwap
from diffcorrupt.data.sources.base import Element, Source


class CorruptedSource:
    def __init__(self, source: Source, corruption: Corruption):
        self.source = source
        self.corruption = corruption
        self.condition = source.condition

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Element:
        return self.read(index, 0)

    def read(self, index: int, epoch: int) -> Element:
        element = dict(self.source[index])
        element["index"] = index
        if isinstance(self.corruption, CaptionSwap):
            partner = self.corruption.partner_one(index, epoch)
            element["clean_caption"] = element["caption"]
            if partner is not None:
                element["caption"] = self.source.caption(partner)
            element["corrupted"] = partner is not None
        else:
            clean = int(element["label"])
            element["label"], element["corrupted"] = self.corruption.observe_one(index, clean, epoch)
            element["clean_label"] = clean
        return element

    def read_many(self, indices: np.ndarray, epochs: np.ndarray) -> list[Element]:
        """``[read(i, e) for i, e in zip(indices, epochs)]``, with the corruption vectorised."""
        indices = np.asarray(indices, np.int64)
        epochs = np.asarray(epochs, np.int64)
        elements = [dict(self.source[int(i)], index=int(i)) for i in indices]
        swap = isinstance(self.corruption, CaptionSwap)
        for epoch in np.unique(epochs):
            rows = np.flatnonzero(epochs == epoch)
            if swap:
                partners = self.corruption.partners(indices[rows], int(epoch))
                for row, partner in zip(rows, partners):
                    element = elements[row]
                    element["clean_caption"] = element["caption"]
                    if partner >= 0:
                        element["caption"] = self.source.caption(int(partner))
                    element["corrupted"] = bool(partner >= 0)
            else:
                clean = np.array([elements[row]["label"] for row in rows], np.int64)
                observed, corrupted = self.corruption.observe(indices[rows], clean, int(epoch))
                for row, label, flag, true in zip(rows, observed, corrupted, clean):
                    elements[row].update(label=int(label), corrupted=bool(flag), clean_label=int(true))
        return elements
