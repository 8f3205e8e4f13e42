"""Model names -> Flax modules: ``DiT-{T,S,B,L,XL}/{2,4,8}`` and ``LDM-<U-Net preset>``.

DiT sizes are the paper's (S, B, L, XL) plus T, a tiny width-192 twin for CPU runs of the
embedded datasets. Text-conditional models (``num_classes=0``) get the BERT-base-shaped text
encoder from size B up, and the small one below, unless ``text_encoder`` names another; captions
are tokenized by ``tokenizer`` ('bytes' or a WordPiece vocab.txt). ``unet`` (JSON) overrides the
geometry of an LDM preset, for imported U-Nets.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffcorrupt.config.loading import suggest
from diffcorrupt.errors import ConfigError
from diffcorrupt.models.conditioning import ConditionNoise
from diffcorrupt.models.dit import DiT

DIT_SIZES = {  # hidden, depth, heads
    "T": (192, 6, 3),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}
DIT_PATCHES = (2, 4, 8)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def model_names() -> list[str]:
    from diffcorrupt.models.unet import UNET_PRESETS

    return [f"DiT-{s}/{p}" for s in DIT_SIZES for p in DIT_PATCHES] + [f"LDM-{name}" for name in UNET_PRESETS]


def make_model(name: str, *, input_shape: tuple[int, int, int], num_classes: int, learned_sigma: bool = False,
               noise: ConditionNoise = ConditionNoise(), dtype: str = "float32", text_max_length: int = 77,
               tokenizer: str = "bytes", text_encoder: str = "", unet: str = "", guidance_dim: int = 0) -> nn.Module:
    """The named model for inputs of ``input_shape`` (H, W, C); ``num_classes=0`` means captions.
    ``tokenizer``, ``text_encoder``, ``unet`` and ``guidance_dim`` are the ``model.*`` config values
    of those names."""
    height, width, channels = input_shape
    if height != width:
        raise ConfigError(f"inputs of {height}x{width} are not square; the models take square images or latents")
    if unet and not name.startswith("LDM-"):
        raise ConfigError(f"config key 'model.unet' is set but model '{name}' is no U-Net; set it to '' or use an LDM-*")
    if name.startswith("DiT-") and "/" in name:
        size, _, patch = name[4:].partition("/")
        if size in DIT_SIZES and patch.isdigit() and int(patch) in DIT_PATCHES:
            hidden, depth, heads = DIT_SIZES[size]
            if height % int(patch):
                raise ConfigError(f"model '{name}' needs an input size divisible by {patch}, got {height}")
            return DiT(
                input_size=height, in_channels=channels, patch=int(patch), hidden=hidden, depth=depth, num_heads=heads,
                learned_sigma=learned_sigma, num_classes=num_classes,
                text_encoder=text_encoder or ("small" if size in ("T", "S") else "bert-base"),
                text_max_length=text_max_length, tokenizer=tokenizer, noise=noise, guidance_dim=guidance_dim,
                dtype=DTYPES[dtype],
            )
    if name.startswith("LDM-"):
        from diffcorrupt.models.unet import UNET_PRESETS, UNet, unet_overrides

        preset = dict(UNET_PRESETS.get(name[4:], {}))
        if preset:
            preset.update(unet_overrides(unet))
            preset.update(in_channels=channels, out_channels=2 * channels if learned_sigma else channels,
                          num_classes=num_classes, noise=noise, guidance_dim=guidance_dim, dtype=DTYPES[dtype])
            halvings = len(preset["channel_mult"]) - 1
            if height % 2**halvings:
                raise ConfigError(f"model '{name}' halves its input {halvings} times; use a size divisible by {2**halvings}")
            if not num_classes:
                preset.update(text_max_length=text_max_length, tokenizer=tokenizer)
                if text_encoder:
                    preset["text_encoder"] = text_encoder
            return UNet(**preset)
    raise ConfigError(f"config key 'model.name' is '{name}'{suggest(name, model_names())}; use one of {', '.join(model_names())}")


def model_from_config(config: ml_collections.ConfigDict, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return make_model(
        config.model.name, input_shape=input_shape, num_classes=num_classes, learned_sigma=config.model.learned_sigma,
        noise=ConditionNoise.from_config(config.model), dtype=config.model.dtype,
        text_max_length=config.model.text_max_length, tokenizer=config.model.tokenizer,
        text_encoder=config.model.text_encoder, unet=config.model.unet, guidance_dim=config.model.guidance_dim,
    )


def example_inputs(model: nn.Module, input_shape: tuple[int, int, int], batch: int = 1) -> tuple:
    """(x, t, cond, null_mask) of the right shapes and dtypes, for init and tracing."""
    x = jnp.zeros((batch, *input_shape), jnp.float32)
    t = jnp.zeros((batch,), jnp.int32)
    if model.num_classes:
        cond = jnp.zeros((batch,), jnp.int32)
    else:
        cond = jnp.zeros((batch, model.text_max_length), jnp.int32)
    return x, t, cond, jnp.zeros((batch,), bool)


def parameter_count(params) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))
