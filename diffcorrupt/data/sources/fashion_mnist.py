"""Fashion-MNIST (Zalando, MIT licence): the embedded class-conditional default.

The full 60k/10k set is read from Debian's ``dataset-fashion-mnist`` package when it is installed;
otherwise the 10k test split kept inside this package (with its licence, under ``assets/``) serves
every split, so that the demo and the tests run on a machine with nothing but Python.
"""

from __future__ import annotations

import gzip
import pathlib
import zlib

import numpy as np
from absl import logging

from diffcorrupt.data.sources.base import ClassSource, Element
from diffcorrupt.errors import DataError

DEBIAN_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
EMBEDDED_DIR = pathlib.Path(__file__).resolve().parent.parent / "assets" / "fashion_mnist"
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# Groups of look-alike classes for asymmetric corruption: tops, and footwear.
GROUPS = [[0, 2, 4, 6], [5, 7, 9]]
_FILE_PREFIX = {"train": "train", "test": "t10k"}
INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist`"


def read_idx(path: pathlib.Path, expected_dims: int) -> np.ndarray:
    """Reads one gzipped IDX file (the MNIST container), checking its header against its size."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"'{path}' is not a readable gzip file ({err}); reinstall the dataset, {INSTALL_HINT}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08 or data[3] != expected_dims:
        raise DataError(f"'{path}' is not an IDX file of {expected_dims} dimension(s); {INSTALL_HINT}")
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(expected_dims))
    offset = 4 + 4 * expected_dims
    if len(data) - offset != int(np.prod(shape)):
        raise DataError(f"'{path}' is truncated ({len(data) - offset} of {int(np.prod(shape))} bytes); {INSTALL_HINT}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def locate(split: str, data_dir: str = "") -> tuple[pathlib.Path, str, bool]:
    """(directory, file prefix, is_embedded_fallback) for a split."""
    if split not in _FILE_PREFIX:
        raise DataError(f"Fashion-MNIST has no split '{split}'; set data.split to 'train' or 'test'")
    prefix = _FILE_PREFIX[split]
    directory = pathlib.Path(data_dir) if data_dir else DEBIAN_DIR
    if (directory / f"{prefix}-images-idx3-ubyte.gz").is_file():
        return directory, prefix, False
    if data_dir:
        raise DataError(
            f"no Fashion-MNIST files ({prefix}-images-idx3-ubyte.gz) in data.data_dir '{data_dir}'; "
            f"point it at the folder that holds them, or leave it empty to use {DEBIAN_DIR} ({INSTALL_HINT})"
        )
    return EMBEDDED_DIR, "t10k", True


class FashionMnistSource(ClassSource):
    num_classes = 10
    class_names = CLASS_NAMES

    def __init__(self, split: str = "train", data_dir: str = ""):
        directory, prefix, embedded = locate(split, data_dir)
        if embedded:
            logging.warning(
                "Fashion-MNIST: %s not found, so split '%s' is served by the embedded 10k test split; "
                "for the full 60k/10k set, %s.", DEBIAN_DIR, split, INSTALL_HINT,
            )
        self.embedded = embedded
        self._images = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz", 3)[..., None]
        self._labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", 1).astype(np.int64)
        if len(self._images) != len(self._labels):
            raise DataError(f"Fashion-MNIST images and labels in '{directory}' differ in count; {INSTALL_HINT}")

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> Element:
        return {"image": self._images[index], "label": int(self._labels[index])}

    def labels(self) -> np.ndarray:
        return self._labels

    def default_groups(self) -> list[list[int]]:
        return GROUPS
