"""The vector-quantised autoencoder (``VQModel`` of taming / LDM, LDM-4's latent space).

LDM's diffusion runs on the pre-quantisation features ``h`` (after quant_conv) and snaps them to the
codebook only when decoding, so ``encode`` stops before the codebook and ``decode`` quantises.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffcorrupt.autoencoders.blocks import Decoder, Encoder, coder_settings


class VQModel(nn.Module):
    """``encode(x) -> h``, ``quantize(h) -> (zq, indices)``, ``decode(h, quantize=True) -> x`` (NHWC)."""

    in_channels: int
    out_channels: int
    block_out_channels: Sequence[int]
    layers_per_block: int
    latent_channels: int
    codebook_size: int
    norm_num_groups: int = 32
    mid_attention: bool = True
    dtype: Any = jnp.float32

    def setup(self) -> None:
        common = coder_settings(self)
        self.encoder = Encoder(out_channels=self.latent_channels, **common)
        self.quant_conv = nn.Conv(self.latent_channels, (1, 1), dtype=self.dtype)
        # taming initialises the codebook uniformly in +-1/n.
        bound = 1.0 / self.codebook_size
        self.codebook = self.param(
            "codebook",
            lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound),
            (self.codebook_size, self.latent_channels),
        )
        self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1), dtype=self.dtype)
        self.decoder = Decoder(out_channels=self.out_channels, **common)

    def encode(self, x: jax.Array) -> jax.Array:
        return self.quant_conv(self.encoder(x)).astype(jnp.float32)

    def quantize(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The nearest codebook entry (L2) of every latent pixel, and its index."""
        flat = h.reshape(-1, h.shape[-1]).astype(jnp.float32)
        # |h - e|^2 up to the |h|^2 term, which is the same for every entry; HIGHEST keeps TF32 and
        # bf16 passes from picking a different entry than the float32 reference.
        cross = jnp.matmul(flat, self.codebook.T, precision=jax.lax.Precision.HIGHEST)
        indices = jnp.argmin(jnp.sum(self.codebook**2, axis=-1) - 2.0 * cross, axis=-1)
        return self.codebook[indices].reshape(h.shape), indices.reshape(h.shape[:-1])

    def decode(self, h: jax.Array, quantize: bool = True) -> jax.Array:
        if quantize:
            h = self.quantize(h)[0]
        return self.decoder(self.post_quant_conv(h.astype(self.dtype))).astype(jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The quantised reconstruction (also what ``init`` traces)."""
        return self.decode(self.encode(x))
