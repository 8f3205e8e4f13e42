"""Read a ``.safetensors`` file as numpy arrays, with a damaged or forged file as one sentence.

The format runs no code (a JSON header, then raw bytes), and the ``safetensors`` library checks
the header's offsets against the file; what is left is to turn its errors into a ``UserError``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from diffcorrupt.errors import UserError


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of ``path`` by name."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{path} is not a readable safetensors file ({ascii(str(error)[:160])}); download it "
                        "again") from None
