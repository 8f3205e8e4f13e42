"""The KL-regularised autoencoder (``AutoencoderKL`` of Stable Diffusion, DiT's latent space).

The encoder predicts a diagonal Gaussian per latent pixel; DiT trains on samples of it (times
``scale_factor``), so sampling takes an explicit key to stay reproducible.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffcorrupt.autoencoders.blocks import Decoder, Encoder, coder_settings

LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamps to this


class AutoencoderKL(nn.Module):
    """``encode(x) -> (mean, logvar)``, ``sample(x, key) -> z``, ``decode(z) -> x`` (NHWC)."""

    in_channels: int
    out_channels: int
    block_out_channels: Sequence[int]
    layers_per_block: int
    latent_channels: int
    norm_num_groups: int = 32
    mid_attention: bool = True
    dtype: Any = jnp.float32

    def setup(self) -> None:
        common = coder_settings(self)
        self.encoder = Encoder(out_channels=2 * self.latent_channels, **common)
        self.quant_conv = nn.Conv(2 * self.latent_channels, (1, 1), dtype=self.dtype)
        self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1), dtype=self.dtype)
        self.decoder = Decoder(out_channels=self.out_channels, **common)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        moments = self.quant_conv(self.encoder(x)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def sample(self, x: jax.Array, key: jax.Array) -> jax.Array:
        """A draw of the posterior of ``x`` (unscaled)."""
        mean, logvar = self.encode(x)
        return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(self.post_quant_conv(z.astype(self.dtype))).astype(jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The reconstruction from the posterior mean (also what ``init`` traces)."""
        return self.decode(self.encode(x)[0])
