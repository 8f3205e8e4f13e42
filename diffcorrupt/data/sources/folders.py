"""Images from folders: one subfolder per class, or images plus a ``captions.jsonl``.

Images keep their own size and mode here; the pipeline's preprocessing crops, resizes and converts
channels, so folders of mixed sizes and modes work as they are.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffcorrupt.data.sources.base import ClassSource, Element, TextSource
from diffcorrupt.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
CAPTIONS_FILE = "captions.jsonl"


def load_image(path: pathlib.Path) -> np.ndarray:
    """uint8 HWC, RGB, or one sentence naming the unreadable file."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"image '{path}' cannot be read ({err}); replace or remove it") from None


def _root(data_dir: str, what: str) -> pathlib.Path:
    if not data_dir:
        raise DataError(f"data.data_dir is empty; set it to the folder that holds the {what}")
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data.data_dir '{data_dir}' is not a folder; set it to the folder that holds the {what}")
    return root


class ImageFolderSource(ClassSource):
    """``root/<class name>/<image>``; classes in sorted order of their folder names."""

    def __init__(self, data_dir: str):
        root = _root(data_dir, "one subfolder of images per class")
        self.class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.num_classes = len(self.class_names)
        self._files: list[pathlib.Path] = []
        labels = []
        for label, name in enumerate(self.class_names):
            files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self._files += files
            labels += [label] * len(files)
        if not self._files:
            raise DataError(f"no images found in class subfolders of '{root}'; put images in <root>/<class name>/")
        self._labels = np.asarray(labels, np.int64)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> Element:
        return {"image": load_image(self._files[index]), "label": int(self._labels[index])}

    def labels(self) -> np.ndarray:
        return self._labels


class CaptionFolderSource(TextSource):
    """``root/captions.jsonl`` with one ``{"file": <path relative to root>, "caption": <text>}`` per line."""

    def __init__(self, data_dir: str):
        root = _root(data_dir, f"images and a {CAPTIONS_FILE}")
        listing = root / CAPTIONS_FILE
        if not listing.is_file():
            raise DataError(f"'{listing}' does not exist; write one line {{\"file\": ..., \"caption\": ...}} per image")
        self._files: list[pathlib.Path] = []
        self._captions: list[str] = []
        for number, line in enumerate(listing.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._files.append(root / entry["file"])
                self._captions.append(str(entry["caption"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(
                    f"line {number} of '{listing}' is not a JSON object with 'file' and 'caption'; fix or remove it"
                ) from None
        if not self._files:
            raise DataError(f"'{listing}' lists no images; add one line per image")

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> Element:
        return {"image": load_image(self._files[index]), "caption": self._captions[index]}

    def caption(self, index: int) -> str:
        return self._captions[index]
