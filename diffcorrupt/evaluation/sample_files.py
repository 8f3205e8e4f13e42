"""Images to evaluate, from any of the layouts the field passes around.

- a folder written by ``diffcorrupt sample`` (``samples_*.npz`` shards and ``settings.json``, which
  says which checkpoint and settings made them);
- one ADM-layout ``.npz`` (``arr_0`` uint8 NHWC, optional ``arr_1`` labels), such as the
  reference batches of openai/guided-diffusion or another codebase's samples;
- a folder of image files (PNG, JPEG, WebP, BMP), read in sorted path order.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffcorrupt.errors import UserError
from diffcorrupt.sampling.shards import SETTINGS, SHARD_GLOB, read_shards

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclasses.dataclass
class SampleSet:
    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray | None
    captions: np.ndarray | None
    settings: dict[str, Any] | None  # the sample job's record, when the set came from it
    source: str

    def conditions(self) -> np.ndarray | None:
        return self.labels if self.labels is not None else self.captions


def read_samples(path: str | Path) -> SampleSet:
    path = Path(path)
    if path.is_dir() and any(path.glob(SHARD_GLOB)):
        arrays = read_shards(path)
        settings_path = path / SETTINGS
        settings = json.loads(settings_path.read_text()) if settings_path.is_file() else None
        if settings and len(arrays["index"]) < settings["num_samples"]:
            raise UserError(f"{path} holds {len(arrays['index'])} of the {settings['num_samples']} samples it was "
                            "started for; run the same `diffcorrupt sample` command again to finish it")
        return SampleSet(_checked(arrays["arr_0"], path), arrays.get("arr_1"), arrays.get("captions"), settings, str(path))
    if path.is_file() and path.suffix == ".npz":
        try:
            with np.load(path) as batch:
                if "arr_0" not in batch.files:
                    raise UserError(f"{path} has no arr_0; an ADM-layout sample file holds uint8 NHWC images as arr_0")
                images, labels = batch["arr_0"], batch["arr_1"] if "arr_1" in batch.files else None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise UserError(f"{path} does not read as an .npz file ({err}); it may be truncated, copy it again") from err
        return SampleSet(_checked(images, path), labels, None, None, str(path))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{path} holds neither sample shards nor image files ({', '.join(IMAGE_SUFFIXES)})")
        images = [_read_image(p) for p in files]
        sizes = sorted({image.shape for image in images})
        if len(sizes) > 1:
            raise UserError(f"{path} holds images of {len(sizes)} sizes ({sizes[0]} and {sizes[-1]}, ...); "
                            "resize them to one size, the size the model generates")
        return SampleSet(_checked(np.stack(images), path), None, None, None, str(path))
    raise UserError(f"{path} does not exist; pass a folder written by `diffcorrupt sample`, an ADM .npz or an image folder")


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("L" if image.mode in ("L", "I;16", "1") else "RGB"))
    except OSError as err:
        raise UserError(f"image {path} does not open ({err}); remove or replace it") from err
    return array[..., None] if array.ndim == 2 else array


def _checked(images: np.ndarray, path: Path) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"{path} holds {images.dtype} images of shape {list(images.shape)}; the evaluator reads uint8 "
                        "NHWC with 1 or 3 channels, quantised as round((x + 1) * 127.5)")
    if len(images) < 2:
        raise UserError(f"{path} holds {len(images)} image; statistics need at least 2")
    return images
