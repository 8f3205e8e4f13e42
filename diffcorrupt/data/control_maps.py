"""The control image of one example as a control branch reads it: float32 HWC in [0, 1], from the
same training pixels and the same keyed flip as the example itself, so that an edge map lies
exactly on the image (or latent) it controls.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from diffcorrupt.data.edges import canny_edges


def control_channels(kind: str) -> int:
    """Canny maps are one channel of edge / no edge; folder images are RGB (segmentation colours)."""
    return 1 if kind == "canny" else 3


def edge_map(pixels: np.ndarray) -> np.ndarray:
    """uint8 training pixels (already flipped where the example is) -> (H, W, 1) edges as 0 or 1."""
    return canny_edges(pixels).astype(np.float32)[..., None]


def folder_map(image: np.ndarray, size: int, flip: bool) -> np.ndarray:
    """A user's RGB control image -> (size, size, 3): the centre square, resized by nearest
    neighbour, since a segmentation map's colours are labels that interpolation would invent."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
    array = np.asarray(square.resize((size, size), resample=Image.NEAREST))
    if flip:
        array = array[:, ::-1]
    return array.astype(np.float32) / 255.0
