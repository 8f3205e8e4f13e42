"""Well-formed ``torch.save`` files written without PyTorch, for importer tests that run in CI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hostile_pickles import dct, plain_tensor, proto2, text, torch_zip


def state_dict_file(path: Path, arrays: dict[str, np.ndarray | tuple[int, ...]]) -> Path:
    """A well-formed torch.save file of float32 tensors (a shape stands for zeros of that shape)."""
    items, storages = [], {}
    for key, (name, array) in enumerate(arrays.items()):
        array = np.zeros(array, np.float32) if isinstance(array, tuple) else np.asarray(array, np.float32)
        stride = tuple(math.prod(array.shape[i + 1 :]) for i in range(array.ndim))
        items.append((text(name), plain_tensor(str(key), array.shape, stride, array.size)))
        storages[str(key)] = array.tobytes()
    path.write_bytes(torch_zip(proto2(dct(*items)), storages))
    return path
