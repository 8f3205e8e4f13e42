"""Figures written beside results: flip matrices and image grids (matplotlib, no display needed)."""

from __future__ import annotations

import pathlib
import textwrap
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def save_flip_matrix(path: pathlib.Path, matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str) -> None:
    """Heat map of corrupted examples counted by true class (rows) x served class (columns)."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    shown = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("label served for training")
    ax.set_ylabel("true label")
    ax.set_title(title, fontsize=10)
    fig.colorbar(shown, ax=ax, label="corrupted examples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_tiled(path: pathlib.Path, pixels: np.ndarray, columns: int | None = None) -> np.ndarray:
    """uint8 NHWC images tiled edge to edge, ``columns`` to a row (default: a near-square grid), and
    saved at their own resolution (no resampling, so what is seen is what the metrics read).
    Returns the grid (H, W, C)."""
    count, height, width, channels = pixels.shape
    side = columns or int(np.ceil(np.sqrt(count)))
    rows = -(-count // side)
    grid = np.zeros((rows * height, side * width, channels), np.uint8)
    for i, image in enumerate(pixels):
        r, c = divmod(i, side)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if channels == 1 else grid).save(path)
    return grid


def save_image_grid(path: pathlib.Path, images: np.ndarray, titles: Sequence[str], highlight: Sequence[bool],
                    columns: int = 8) -> None:
    """Images in [-1, 1] (NHWC) with a caption each; highlighted captions are drawn in red."""
    rows = -(-len(images) // columns)
    lines = max(len(textwrap.wrap(t, 24)) for t in titles) if titles else 1
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.8, rows * (1.6 + 0.13 * lines)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title, hot in zip(axes.flat, images, titles, highlight):
        pixels = np.clip((np.asarray(image) + 1.0) * 127.5, 0, 255).astype(np.uint8)
        ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray" if pixels.shape[-1] == 1 else None)
        wrapped = "\n".join(textwrap.fill(part, 24) for part in title.split("\n"))
        ax.set_title(wrapped, fontsize=6.5, color="red" if hot else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def distinct_colours(ax: plt.Axes, count: int) -> None:
    """Past 10 lines matplotlib's default palette repeats, and two runs or settings of one figure would share a
    colour (the memorization grid draws 12 settings in one); tab20 keeps up to 20 apart. Up to 10 the default
    stays."""
    if count > 10:
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)


def save_curves(path: pathlib.Path, curves: dict[str, tuple[Sequence[int], Sequence[float]]], ylabel: str, title: str) -> None:
    """One line per run: a metric against the training step."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    distinct_colours(ax, len(curves))
    for name, (steps, values) in curves.items():
        ax.plot(steps, values, marker="o", markersize=3, label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
