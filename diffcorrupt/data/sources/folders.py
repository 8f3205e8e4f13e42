"""Images from folders: one subfolder per class, or images plus a ``captions.jsonl``.

Images keep their own size and mode here; the pipeline's preprocessing crops, resizes and converts
channels, so folders of mixed sizes and modes work as they are.

Folders come from elsewhere, so nothing in them is trusted: a listing entry must name a file inside
``data.data_dir`` (no absolute path, no ``..``) and give its caption as a string, and an image must
decode, and its header may not declare more pixels than its size can plausibly hold (a PNG of a
few hundred bytes can declare 12000x12000 pixels, which Pillow would allocate before failing).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from PIL import Image

from diffcorrupt.data.sources.base import ClassSource, Element, TextSource
from diffcorrupt.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
CAPTIONS_FILE = "captions.jsonl"
# Any image may have 4 megapixels; beyond that, at most 64 per byte of file (real photographs and
# renders have under 10 per byte; a decompression bomb has thousands).
PIXEL_ALLOWANCE = 1 << 22
PIXELS_PER_BYTE = 64


def _shown(text: object) -> str:
    """``text`` (a path, or an error that names one) as printable ASCII: the names in a folder made
    by someone else may hold newlines or terminal escapes, which must not reach the message as such."""
    return ascii(str(text))[1:-1]


def open_image(path: pathlib.Path) -> Image.Image:
    """The image at ``path``, opened but not yet decoded, or one sentence naming it: a file that is
    not an image, or whose header declares more pixels than its size accounts for."""
    try:
        image = Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        raise DataError(f"image '{_shown(path)}' cannot be read ({_shown(err)}); replace or remove it") from None
    size = path.stat().st_size
    if image.width * image.height > max(PIXEL_ALLOWANCE, PIXELS_PER_BYTE * size):
        image.close()
        raise DataError(f"image '{_shown(path)}' declares {image.width}x{image.height} pixels in {size} bytes, far "
                        "more than an image file that small holds (a decompression bomb); replace or remove it")
    return image


def decoded(path: pathlib.Path, mode: str | None = None) -> np.ndarray:
    """The pixels of ``path`` as uint8, converted to ``mode`` (default: L for grey images, else RGB),
    or one sentence naming the file when it does not decode."""
    with open_image(path) as image:
        try:
            return np.asarray(image.convert(mode or ("L" if image.mode in ("L", "I;16", "1") else "RGB")))
        except Exception as err:  # Pillow's decoders raise many types for one damaged file
            raise DataError(f"image '{_shown(path)}' cannot be read ({type(err).__name__}: {_shown(err)}); "
                            "replace or remove it") from None


def load_image(path: pathlib.Path) -> np.ndarray:
    """uint8 HWC, RGB, or one sentence naming the unreadable file."""
    return decoded(path, "RGB")


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
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise DataError(f"'{listing}' is not UTF-8 text ({err.reason} at byte {err.start}); "
                            "save it as UTF-8") from None
        self._files: list[pathlib.Path] = []
        self._captions: list[str] = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                file, caption = _entry(line, f"line {number} of '{listing}'")
                self._files.append(root / file)
                self._captions.append(caption)
        if not self._files:
            raise DataError(f"'{listing}' lists no images; add one line per image")

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> Element:
        return {"image": load_image(self._files[index]), "caption": self._captions[index]}

    def caption(self, index: int) -> str:
        return self._captions[index]


def _entry(line: str, where: str) -> tuple[str, str]:
    """(file, caption) of one listing line; the file must lie inside the listing's folder."""
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: brackets nested thousands deep
        entry = None
    if not isinstance(entry, dict) or "file" not in entry or "caption" not in entry:
        raise DataError(f"{where} is not a JSON object with 'file' and 'caption'; fix or remove it")
    file, caption = entry["file"], entry["caption"]
    if not isinstance(caption, str):
        kind = {bool: "true/false", int: "a number", float: "a number", list: "an array", dict: "an object"}
        raise DataError(f"{where} gives a caption that is {kind.get(type(caption), 'null')}, not a string; "
                        "write it in quotes")
    if not isinstance(file, str) or not file.strip() or "\x00" in file:
        raise DataError(f"{where} gives a 'file' that is not a path; write the image's path relative to the folder")
    posix, windows = pathlib.PurePosixPath(file), pathlib.PureWindowsPath(file)
    if posix.is_absolute() or windows.anchor or ".." in posix.parts or ".." in windows.parts:
        raise DataError(f"{where} names {ascii(file[:120])}, which is outside data.data_dir (an absolute path or "
                        "'..'); give the image's path relative to the folder, inside it")
    return file, caption
