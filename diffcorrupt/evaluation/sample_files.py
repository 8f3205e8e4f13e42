"""Images to evaluate, from any of the layouts the field passes around.

- a folder written by ``diffcorrupt sample`` (``samples_*.npz`` shards and ``settings.json``, which
  says which checkpoint and settings made them);
- one ADM-layout ``.npz`` (``arr_0`` uint8 NHWC, optional ``arr_1`` labels), such as the
  reference batches of openai/guided-diffusion or another codebase's samples;
- a folder of image files (PNG, JPEG, WebP, BMP), read in sorted path order.

Sample files are passed between people, so each ``.npz`` is checked before numpy reads it: numpy
allocates the shape an array's header declares before reading its bytes, and reads object arrays
by unpickling them. Every array must be plain (``allow_pickle`` stays off) and declare no more
bytes than its member holds (a deflated member at most ``INFLATE_RATIO`` times its size); the
images must then be uint8 NHWC with 1 or 3 channels and the labels one non-negative integer each.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from diffcorrupt.data.sources.folders import decoded
from diffcorrupt.errors import UserError
from diffcorrupt.sampling.shards import SETTINGS, SHARD_GLOB, read_shards

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
INFLATE_RATIO = 100
INFLATE_ALLOWANCE = 1 << 20  # bytes any .npz may inflate to beyond the ratio (small, blank arrays)
_ADM = "an ADM-layout sample file holds uint8 NHWC images as arr_0"
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what np.savez and np.savez_compressed write


@dataclasses.dataclass
class SampleSet:
    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray | None
    captions: np.ndarray | None
    settings: dict[str, Any] | None  # the sample job's record, when the set came from it
    source: str
    controls: np.ndarray | None = None  # a personalized run's control images (uint8 NHWC), one per sample

    def conditions(self) -> np.ndarray | None:
        return self.labels if self.labels is not None else self.captions


def read_samples(path: str | Path) -> SampleSet:
    """The images (and labels or captions) at ``path``; one ``UserError`` sentence for anything else."""
    path = Path(path)
    if path.is_dir() and any(path.glob(SHARD_GLOB)):
        for shard in sorted(path.glob(SHARD_GLOB)):
            check_npz(shard, ("arr_0", "index"))
        try:
            arrays = read_shards(path)
        except ValueError as err:  # shards of different image sizes or label kinds
            raise UserError(f"the sample shards of {path} do not fit together ({err}); "
                            "sample into a fresh --out") from None
        settings = _settings(path / SETTINGS)
        if settings and len(arrays["index"]) < settings["num_samples"]:
            raise UserError(f"{path} holds {len(arrays['index'])} of the {settings['num_samples']} samples it was "
                            "started for; run the same `diffcorrupt sample` command again to finish it")
        images = _checked(arrays["arr_0"], path)
        return SampleSet(images, _labels(arrays.get("arr_1"), len(images), path), arrays.get("captions"), settings,
                         str(path), arrays.get("control"))
    if path.is_file() and path.suffix == ".npz":
        check_npz(path, ("arr_0",))
        try:
            with np.load(path, allow_pickle=False) as batch:
                images, labels = batch["arr_0"], batch["arr_1"] if "arr_1" in batch.files else None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise UserError(f"{path} does not read as an .npz file ({err}); it may be truncated, copy it again") from None
        images = _checked(images, path)
        return SampleSet(images, _labels(labels, len(images), path), None, None, str(path))
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


def check_npz(path: Path, required: tuple[str, ...]) -> None:
    """Refuses ``path`` before numpy reads it: not a zip, a member that is not a plain ``.npy``
    array, an array that declares more bytes than its member holds, or a missing ``required`` one."""
    size = path.stat().st_size
    left = {zipfile.ZIP_STORED: size, zipfile.ZIP_DEFLATED: INFLATE_RATIO * size + INFLATE_ALLOWANCE}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                nbytes = _declared_bytes(archive, info, path)
                left[info.compress_type] -= nbytes
                if min(left.values()) < 0 or nbytes > INFLATE_RATIO * info.compress_size + INFLATE_ALLOWANCE:
                    raise UserError(f"{path} declares arrays of more bytes than it holds ({nbytes} at "
                                    f"{ascii(info.filename[:80])}); it is truncated or forged, so write it again")
            names = {name[: -len(".npy")] for name in archive.namelist()}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as err:
        raise UserError(f"{path} does not read as an .npz file ({type(err).__name__}: {ascii(str(err)[:160])}); "
                        "it may be truncated, copy it again") from None
    for name in required:
        if name not in names:
            why = _ADM if name == "arr_0" else "it is not a shard `diffcorrupt sample` wrote, so move it out of the folder"
            raise UserError(f"{path} has no {name}; {why}")


def _declared_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> int:
    """The bytes the ``.npy`` header of member ``info`` declares, read without reading the array."""
    name = ascii(info.filename[:80])
    if not info.filename.endswith(".npy") or info.compress_type not in _METHODS:
        raise UserError(f"{path} holds a member {name} that is not an array as np.savez writes it (a stored or "
                        "deflated .npy); write the file with np.savez")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = header(member)
    if dtype.hasobject:
        raise UserError(f"{path} holds Python objects in {name}, which numpy reads by unpickling (running code from "
                        "the file); the evaluator reads only plain arrays, so save the images as uint8")
    return math.prod(shape) * dtype.itemsize


def _settings(path: Path) -> dict[str, Any] | None:
    """The sample job's record, with the keys the evaluator reads checked."""
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not JSON ({err}); it is the record `diffcorrupt sample` writes, so sample into "
                        "a fresh --out") from None
    kinds = {"num_samples": int, "step": int, "workdir": str}
    if not isinstance(settings, dict) or not all(type(settings.get(k)) is kind for k, kind in kinds.items()):
        raise UserError(f"{path} lacks the integer num_samples and step or the workdir that `diffcorrupt sample` "
                        "records; sample into a fresh --out")
    return settings


def _read_image(path: Path) -> np.ndarray:
    array = decoded(path)
    return array[..., None] if array.ndim == 2 else array


def _checked(images: np.ndarray, path: Path) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"{path} holds {images.dtype} images of shape {list(images.shape)}; the evaluator reads uint8 "
                        "NHWC with 1 or 3 channels, quantised as round((x + 1) * 127.5)")
    if len(images) < 2:
        raise UserError(f"{path} holds {len(images)} image; statistics need at least 2")
    if min(images.shape[1:3]) < 1:
        raise UserError(f"{path} holds images of shape {list(images.shape[1:])}, which have no pixels; the evaluator "
                        "reads uint8 NHWC images of at least 1x1")
    return images


def _labels(labels: np.ndarray | None, count: int, path: Path) -> np.ndarray | None:
    if labels is None:
        return None
    if labels.dtype.kind not in "iu" or labels.shape != (count,) or (count and labels.min() < 0):
        raise UserError(f"{path} holds {labels.dtype} labels of shape {list(labels.shape)} for {count} images; arr_1 "
                        "holds one non-negative integer class per image")
    return labels
