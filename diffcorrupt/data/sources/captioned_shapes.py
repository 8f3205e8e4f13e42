"""A procedural captioned-image dataset: the embedded text-conditional default.

Each index deterministically picks a count, size, colour, shape and position, renders them and
writes a templated English caption ("two small red circles on the left"). Every attribute is
visible in the image and named in the caption, so a text-conditional model that ignores its
caption is easy to catch, and a swapped caption is wrong in a way that can be measured. Any N.
"""

from __future__ import annotations

import numpy as np

from diffcorrupt.data.keyed_random import derive_key, keyed_bits, keyed_uniform
from diffcorrupt.data.sources.base import Element, TextSource

COUNTS = ("one", "two", "three")
SIZES = ("small", "large")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 235),
    "yellow": (240, 220, 40), "purple": (160, 60, 210), "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle", "diamond")
POSITIONS = {  # phrase, and the (x0, y0, x1, y1) region in unit coordinates
    "left": ("on the left", (0.0, 0.0, 0.5, 1.0)),
    "right": ("on the right", (0.5, 0.0, 1.0, 1.0)),
    "top": ("at the top", (0.0, 0.0, 1.0, 0.5)),
    "bottom": ("at the bottom", (0.0, 0.5, 1.0, 1.0)),
    "center": ("in the center", (0.15, 0.3, 0.85, 0.7)),
}
ATTRIBUTES = ("count", "size", "colour", "shape", "position")
_CARDINALITY = (len(COUNTS), len(SIZES), len(COLOURS), len(SHAPES), len(POSITIONS))
_RADIUS = {"small": 0.085, "large": 0.15}
_BACKGROUND = np.array([24, 24, 28], np.float32)
_SUPERSAMPLE = 2


def attributes(index: int, key: int) -> tuple[int, ...]:
    """The attribute ids of one example, in the order of ATTRIBUTES."""
    bits = keyed_bits(key, index)
    out = []
    for cardinality in _CARDINALITY:
        bits, value = divmod(bits, cardinality)
        out.append(value)
    return tuple(out)


def caption_of(attrs: tuple[int, ...]) -> str:
    count, size, colour, shape, position = attrs
    noun = SHAPES[shape] + ("s" if count else "")
    phrase = POSITIONS[list(POSITIONS)[position]][0]
    return f"{COUNTS[count]} {SIZES[size]} {list(COLOURS)[colour]} {noun} {phrase}"


def _mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.82 * r
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.1 * r
    return (dy <= 0.8 * r) & (dy >= -r) & (np.abs(dx) <= 0.6 * (dy + r))  # triangle, apex up


def render(attrs: tuple[int, ...], index: int, key: int, resolution: int) -> np.ndarray:
    """uint8 (resolution, resolution, 3); objects spread along the long side of their region."""
    count, size, colour, shape, position = attrs
    x0, y0, x1, y1 = POSITIONS[list(POSITIONS)[position]][1]
    n = count + 1
    r = _RADIUS[SIZES[size]]
    side = resolution * _SUPERSAMPLE
    grid = (np.arange(side, dtype=np.float32) + 0.5) / side
    canvas = np.broadcast_to(_BACKGROUND, (side, side, 3)).copy()
    horizontal = (x1 - x0) >= (y1 - y0)
    for k in range(n):
        jitter = (keyed_uniform(key, index, 1 + k) - 0.5) * 0.08
        along = (k + 0.5) / n
        if horizontal:
            cx, cy = x0 + along * (x1 - x0), (y0 + y1) / 2 + jitter
        else:
            cx, cy = (x0 + x1) / 2 + jitter, y0 + along * (y1 - y0)
        inside = _mask(SHAPES[shape], grid[None, :] - cx, grid[:, None] - cy, r)
        canvas[inside] = COLOURS[list(COLOURS)[colour]]
    small = canvas.reshape(resolution, _SUPERSAMPLE, resolution, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.round(small).astype(np.uint8)


class CaptionedShapesSource(TextSource):
    """``num_examples`` procedurally generated (image, caption) pairs at ``resolution`` pixels."""

    def __init__(self, num_examples: int, resolution: int = 32, seed: int = 0):
        self._n = int(num_examples)
        self._resolution = int(resolution)
        self._key = derive_key(seed, "captioned_shapes")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Element:
        attrs = attributes(index, self._key)
        return {
            "image": render(attrs, index, self._key, self._resolution),
            "caption": caption_of(attrs),
            "attributes": np.asarray(attrs, np.int32),
        }

    def caption(self, index: int) -> str:
        return caption_of(attributes(index, self._key))
