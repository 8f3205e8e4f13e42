"""The convolutional encoder and decoder shared by the KL and VQ autoencoders.

These compute exactly what taming-transformers / CompVis ``Encoder`` and ``Decoder`` compute (and
diffusers' ports of them in ``diffusers.models.autoencoders.vae``), in NHWC, so that released
weights reproduce their latents. Submodules are named after the CompVis parameters
(``down_{level}_block_{j}``, ``mid_attn_1``, ``up_{level}_upsample``; ``level`` counts resolutions
from the finest), which keeps the name mapping of ``convert`` a plain rewrite.

Normalisation and the attention softmax run in float32 whatever ``dtype`` the convolutions use.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
EPSILON = 1e-6  # every GroupNorm of these autoencoders


def _norm(groups: int, name: str) -> nn.GroupNorm:
    # use_fast_variance=False: E[x^2] - E[x]^2 loses digits on the large activations of the decoder.
    return nn.GroupNorm(num_groups=groups, epsilon=EPSILON, use_fast_variance=False, dtype=jnp.float32, name=name)


def _conv(features: int, kernel: int, name: str, dtype: Dtype, *, stride: int = 1, padding: Any = None) -> nn.Conv:
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)) if padding is None else padding,
        dtype=dtype,
        name=name,
    )


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus the input (through a 1x1 conv when the width changes)."""

    features: int
    groups: int = 32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.silu(_norm(self.groups, "norm1")(x)).astype(self.dtype)
        h = _conv(self.features, 3, "conv1", self.dtype)(h)
        h = nn.silu(_norm(self.groups, "norm2")(h)).astype(self.dtype)
        h = _conv(self.features, 3, "conv2", self.dtype)(h)
        if x.shape[-1] != self.features:
            x = _conv(self.features, 1, "nin_shortcut", self.dtype)(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with a residual connection."""

    groups: int = 32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, channels = x.shape
        h = _norm(self.groups, "norm")(x).astype(self.dtype).reshape(batch, height * width, channels)
        q, k, v = (nn.Dense(channels, dtype=self.dtype, name=n)(h) for n in ("q", "k", "v"))
        logits = jnp.einsum("bqc,bkc->bqk", q, k).astype(jnp.float32) * channels**-0.5
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = nn.Dense(channels, dtype=self.dtype, name="proj_out")(jnp.einsum("bqk,bkc->bqc", weights, v))
        return x + out.reshape(batch, height, width, channels)


class Downsample(nn.Module):
    """A 3x3 stride-2 conv after padding one row and column at the bottom and right only, as
    taming does (a symmetric padding would shift every latent by half a pixel)."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _conv(x.shape[-1], 3, "conv", self.dtype, stride=2, padding=((0, 1), (0, 1)))(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return _conv(x.shape[-1], 3, "conv", self.dtype)(x)


def _middle(x: jax.Array, features: int, groups: int, attention: bool, dtype: Dtype) -> jax.Array:
    """The lowest-resolution stage of both halves (its submodules join the calling module)."""
    x = ResnetBlock(features, groups, dtype, name="mid_block_1")(x)
    if attention:
        x = AttnBlock(groups, dtype, name="mid_attn_1")(x)
    return ResnetBlock(features, groups, dtype, name="mid_block_2")(x)


def coder_settings(model: nn.Module) -> dict:
    """The settings an autoencoder's Encoder and Decoder share, read off the autoencoder module."""
    return dict(block_out_channels=tuple(model.block_out_channels), layers_per_block=model.layers_per_block,
                groups=model.norm_num_groups, mid_attention=model.mid_attention, dtype=model.dtype)


class Encoder(nn.Module):
    """Image (N, H, W, in) -> features (N, H/f, W/f, out_channels), f = 2^(levels - 1)."""

    out_channels: int
    block_out_channels: Sequence[int]
    layers_per_block: int
    groups: int = 32
    mid_attention: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _conv(self.block_out_channels[0], 3, "conv_in", self.dtype)(x.astype(self.dtype))
        last = len(self.block_out_channels) - 1
        for level, features in enumerate(self.block_out_channels):
            for j in range(self.layers_per_block):
                x = ResnetBlock(features, self.groups, self.dtype, name=f"down_{level}_block_{j}")(x)
            if level != last:
                x = Downsample(self.dtype, name=f"down_{level}_downsample")(x)
        x = _middle(x, self.block_out_channels[-1], self.groups, self.mid_attention, self.dtype)
        x = nn.silu(_norm(self.groups, "norm_out")(x)).astype(self.dtype)
        return _conv(self.out_channels, 3, "conv_out", self.dtype)(x)


class Decoder(nn.Module):
    """Latent (N, h, w, c) -> image (N, h*f, w*f, out_channels); one more resnet per level than the
    encoder, as in taming."""

    out_channels: int
    block_out_channels: Sequence[int]
    layers_per_block: int
    groups: int = 32
    mid_attention: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        x = _conv(self.block_out_channels[-1], 3, "conv_in", self.dtype)(z.astype(self.dtype))
        x = _middle(x, self.block_out_channels[-1], self.groups, self.mid_attention, self.dtype)
        for level in reversed(range(len(self.block_out_channels))):
            features = self.block_out_channels[level]
            for j in range(self.layers_per_block + 1):
                x = ResnetBlock(features, self.groups, self.dtype, name=f"up_{level}_block_{j}")(x)
            if level != 0:
                x = Upsample(self.dtype, name=f"up_{level}_upsample")(x)
        x = nn.silu(_norm(self.groups, "norm_out")(x)).astype(self.dtype)
        return _conv(self.out_channels, 3, "conv_out", self.dtype)(x)
