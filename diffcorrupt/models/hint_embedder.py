"""The control image's way into a control branch: ControlNet's small convolutional encoder.

A stack of 3x3 convolutions halving the control image's size once per stage (16, 32, 96, 256
channels, as ControlNet's ``input_hint_block``) until it has the size of the model's input (a
U-Net's latents) or of its token grid (a DiT's patches), then a zero-initialised 3x3 convolution to
the model's width: an untrained branch adds exactly nothing. Layer names follow diffusers'
``ControlNetConditioningEmbedding`` (conv_in, blocks_i, conv_out) so that its weights map by name.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffcorrupt.errors import ConfigError
from diffcorrupt.models import layers
from diffcorrupt.models.layers import Dtype

STAGE_CHANNELS = (16, 32, 96, 256)
PAD_1 = ((1, 1), (1, 1))  # PyTorch's padding=1, as the stride-2 convolutions need


def halvings(control_size: int, model_size: int) -> int:
    """How many times a control image of ``control_size`` is halved to ``model_size``, or a
    ``ConfigError`` when no power of two relates them."""
    factor, remainder = divmod(control_size, model_size)
    if remainder or factor & (factor - 1):
        raise ConfigError(f"control images of {control_size}x{control_size} do not reduce to the model's "
                          f"{model_size}x{model_size} by halving; use control images of {model_size} times a power of two")
    return factor.bit_length() - 1


def stage_widths(count: int) -> tuple[int, ...]:
    """ControlNet's widths for an encoder that halves ``count`` times (the last one repeats)."""
    return STAGE_CHANNELS[:count + 1] + STAGE_CHANNELS[-1:] * max(0, count + 1 - len(STAGE_CHANNELS))


class HintEmbedder(nn.Module):
    """(B, S, S, C) control images -> (B, S / 2**k, S / 2**k, ``features``); ``stages`` overrides
    the channels of each stage (its length is k + 1)."""

    features: int
    model_size: int
    stages: tuple[int, ...] = ()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hint: jax.Array) -> jax.Array:
        count = halvings(hint.shape[1], self.model_size)
        stages = self.stages or stage_widths(count)
        if len(stages) != count + 1:
            raise ConfigError(f"the control encoder has {len(stages)} stages but halves its {hint.shape[1]}x{hint.shape[1]} "
                              f"control images {count} times; give it {count + 1} stage widths")
        h = nn.silu(layers.conv(stages[0], 3, name="conv_in", dtype=self.dtype, padding=PAD_1)(hint.astype(self.dtype)))
        for i, (width, wider) in enumerate(zip(stages[:-1], stages[1:])):
            h = nn.silu(layers.conv(width, 3, name=f"blocks_{2 * i}", dtype=self.dtype, padding=PAD_1)(h))
            h = nn.silu(layers.conv(wider, 3, stride=2, name=f"blocks_{2 * i + 1}", dtype=self.dtype, padding=PAD_1)(h))
        return layers.conv(self.features, 3, name="conv_out", dtype=self.dtype, padding=PAD_1,
                           kernel_init=nn.initializers.zeros)(h)
