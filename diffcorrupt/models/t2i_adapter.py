"""T2I-Adapter (Mou et al. 2024): a light network of its own beside the frozen U-Net, turning the
control image into one feature map per U-Net level, added to the encoder before the level halves.

Unlike ControlNet it copies nothing and reads neither the noisy input nor the timestep, so it runs
once per sample, not once per step. Layout and names follow diffusers' ``FullAdapter``
(pixel-unshuffle to the latent size, ``conv_in``, one ``body_i`` per level of ``resnets_j``
blocks, average pooling between levels) so that its weights map by name.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffcorrupt.models import layers
from diffcorrupt.models.hint_embedder import halvings
from diffcorrupt.models.layers import Dtype
from diffcorrupt.models.unet import PAD_1, UNet, UNetControl


def pixel_unshuffle(x: jax.Array, factor: int) -> jax.Array:
    """PyTorch's ``PixelUnshuffle`` on NHWC: channel c, offset (i, j) -> c * factor**2 + i * factor + j."""
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // factor, factor, width // factor, factor, channels)
    return x.transpose(0, 1, 3, 5, 2, 4).reshape(batch, height // factor, width // factor, channels * factor**2)


class AdapterResBlock(nn.Module):
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.relu(layers.conv(x.shape[-1], 3, name="block1", dtype=self.dtype, padding=PAD_1)(x))
        return x + layers.conv(x.shape[-1], 1, name="block2", dtype=self.dtype)(h)


class AdapterLevel(nn.Module):
    """Halve (all levels but the first), widen by a 1x1 ``in_conv`` when the width changes, then
    ``num_res_blocks`` residual blocks."""

    features: int
    num_res_blocks: int
    halve: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.halve:  # AvgPool2d(2, ceil_mode=True): a partial window averages what it covers
            odd = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding=odd, count_include_pad=False)
        if x.shape[-1] != self.features:
            x = layers.conv(self.features, 1, name="in_conv", dtype=self.dtype)(x)
        for j in range(self.num_res_blocks):
            x = AdapterResBlock(self.dtype, name=f"resnets_{j}")(x)
        return x


class T2IAdapter(nn.Module):
    """(B, S, S, C) control images -> ``UNetControl(levels=...)`` for a U-Net of these level
    widths whose input is ``model_size`` square; S a power-of-two multiple of it."""

    channels: tuple[int, ...]
    model_size: int
    num_res_blocks: int = 2
    dtype: Dtype = jnp.float32

    @classmethod
    def for_unet(cls, unet: UNet, model_size: int, num_res_blocks: int = 2) -> "T2IAdapter":
        return cls(tuple(m * unet.model_channels for m in unet.channel_mult), model_size, num_res_blocks, unet.dtype)

    @nn.compact
    def __call__(self, hint: jax.Array) -> UNetControl:
        x = pixel_unshuffle(hint.astype(self.dtype), 2 ** halvings(hint.shape[1], self.model_size))
        x = layers.conv(self.channels[0], 3, name="conv_in", dtype=self.dtype, padding=PAD_1)(x)
        levels = []
        for i, width in enumerate(self.channels):
            x = AdapterLevel(width, self.num_res_blocks, i > 0, self.dtype, name=f"body_{i}")(x)
            levels.append(x)
        return UNetControl(levels=tuple(levels))
