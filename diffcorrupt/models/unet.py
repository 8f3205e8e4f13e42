"""The latent-diffusion U-Net (CompVis ``openaimodel.UNetModel`` with ``use_spatial_transformer``).

Structure and parameter shapes follow CompVis/latent-diffusion so that its checkpoints can be
imported by name. A PyTorch key maps to a Flax path by one rule: a numeric segment joins the one
before it with '_' and the rest become path components ('input_blocks.1.1.transformer_blocks.0.
attn2.to_out.0.weight' -> input_blocks_1_1/transformer_blocks_0/attn2/to_out_0/kernel), with
weight -> kernel (Dense: transposed; Conv: OIHW -> HWIO) or scale (norms), and two exceptions:
``time_embed.{0,2}`` -> time_embed/{fc1,fc2} (the shared TimestepEmbedder), and LDM's class
conditioner ``cond_stage_model.embedding.weight`` -> cond_stage_model/table/embedding.

Differences from CompVis, all outside the U-Net's layout: the caption encoder is this project's
TextEncoder (LDM's x-transformers BERTEmbedder does not map; diffusers' LDMBert does, as the
``ldm-bert`` preset with a WordPiece ``tokenizer``), cross-attention ignores padded caption tokens
when the encoder masks them (CompVis and LDMBert attend to them), and a text encoder narrower or
wider than ``context_dim`` is followed by a learned projection ``context_proj`` (only the CPU
"small" text model needs one).

``unet_overrides`` reads the ``model.unet`` config value: a JSON object of the geometry fields
below, laid over the preset, so that an imported U-Net of any geometry is a config like any other.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffcorrupt.config.json_fields import json_object
from diffcorrupt.errors import ConfigError
from diffcorrupt.models import layers
from diffcorrupt.models.conditioning import ClassEmbedder, ConditionNoise
from diffcorrupt.models.layers import Dtype
from diffcorrupt.models.text_encoder import TextEmbedder, encoder_shape

ZEROS = nn.initializers.zeros
PAD_1 = ((1, 1), (1, 1))  # PyTorch's padding=1; 'SAME' pads a stride-2 conv on one side only

UNET_PRESETS: dict[str, dict[str, Any]] = {
    # configs/latent-diffusion/cin256-v2.yaml: LDM-4 on ImageNet, 64x64x3 VQ-f4 latents
    # (the caller passes num_classes=1000).
    "cin256-v2": dict(in_channels=3, out_channels=3, model_channels=192, channel_mult=(1, 2, 3, 5), num_res_blocks=2,
                      attention_resolutions=(8, 4, 2), num_heads=1, transformer_depth=1, context_dim=512),
    # The paper's CC3M LDM-4: the same backbone, cross-attending to a BERT-base-shaped encoder.
    "txt256": dict(in_channels=3, out_channels=3, model_channels=192, channel_mult=(1, 2, 3, 5), num_res_blocks=2,
                   attention_resolutions=(8, 4, 2), num_heads=1, transformer_depth=1, context_dim=768,
                   text_encoder="bert-base"),
    # CPU demo; as a text model its 256-wide encoder is projected to the 128-wide context.
    "small": dict(in_channels=3, out_channels=3, model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1,
                  attention_resolutions=(2, 4), num_heads=4, transformer_depth=1, context_dim=128,
                  text_encoder="small"),
}

# The fields ``model.unet`` may set, with their JSON types; the rest come from the data (channels,
# classes), from other config keys (text encoder, tokenizer, CEP, dtype) or are not geometry.
OVERRIDABLE: dict[str, type] = {
    "model_channels": int, "channel_mult": tuple, "num_res_blocks": int, "attention_resolutions": tuple,
    "num_heads": int, "transformer_depth": int, "context_dim": int, "use_scale_shift_norm": bool,
}


def unet_overrides(spec: str) -> dict[str, Any]:
    """The fields of a ``model.unet`` value ('' = none), lists as tuples; a ``ConfigError`` names
    the first field that is not overridable or not of its type."""
    if not spec:
        return {}
    fields = json_object(spec, "model.unet", OVERRIDABLE, '{"model_channels": 320, "channel_mult": [1, 2, 4, 4]}')
    out = {}
    for name, value in fields.items():
        kind = OVERRIDABLE[name]
        ints = isinstance(value, list) and all(type(v) is int for v in value)
        if (kind is tuple and not ints) or (kind is not tuple and type(value) is not kind):
            what = "a list of integers" if kind is tuple else f"a {kind.__name__}"
            raise ConfigError(f"config key 'model.unet' sets '{name}' to {value!r}; it must be {what}")
        out[name] = tuple(value) if kind is tuple else value
    return out


class CrossAttention(nn.Module):
    """CompVis ``CrossAttention``: bias-free to_q/to_k/to_v, biased to_out.0; self-attention when
    ``context`` is None. Separate projections (not layers.MultiHeadAttention's fused qkv) keep the
    checkpoint names and shapes."""

    num_heads: int
    head_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None, context_mask: jax.Array | None = None) -> jax.Array:
        inner = self.num_heads * self.head_dim
        context = x if context is None else context

        def project(name: str, source: jax.Array) -> jax.Array:
            h = layers.dense(inner, ("embed", "heads"), name=name, dtype=self.dtype, use_bias=False)(source)
            return h.reshape(*source.shape[:2], self.num_heads, self.head_dim)

        q, k, v = project("to_q", x), project("to_k", context), project("to_v", context)
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out = layers.attention(q, k, v, mask=mask).reshape(*x.shape[:2], inner)
        return layers.dense(x.shape[-1], ("heads", "embed"), name="to_out_0", dtype=self.dtype)(out)


class GEGLU(nn.Module):
    """CompVis ``GEGLU``: one Linear ``proj`` to value and gate halves, value * GELU(gate)."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = layers.dense(2 * self.features, ("embed", "mlp"), name="proj", dtype=self.dtype)(x)
        value, gate = jnp.split(h, 2, axis=-1)
        return value * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """CompVis ``FeedForward(glu=True)``: GEGLU to 4x the width (net.0), Linear back (net.2)."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        h = GEGLU(4 * dim, self.dtype, name="net_0")(x)
        return layers.dense(dim, ("mlp", "embed"), name="net_2", dtype=self.dtype)(h)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention over the condition, GEGLU MLP; each pre-LayerNorm, residual."""

    num_heads: int
    head_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None) -> jax.Array:
        def norm(name: str) -> nn.LayerNorm:
            return layers.layer_norm(epsilon=1e-5, name=name, dtype=self.dtype)  # torch.nn.LayerNorm's eps

        x = x + CrossAttention(self.num_heads, self.head_dim, self.dtype, name="attn1")(norm("norm1")(x))
        x = x + CrossAttention(self.num_heads, self.head_dim, self.dtype, name="attn2")(norm("norm2")(x), context,
                                                                                        context_mask)
        return x + FeedForward(self.dtype, name="ff")(norm("norm3")(x))


class SpatialTransformer(nn.Module):
    """GroupNorm, 1x1 proj_in, transformer blocks over the H*W tokens, zero-initialised 1x1
    proj_out, residual: the block starts as the identity."""

    num_heads: int
    head_dim: int
    depth: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None) -> jax.Array:
        batch, height, width, channels = x.shape
        inner = self.num_heads * self.head_dim
        h = layers.group_norm(epsilon=1e-6, name="norm", dtype=self.dtype)(x)  # CompVis Normalize: eps 1e-6
        h = layers.conv(inner, 1, name="proj_in", dtype=self.dtype)(h).reshape(batch, height * width, inner)
        for i in range(self.depth):
            h = BasicTransformerBlock(self.num_heads, self.head_dim, self.dtype, name=f"transformer_blocks_{i}")(
                h, context, context_mask)
        h = h.reshape(batch, height, width, inner)
        return x + layers.conv(channels, 1, name="proj_out", dtype=self.dtype, kernel_init=ZEROS)(h)


class ResBlock(nn.Module):
    """GN-SiLU-conv, + projected timestep embedding, GN-SiLU-dropout-zero conv, + (1x1) skip.
    With ``use_scale_shift_norm`` the embedding instead scales and shifts the second norm (FiLM)."""

    out_channels: int
    dropout: float = 0.0
    use_scale_shift_norm: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, train: bool) -> jax.Array:
        h = nn.silu(layers.group_norm(name="in_layers_0", dtype=self.dtype)(x))
        h = layers.conv(self.out_channels, 3, name="in_layers_2", dtype=self.dtype, padding=PAD_1)(h)
        emb_features = 2 * self.out_channels if self.use_scale_shift_norm else self.out_channels
        emb_out = layers.dense(emb_features, ("embed", "conv_out"), name="emb_layers_1", dtype=self.dtype)(nn.silu(emb))
        emb_out = emb_out[:, None, None, :]
        if self.use_scale_shift_norm:
            scale, shift = jnp.split(emb_out, 2, axis=-1)
            h = layers.group_norm(name="out_layers_0", dtype=self.dtype)(h) * (1 + scale) + shift
        else:
            h = layers.group_norm(name="out_layers_0", dtype=self.dtype)(h + emb_out)
        h = nn.Dropout(self.dropout)(nn.silu(h), deterministic=not train)
        h = layers.conv(self.out_channels, 3, name="out_layers_3", dtype=self.dtype, kernel_init=ZEROS, padding=PAD_1)(h)
        if x.shape[-1] != self.out_channels:
            x = layers.conv(self.out_channels, 1, name="skip_connection", dtype=self.dtype)(x)
        return x + h


class Downsample(nn.Module):
    """3x3 convolution of stride 2 (``op``), padded by one on each side as PyTorch's padding=1."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return layers.conv(x.shape[-1], 3, stride=2, name="op", dtype=self.dtype, padding=PAD_1)(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution (``conv``)."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return layers.conv(x.shape[-1], 3, name="conv", dtype=self.dtype, padding=PAD_1)(x)


class UNetControl(NamedTuple):
    """What a control branch adds to a U-Net: ControlNet's residuals, one per skip connection and
    one for the middle block's output (ControlNet, Zhang et al. 2023), or T2I-Adapter's features,
    one per level, added to the encoder before the level halves (T2I-Adapter, Mou et al. 2024)."""

    skips: tuple[jax.Array, ...] = ()
    middle: jax.Array | None = None
    levels: tuple[jax.Array, ...] = ()


class UNet(nn.Module):
    """eps/v-prediction U-Net over NHWC latents, cross-attending to a class or caption embedding.

    ``num_classes > 0``: labels (B,) through a ClassEmbedder (null row for guidance), used as a
    one-token context as LDM's ClassEmbedder does. ``num_classes == 0``: caption tokens
    (B, text_max_length) of the ``tokenizer`` through a TextEmbedder with the ``text_encoder``
    preset (or JSON spec). CEP is applied inside the embedder. The output is float32 whatever
    ``dtype`` computes in, for the loss.
    """

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    num_heads: int
    transformer_depth: int
    context_dim: int
    num_classes: int
    text_encoder: str = "bert-base"
    text_max_length: int = 77
    tokenizer: str = "bytes"  # a model.tokenizer config value
    noise: ConditionNoise = ConditionNoise()
    dropout: float = 0.0
    use_scale_shift_norm: bool = False
    guidance_dim: int = 0  # > 0: a distilled student taking its guidance scale (see TimestepEmbedder)
    dtype: Dtype = jnp.float32

    def condition(self, cond: jax.Array, null_mask: jax.Array, train: bool) -> tuple[jax.Array, jax.Array | None]:
        """(context (B, L, context_dim), key mask (B, L) or None)."""
        if self.num_classes > 0:
            c = ClassEmbedder(self.num_classes, self.context_dim, self.noise, self.dtype, name="cond_stage_model")(
                cond, null_mask, train)
            return c[:, None, :], None
        context, mask = TextEmbedder(self.text_encoder, self.text_max_length, self.noise, self.dtype, self.tokenizer,
                                     name="cond_stage_model")(cond, null_mask, train)
        if encoder_shape(self.text_encoder).width != self.context_dim:
            context = layers.dense(self.context_dim, (None, "embed"), name="context_proj", dtype=self.dtype)(context)
        return context, mask

    def embed(self, t: jax.Array, cond: jax.Array, null_mask: jax.Array, train: bool,
              guidance: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """(timestep embedding, context, context mask): what every block reads."""
        context, context_mask = self.condition(cond, null_mask, train)
        emb = layers.TimestepEmbedder(4 * self.model_channels, frequency_dim=self.model_channels,
                                      guidance_dim=self.guidance_dim, dtype=self.dtype, name="time_embed")(t, guidance)
        return emb, context, context_mask

    def res_block(self, channels: int, name: str) -> ResBlock:
        return ResBlock(channels, self.dropout, self.use_scale_shift_norm, self.dtype, name=name)

    def transformer(self, channels: int, name: str) -> SpatialTransformer:
        return SpatialTransformer(self.num_heads, channels // self.num_heads, self.transformer_depth, self.dtype,
                                  name=name)

    def encode(self, x: jax.Array, emb: jax.Array, context: jax.Array, context_mask: jax.Array | None, train: bool,
               hint: jax.Array | None = None, levels: Sequence[jax.Array] = ()) -> tuple[jax.Array, list[jax.Array]]:
        """The input blocks and the middle block: (the middle's output, the skips in order).
        ``hint``: a ControlNet's embedded control image, added after the first convolution;
        ``levels``: a T2I-Adapter's features, one per level, added before the level halves."""
        h = layers.conv(self.model_channels, 3, name="input_blocks_0_0", dtype=self.dtype, padding=PAD_1)(
            x.astype(self.dtype))
        if hint is not None:
            h = h + hint.astype(h.dtype)
        skips, block, ds = [layers.constrain_batch(h)], 1, 1
        for level, mult in enumerate(self.channel_mult):
            for j in range(self.num_res_blocks):
                channels = mult * self.model_channels
                h = self.res_block(channels, f"input_blocks_{block}_0")(h, emb, train)
                if ds in self.attention_resolutions:
                    h = self.transformer(channels, f"input_blocks_{block}_1")(h, context, context_mask)
                if level < len(levels) and j == self.num_res_blocks - 1:
                    h = h + levels[level].astype(h.dtype)
                skips.append(layers.constrain_batch(h))
                block += 1
            if level != len(self.channel_mult) - 1:
                h = Downsample(self.dtype, name=f"input_blocks_{block}_0")(h)
                skips.append(layers.constrain_batch(h))
                block, ds = block + 1, ds * 2

        channels = h.shape[-1]
        h = self.res_block(channels, "middle_block_0")(h, emb, train)
        h = self.transformer(channels, "middle_block_1")(h, context, context_mask)
        return layers.constrain_batch(self.res_block(channels, "middle_block_2")(h, emb, train)), skips

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, cond: jax.Array, null_mask: jax.Array,
                 train: bool = False, guidance: jax.Array | None = None, control: UNetControl | None = None) -> jax.Array:
        """``control``: what a control branch (``UNetControlNet``, ``T2IAdapter``) adds."""
        control = control or UNetControl()
        emb, context, context_mask = self.embed(t, cond, null_mask, train, guidance)
        h, skips = self.encode(x, emb, context, context_mask, train, levels=control.levels)
        if control.middle is not None:
            h = h + control.middle.astype(h.dtype)
        if control.skips:
            skips = [skip + residual.astype(skip.dtype) for skip, residual in zip(skips, control.skips, strict=True)]

        block, ds = 0, 2 ** (len(self.channel_mult) - 1)
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(self.num_res_blocks + 1):
                channels, sub = mult * self.model_channels, 1
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = self.res_block(channels, f"output_blocks_{block}_0")(h, emb, train)
                if ds in self.attention_resolutions:
                    h = self.transformer(channels, f"output_blocks_{block}_{sub}")(h, context, context_mask)
                    sub += 1
                if level and i == self.num_res_blocks:
                    h = Upsample(self.dtype, name=f"output_blocks_{block}_{sub}")(h)
                    ds //= 2
                h = layers.constrain_batch(h)
                block += 1

        h = nn.silu(layers.group_norm(name="out_0", dtype=self.dtype)(h))
        h = layers.conv(self.out_channels, 3, name="out_2", dtype=self.dtype, kernel_init=ZEROS, padding=PAD_1)(h)
        return h.astype(jnp.float32)
