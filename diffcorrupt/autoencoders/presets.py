"""Autoencoder architectures by name: the two the paper's backbones run on, and small CPU ones.

A config fixes every parameter shape, so a stored or imported set of weights is checked against
it before anything runs. f (the downsampling factor) is 2^(len(block_out_channels) - 1).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from diffcorrupt.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """One autoencoder architecture. ``latent_channels`` is both the encoder's z_channels and the
    quant_conv's embed_dim (equal in every CompVis and Stable Diffusion first stage);
    ``scale_factor`` multiplies latents before diffusion sees them."""

    kind: Literal["kl", "vq"]
    in_channels: int
    out_channels: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    latent_channels: int
    norm_num_groups: int = 32
    codebook_size: int = 0
    mid_attention: bool = True
    scale_factor: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        if self.kind not in ("kl", "vq"):
            raise ConfigError(f"autoencoder kind {self.kind!r} is unknown; use 'kl' or 'vq'")
        if (self.kind == "vq") != (self.codebook_size > 0):
            raise ConfigError(f"a {self.kind} autoencoder needs codebook_size {'> 0' if self.kind == 'vq' else '0'}")
        if not self.block_out_channels or any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(
                f"block_out_channels {self.block_out_channels} must be non-empty multiples of "
                f"norm_num_groups {self.norm_num_groups}"
            )

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "block_out_channels": list(self.block_out_channels)}

    @classmethod
    def from_json(cls, record: dict) -> "AutoencoderConfig":
        """The config in a JSON record that may hold other keys too (``autoencoder.json``)."""
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})


PRESETS: dict[str, AutoencoderConfig] = {
    # Stable Diffusion's VAE (stabilityai/sd-vae-ft-*), the latent space of DiT.
    "kl-f8": AutoencoderConfig("kl", 3, 3, (128, 256, 512, 512), 2, 4, scale_factor=0.18215),
    # CompVis latent-diffusion first_stage_models/vq-f4, the latent space of LDM-4.
    "vq-f4": AutoencoderConfig("vq", 3, 3, (128, 256, 512), 2, 3, codebook_size=8192, scale_factor=1.0),
    "kl-f4-small": AutoencoderConfig("kl", 3, 3, (32, 64, 64), 1, 4, norm_num_groups=8, scale_factor=1.0),
    "vq-f4-small": AutoencoderConfig("vq", 3, 3, (32, 64, 64), 1, 3, norm_num_groups=8, codebook_size=256),
}


def preset(name: str) -> AutoencoderConfig:
    """The named preset, or a ``ConfigError`` listing the names."""
    if name not in PRESETS:
        raise ConfigError(f"autoencoder preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
