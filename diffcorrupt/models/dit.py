"""DiT (Peebles & Xie, 2023): a transformer over latent patches, conditioned by adaLN-Zero.

Class conditions add their embedding to the timestep embedding that drives every block's adaLN
modulation, as in the original. Text conditions (the CC3M half of the study) enter PixArt-style:
each block gains a cross-attention over the text encoder's tokens after its self-attention, and
adaLN is driven by the timestep alone. The adaLN projections and the final layer start at zero,
so an untrained DiT outputs exactly zero (and each block starts as the identity). Parameter names
follow the original (x_embedder, t_embedder, y_embedder, blocks_i, final_layer) so that its
checkpoints map by name.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffcorrupt.models.conditioning import ClassEmbedder, ConditionNoise
from diffcorrupt.models.layers import (
    Dtype, MultiHeadAttention, TimestepEmbedder, constrain_batch, dense, layer_norm, sincos_2d,
)

ZEROS = nn.initializers.zeros


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1 + scale[:, None]) + shift[:, None]


class Mlp(nn.Module):
    hidden: int
    out: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = dense(self.hidden, ("embed", "mlp"), name="fc1", dtype=self.dtype)(x)
        return dense(self.out, ("mlp", "embed"), name="fc2", dtype=self.dtype)(nn.gelu(x, approximate=True))


class DiTBlock(nn.Module):
    hidden: int
    num_heads: int
    mlp_ratio: float = 4.0
    cross_attention: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array, context: jax.Array | None = None,
                 context_mask: jax.Array | None = None) -> jax.Array:
        modulation = dense(6 * self.hidden, ("embed", "mlp"), name="adaLN_modulation", dtype=self.dtype,
                           kernel_init=ZEROS)(nn.silu(c))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(modulation, 6, axis=-1)
        head_dim = self.hidden // self.num_heads
        h = modulate(layer_norm(affine=False, name="norm1", dtype=self.dtype)(x), shift_msa, scale_msa)
        x = x + gate_msa[:, None] * MultiHeadAttention(self.num_heads, head_dim, self.hidden, dtype=self.dtype, name="attn")(h)
        if self.cross_attention:
            h = layer_norm(affine=False, name="norm_cross", dtype=self.dtype)(x)
            x = x + MultiHeadAttention(self.num_heads, head_dim, self.hidden, dtype=self.dtype, name="cross_attn")(
                h, context, context_mask)
        h = modulate(layer_norm(affine=False, name="norm2", dtype=self.dtype)(x), shift_mlp, scale_mlp)
        x = x + gate_mlp[:, None] * Mlp(int(self.hidden * self.mlp_ratio), self.hidden, dtype=self.dtype, name="mlp")(h)
        return constrain_batch(x)


class FinalLayer(nn.Module):
    hidden: int
    patch: int
    out_channels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        modulation = dense(2 * self.hidden, ("embed", "mlp"), name="adaLN_modulation", dtype=self.dtype,
                           kernel_init=ZEROS)(nn.silu(c))
        shift, scale = jnp.split(modulation, 2, axis=-1)
        x = modulate(layer_norm(affine=False, name="norm_final", dtype=self.dtype)(x), shift, scale)
        return dense(self.patch * self.patch * self.out_channels, ("embed", None), name="linear", dtype=self.dtype,
                     kernel_init=ZEROS)(x)


class DiT(nn.Module):
    """``__call__(x NHWC, t (B,), cond, null_mask (B,), train, guidance)``: labels (B,) when
    ``num_classes`` > 0, else caption tokens (B, L) of the ``tokenizer`` encoded by the text encoder
    preset (or JSON spec) ``text_encoder``; ``guidance`` (B,) guidance scales when ``guidance_dim``
    > 0 (a distilled student, see TimestepEmbedder)."""

    input_size: int
    in_channels: int
    patch: int
    hidden: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    learned_sigma: bool = False
    num_classes: int = 1000
    text_encoder: str = "small"
    text_max_length: int = 77
    tokenizer: str = "bytes"  # a model.tokenizer config value
    noise: ConditionNoise = ConditionNoise()
    guidance_dim: int = 0
    dtype: Dtype = jnp.float32

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learned_sigma else self.in_channels

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch) ** 2

    def embed(self, x: jax.Array, t: jax.Array, cond: jax.Array, null_mask: jax.Array, train: bool,
              guidance: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array | None]:
        """(patch tokens with their positions, the adaLN condition, text context and its mask or
        None twice): what every block reads, shared with the ControlNet copy of the first blocks."""
        batch, size, _, _ = x.shape
        grid = size // self.patch
        patch_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")  # xavier on the flattened kernel
        x = nn.Conv(self.hidden, (self.patch, self.patch), strides=(self.patch, self.patch), padding="VALID",
                    dtype=self.dtype, name="x_embedder",
                    kernel_init=nn.with_logical_partitioning(patch_init, (None, None, "conv_in", "embed")),
                    bias_init=nn.with_logical_partitioning(ZEROS, ("embed",)))(x.astype(self.dtype))
        x = x.reshape(batch, grid * grid, self.hidden) + jnp.asarray(sincos_2d(self.hidden, grid), self.dtype)
        x = constrain_batch(x)
        c = TimestepEmbedder(self.hidden, guidance_dim=self.guidance_dim, dtype=self.dtype, name="t_embedder")(t, guidance)
        if self.num_classes:
            c = c + ClassEmbedder(self.num_classes, self.hidden, self.noise, self.dtype, name="y_embedder")(cond, null_mask, train)
            return x, c, None, None
        from diffcorrupt.models.text_encoder import TextEmbedder

        context, context_mask = TextEmbedder(self.text_encoder, self.text_max_length, self.noise, self.dtype,
                                             self.tokenizer, name="y_embedder")(cond, null_mask, train)
        context = dense(self.hidden, (None, "embed"), name="y_proj", dtype=self.dtype)(context)
        return x, c, context, context_mask

    def block(self, i: int) -> DiTBlock:
        return DiTBlock(self.hidden, self.num_heads, self.mlp_ratio, not self.num_classes, self.dtype, name=f"blocks_{i}")

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, cond: jax.Array, null_mask: jax.Array, train: bool = False,
                 guidance: jax.Array | None = None, control: Sequence[jax.Array] = ()) -> jax.Array:
        """``control``: a ControlNet branch's residuals (``DiTControlNet``), the k-th added to the
        tokens that leave block k."""
        batch, size, _, _ = x.shape
        grid = size // self.patch
        x, c, context, context_mask = self.embed(x, t, cond, null_mask, train, guidance)
        for i in range(self.depth):
            x = self.block(i)(x, c, context, context_mask)
            if i < len(control):
                x = x + control[i].astype(x.dtype)
        x = FinalLayer(self.hidden, self.patch, self.out_channels, self.dtype, name="final_layer")(x, c)
        x = x.reshape(batch, grid, grid, self.patch, self.patch, self.out_channels)
        x = x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, size, size, self.out_channels)
        return x.astype(jnp.float32)


def fixed_position_count(model: DiT) -> int:
    """Entries of the fixed position table, which the original counts among its parameters."""
    return model.num_patches * model.hidden
