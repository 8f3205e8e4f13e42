"""A source seen through its corruption: the element of example i in epoch e, as training sees it.

Every element keeps the clean condition beside the observed one and a ``corrupted`` flag, so that
training can split its loss and evaluation can measure what the corruption did.
"""

from __future__ import annotations

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
