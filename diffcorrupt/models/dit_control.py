"""ControlNet-Transformer for DiT (PixArt-delta, Chen et al. 2024): a trainable copy of the first
blocks that reads the control image and feeds the frozen DiT through zero-initialised projections.

The copy shares the DiT's embedders and block layout (it is a ``DiT`` whose call stops after
``copies`` blocks), so the base's parameters initialise it by name (``control_init``). The control
image enters through a ``HintEmbedder`` that halves it to the token grid and adds it to the patch
tokens; each copied block's output leaves through a zero-initialised linear ``after_proj_k``
into the base's tokens after its block k. Untrained, the pair computes the base model exactly.

One difference from PixArt-delta, on purpose: there the copy of block k runs beside block k + 1
(after the base's first block), so each copy reads inputs its weights were not trained on; here
the copy of block k reads what block k reads, as ControlNet's U-Net copy does.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from diffcorrupt.models.dit import ZEROS, DiT
from diffcorrupt.models.hint_embedder import HintEmbedder
from diffcorrupt.models.layers import dense


class DiTControlNet(DiT):
    """``__call__(x, t, cond, null_mask, hint, train, guidance)`` -> the residuals that
    ``DiT.__call__(..., control=)`` takes; ``hint`` (B, S, S, C) control images, S a power-of-two
    multiple of the token grid. ``copies`` = 0 copies half the depth (PixArt-delta: 13 of 28)."""

    copies: int = 0

    @property
    def copy_count(self) -> int:
        return self.copies or self.depth // 2

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, cond: jax.Array, null_mask: jax.Array, hint: jax.Array,
                 train: bool = False, guidance: jax.Array | None = None) -> tuple[jax.Array, ...]:
        batch, grid = x.shape[0], x.shape[1] // self.patch
        tokens, c, context, context_mask = self.embed(x, t, cond, null_mask, train, guidance)
        hint = HintEmbedder(self.hidden, grid, dtype=self.dtype, name="hint_embedder")(hint)
        tokens = tokens + hint.reshape(batch, grid * grid, self.hidden)
        residuals = []
        for i in range(self.copy_count):
            tokens = self.block(i)(tokens, c, context, context_mask)
            residuals.append(dense(self.hidden, ("mlp", "embed"), name=f"after_proj_{i}", dtype=self.dtype,
                                   kernel_init=ZEROS)(tokens))
        return tuple(residuals)
