"""ControlNet for the latent-diffusion U-Net (Zhang et al. 2023): a trainable copy of the encoder
and the middle block that reads the control image and feeds the frozen U-Net's skips.

The copy is a ``UNet`` whose call stops after the middle block, so the base's parameters
initialise it by name (``control_init``); the control image enters through a ``HintEmbedder``
(ControlNet's ``input_hint_block``) added after the first convolution, and every skip and the
middle block's output leave through zero-initialised 1x1 convolutions (``zero_convs_i``,
``middle_block_out``, CompVis' ``cldm`` names): untrained, the pair computes the base exactly.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from diffcorrupt.models import layers
from diffcorrupt.models.hint_embedder import HintEmbedder
from diffcorrupt.models.unet import UNet, UNetControl


def zero_conv(channels: int, name: str, dtype) -> nn.Conv:
    return layers.conv(channels, 1, name=name, dtype=dtype, kernel_init=nn.initializers.zeros)


class UNetControlNet(UNet):
    """``__call__(x, t, cond, null_mask, hint, train, guidance)`` -> the ``UNetControl`` that
    ``UNet.__call__(..., control=)`` takes; ``hint`` (B, S, S, C) control images, S a power-of-two
    multiple of the latent size."""

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, cond: jax.Array, null_mask: jax.Array, hint: jax.Array,
                 train: bool = False, guidance: jax.Array | None = None) -> UNetControl:
        emb, context, context_mask = self.embed(t, cond, null_mask, train, guidance)
        hint = HintEmbedder(self.model_channels, x.shape[1], dtype=self.dtype, name="hint_embedder")(hint)
        h, skips = self.encode(x, emb, context, context_mask, train, hint=hint)
        residuals = tuple(zero_conv(skip.shape[-1], f"zero_convs_{i}", self.dtype)(skip) for i, skip in enumerate(skips))
        return UNetControl(skips=residuals, middle=zero_conv(h.shape[-1], "middle_block_out", self.dtype)(h))
