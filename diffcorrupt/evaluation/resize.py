"""Resizing to the Inception input exactly as the FID graph does it.

The "inception-2015-12-05" graph takes pixel values in [0, 255] and runs
Cast -> ResizeBilinear(299, 299) -> Sub(128) -> Mul(1/128), so the resize comes first and works on
float pixel values. Its ResizeBilinear is TF1's: ``align_corners=False`` without half-pixel
centres, i.e. output pixel ``d`` samples input coordinate ``d * in / out``, between the input
pixels ``floor`` and ``floor + 1`` (clamped to the last one) with linear weights. That is neither
PyTorch's ``interpolate(..., align_corners=False)`` (half-pixel centres, pytorch-fid) nor PIL's
antialiased bilinear, and FID moves by whole points between them on small images such as 32x32
samples, so this module reproduces the graph's variant for numbers comparable with the ADM
evaluator. Being linear, it commutes with the scaling up to rounding; the graph's order is kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

INCEPTION_SIZE = 299


def interpolation_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights of TF1 bilinear resizing along one axis."""
    src = np.arange(out_size, dtype=np.float64) * (in_size / out_size)
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    frac = src - low
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(matrix, (np.arange(out_size), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), high), frac)
    return matrix.astype(np.float32)


def resize_to_299(x: jax.Array) -> jax.Array:
    """Bilinear resize of NHWC float pixel values (0..255, before any scaling) to 299x299, as the
    FID graph's ResizeBilinear does; the identity for 299x299 input. Jittable (shapes are static)."""
    _, height, width, _ = x.shape
    if (height, width) == (INCEPTION_SIZE, INCEPTION_SIZE):
        return x
    rows = jnp.asarray(interpolation_matrix(height, INCEPTION_SIZE))
    cols = jnp.asarray(interpolation_matrix(width, INCEPTION_SIZE))
    return jnp.einsum("oh,bhwc,pw->bopc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)
