"""Sample shards on disk: the ADM layout, written atomically, so an interrupted run resumes.

Each global batch becomes ``samples_<first index>.npz`` holding ``arr_0`` (uint8 NHWC images, the
ADM evaluator's layout), ``arr_1`` (int32 class labels; absent for captions), ``captions`` (text
runs), ``control`` (a personalized run's control images, uint8) and ``index`` (the sample numbers j). A shard is written to a temporary name and renamed,
so a shard that exists is whole; on resume the samples whose index is in a readable shard are
kept and only the rest are generated. A shard that does not read back (a copy cut short) is set
aside as ``*.unreadable`` and its samples are generated again.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from diffcorrupt.errors import UserError

SHARD_GLOB = "samples_*.npz"
SETTINGS = "settings.json"


def write_shard(directory: Path, indices: np.ndarray, images: np.ndarray, labels: np.ndarray | None,
                captions: np.ndarray | None, controls: np.ndarray | None = None) -> Path:
    arrays: dict[str, np.ndarray] = {"arr_0": images, "index": indices.astype(np.int64)}
    if controls is not None:
        arrays["control"] = controls
    if labels is not None:
        arrays["arr_1"] = labels.astype(np.int32)
    if captions is not None:
        arrays["captions"] = captions.astype(str)
    path = directory / f"samples_{int(indices[0]):09d}.npz"
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(temporary, path)
    return path


def done_indices(directory: Path) -> np.ndarray:
    """The sample numbers already in readable shards (sorted); unreadable shards are set aside."""
    for leftover in directory.glob("samples_*.tmp"):
        leftover.unlink()
    found = []
    for path in sorted(directory.glob(SHARD_GLOB)):
        try:
            with np.load(path) as shard:
                found.append(shard["index"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            aside = path.with_suffix(".unreadable")
            path.rename(aside)
            logging.warning("sample shard %s does not read back (%s); moved it to %s and will sample it again",
                            path, err, aside)
    return np.unique(np.concatenate(found)) if found else np.zeros((0,), np.int64)


def prepare_directory(directory: Path, settings: dict[str, Any]) -> None:
    """Creates the folder and its ``settings.json``, or checks that a folder being resumed was made
    with the same settings (the sample count may grow: samples 0..N-1 do not depend on N)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SETTINGS
    if path.is_file():
        saved = json.loads(path.read_text())
        differing = sorted(k for k in set(saved) | set(settings) if k != "num_samples" and saved.get(k) != settings.get(k))
        if differing:
            key = differing[0]
            raise UserError(f"{directory} holds samples made with {key}={saved.get(key)!r}, not {settings.get(key)!r}; "
                            "pass another --out or remove that folder")
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def read_shards(directory: Path) -> dict[str, np.ndarray]:
    """Every shard of a folder, concatenated in sample order: arr_0, index, and arr_1 / captions."""
    paths = sorted(directory.glob(SHARD_GLOB))
    if not paths:
        raise UserError(f"{directory} holds no {SHARD_GLOB} sample shards; run `diffcorrupt sample` first")
    parts: dict[str, list[np.ndarray]] = {}
    for path in paths:
        try:
            with np.load(path) as shard:
                for key in shard.files:
                    parts.setdefault(key, []).append(shard[key])
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise UserError(f"sample shard {path} does not read back ({err}); run `diffcorrupt sample` again on "
                            "its folder to regenerate it") from err
    arrays = {key: np.concatenate(values) for key, values in parts.items()}
    order = np.argsort(arrays["index"], kind="stable")
    return {key: value[order] for key, value in arrays.items()}


def first_images(directory: Path, count: int) -> np.ndarray:
    """The images of the lowest sample numbers, about ``count`` of them, reading only as many
    shards as that takes (a 50K-sample folder of 256x256 images is 10 GB)."""
    images, indices = [], []
    for path in sorted(directory.glob(SHARD_GLOB)):
        with np.load(path) as shard:
            images.append(shard["arr_0"])
            indices.append(shard["index"])
        if sum(len(i) for i in indices) >= count:
            break
    order = np.argsort(np.concatenate(indices), kind="stable")[:count]
    return np.concatenate(images)[order]
