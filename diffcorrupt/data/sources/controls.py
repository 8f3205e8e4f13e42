"""What a personalization run reads beside each example to draw its control image from: the
example's pixels where the data are pre-encoded latents, or its control image from a user folder.

Both are read by the example's index in the whole split, not its number in a ``data.subset``, so
a subset of latents gets the pixels and control images of the same examples, and a control folder
needs images only for the examples the subset holds. The pixels of a latent folder come from the
dataset its ``encoding.json`` says it was encoded from.
"""

from __future__ import annotations

import pathlib
from typing import Callable

import ml_collections
import numpy as np

from diffcorrupt.data.sources.base import ClassSource, Element, Source, TextSource
from diffcorrupt.data.sources.folders import IMAGE_SUFFIXES, _shown, decoded
from diffcorrupt.errors import ConfigError, DataError

Reader = Callable[[int], Element]


class _Pixels:
    def __init__(self, data: ml_collections.ConfigDict):
        from diffcorrupt.data.latent_encoding import PLAN_FILE, pixel_data_config
        from diffcorrupt.data.sources.registry import make_source

        pixels = pixel_data_config(data)
        if pixels.name == "latent_records":
            raise DataError(f"data.control needs the pixels of the latents in '{data.data_dir}', but it has no "
                            f"{PLAN_FILE} to name the dataset they were encoded from; encode them with `diffcorrupt encode`")
        pixels.update(subset="", control="")  # read by index in the whole split
        self.source = make_source(pixels)

    def __call__(self, index: int) -> Element:
        return {"image": self.source[index]["image"]}


def check_control_dir(folder: str) -> pathlib.Path:
    root = pathlib.Path(folder)
    if not folder or not root.is_dir():
        raise ConfigError(f"config key 'data.control_dir' is '{_shown(folder)}', which is no folder; point it at "
                          "a folder of control images named by example index (0.png, 1.png, ...)")
    return root


class _ControlFolder:
    """One image per example, named by its index in the split (``17.png``; any image suffix)."""

    def __init__(self, folder: str, indices: np.ndarray):
        root = check_control_dir(folder)
        self.paths = {int(p.stem): p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit()}
        missing = [int(i) for i in indices if int(i) not in self.paths]
        if missing:
            raise DataError(f"data.control_dir '{_shown(folder)}' has no control image for example {missing[0]} "
                            f"({len(missing)} of {len(indices)} are missing); add {missing[0]}.png and the rest")

    def __call__(self, index: int) -> Element:
        return {"control_image": decoded(self.paths[index], "RGB")}


def with_controls(source: Source, data: ml_collections.ConfigDict) -> Source:
    """``source`` (a ``data.subset`` of the split, or all of it) with what ``data.control`` draws
    from added to every element."""
    indices = np.asarray(getattr(source, "indices", np.arange(len(source))), np.int64)  # in the whole split
    readers: list[Reader] = []
    if data.control == "canny" and data.name == "latent_records":
        readers.append(_Pixels(data))
    if data.control == "folder":
        readers.append(_ControlFolder(data.control_dir, indices))
    if not readers:
        return source
    kind = _ClassWithControls if isinstance(source, ClassSource) else _TextWithControls
    return kind(source, readers, indices)


class _WithControls:
    def __init__(self, source: Source, readers: list[Reader], indices: np.ndarray):
        self.source = source
        self.readers = readers
        self.split_indices = indices

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Element:
        element = dict(self.source[index])
        for read in self.readers:
            element.update(read(int(self.split_indices[index])))
        return element

    def __getattr__(self, name: str):
        if name in ("source", "readers", "split_indices"):  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)


class _ClassWithControls(_WithControls, ClassSource):
    def labels(self):
        return self.source.labels()

    def default_groups(self) -> list[list[int]] | None:
        return self.source.default_groups()


class _TextWithControls(_WithControls, TextSource):
    def caption(self, index: int) -> str:
        return self.source.caption(index)
