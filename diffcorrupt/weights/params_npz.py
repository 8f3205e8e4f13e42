"""The project's own weights format for converted networks (Inception, CLIP): one ``.npz`` of flat
``/``-joined float32 parameters plus a ``__meta__`` JSON string.

Written with fixed timestamps, so that the same weights always give the same bytes and so the same
sha256, which the metrics files record; read without pickles.
"""

from __future__ import annotations

import io
import json
import pathlib
import zipfile
from typing import Any

import jax
import numpy as np

from diffcorrupt.errors import UserError

META_KEY = "__meta__"
_NPZ_DATE = (1980, 1, 1, 0, 0, 0)


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        flat.update(flatten(value, path) if isinstance(value, dict) else {path: value})
    return flat


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def abstract_shapes(params: Any) -> dict[str, tuple[int, ...]]:
    """Flat ``/``-joined parameter path -> shape, of a module's ``eval_shape``'d parameters."""
    return {"/".join(key.key for key in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def save_params_npz(path: str | pathlib.Path, params: dict, meta: dict[str, Any]) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = dict(sorted(flatten(params).items()))
    entries[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
        for name, value in entries.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value, order="C"), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(name + ".npy", date_time=_NPZ_DATE), buffer.getvalue())
    partial.replace(path)


def read_params_npz(path: pathlib.Path, what: str, hint: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The flat arrays and the meta of ``path``; a file that is not one of ours is one sentence
    naming ``what`` it should have been and the ``hint`` that makes one."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        meta = json.loads(str(arrays.pop(META_KEY)))
        if not isinstance(meta, dict):
            raise ValueError("its meta is not a JSON object")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise UserError(f"{path} is not a readable {what} .npz ({error}); {hint}") from None
    return arrays, meta
