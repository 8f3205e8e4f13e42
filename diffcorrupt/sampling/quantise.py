"""Model outputs in [-1, 1] -> uint8 pixels, the one quantisation every sample file uses.

round((x + 1) * 127.5) clipped to [0, 255]: rounding, not the truncation of ADM's sampling script,
so the quantisation error is centred. It moves FID far less than the sample count does, but a
metrics file must say which was used, and records ``QUANTISATION``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

QUANTISATION = "uint8 = clip(round((x + 1) * 127.5), 0, 255)"


def quantise(images: jax.Array) -> jax.Array:
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
