"""The caption encoder of the text-conditional models, and the embedder that applies CEP to it.

LDM's text models train their transformer encoder jointly with the U-Net (``cond_stage_trainable``),
and the paper's CC3M LDM uses a BERT-base-shaped one over 77 tokens; ``TEXT_ENCODERS['bert-base']``
is that shape, ``'small'`` a CPU-sized one. Ours mask padding out of self-attention, so a caption's
encoding does not depend on how many pad tokens follow it.

``'ldm-bert'`` is diffusers' ``LDMBertModel`` at its default geometry (``LDMBertConfig``: 32
pre-LN layers 1280 wide, 8 heads of 64, a 5120-wide exact-GELU MLP, bias-free q/k/v, PyTorch's
LayerNorm eps 1e-5), the encoder of the released ``LDMTextToImagePipeline`` folders. That pipeline
calls it without an attention mask, so pads are attended to (``mask_padding=False``) and the
imported model computes what the pipeline computes. A ``model.text_encoder`` config value may also
be a JSON object of ``EncoderShape`` fields, for an imported encoder of another geometry.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffcorrupt.errors import ConfigError
from diffcorrupt.config.json_fields import json_object
from diffcorrupt.models import layers
from diffcorrupt.models.conditioning import ConditionNoise, PerturbCondition
from diffcorrupt.models.layers import Dtype
from diffcorrupt.models.tokenizer import make_tokenizer

# Hugging Face activation names (``activation_function`` of a bert/config.json) -> functions.
ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP's
}


@dataclasses.dataclass(frozen=True)
class EncoderShape:
    """The geometry of a ``TextEncoder``; the vocabulary size comes from the tokenizer."""

    width: int
    depth: int
    num_heads: int
    head_dim: int = 0  # attention width per head; 0 = width // num_heads
    ffn_dim: int = 0  # MLP hidden width; 0 = 4 * width
    activation: str = "gelu"  # a key of ACTIVATIONS
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    mask_padding: bool = True  # keep pad tokens out of self-attention and cross-attention
    causal: bool = False  # each token attends to the ones before it only (CLIP's text tower)


_JSON_TYPES = {"int": int, "str": str, "bool": bool, "float": (int, float)}  # EncoderShape's annotations

TEXT_ENCODERS: dict[str, EncoderShape] = {
    "bert-base": EncoderShape(width=768, depth=12, num_heads=12),
    "small": EncoderShape(width=256, depth=4, num_heads=4),
    "ldm-bert": EncoderShape(width=1280, depth=32, num_heads=8, head_dim=64, ffn_dim=5120, qkv_bias=False,
                             norm_eps=1e-5, mask_padding=False),
}


@functools.lru_cache(maxsize=32)
def encoder_shape(spec: str) -> EncoderShape:
    """A preset name of ``TEXT_ENCODERS`` or a JSON object of ``EncoderShape`` fields; a
    ``ConfigError`` names the key otherwise."""
    if spec in TEXT_ENCODERS:
        return TEXT_ENCODERS[spec]
    if not spec.lstrip().startswith("{"):
        raise ConfigError(f"config key 'model.text_encoder' is '{spec}', which is no text encoder; use '' (the model's "
                          f"default), one of {', '.join(TEXT_ENCODERS)}, or a JSON object of encoder fields")
    known = {field.name: field.type for field in dataclasses.fields(EncoderShape)}
    fields = json_object(spec, "model.text_encoder", known, '{"width": 256, "depth": 4, "num_heads": 4}')
    for name, value in fields.items():
        kind = _JSON_TYPES[known[name]]
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise ConfigError(f"config key 'model.text_encoder' sets '{name}' to {value!r}; it must be a {known[name]}")
    try:
        shape = EncoderShape(**fields)
    except TypeError as error:
        raise ConfigError(f"config key 'model.text_encoder' lacks a field ({error}); give width, depth and "
                          "num_heads at least") from None
    if shape.activation not in ACTIVATIONS:
        raise ConfigError(f"config key 'model.text_encoder' sets activation '{shape.activation}'; use one of "
                          f"{', '.join(ACTIVATIONS)}")
    return shape


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    width: int
    num_heads: int
    head_dim: int
    ffn_dim: int
    activation: str = "gelu"
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    causal: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None, train: bool) -> jax.Array:
        h = layers.layer_norm(epsilon=self.norm_eps, name="norm1", dtype=self.dtype)(x)
        h = layers.MultiHeadAttention(self.num_heads, self.head_dim, self.width, use_bias=self.qkv_bias,
                                      causal=self.causal, dtype=self.dtype, name="attn")(h, context_mask=mask)
        x = x + nn.Dropout(self.dropout)(h, deterministic=not train)
        h = layers.layer_norm(epsilon=self.norm_eps, name="norm2", dtype=self.dtype)(x)
        h = layers.dense(self.ffn_dim, ("embed", "mlp"), name="fc1", dtype=self.dtype)(h)
        h = layers.dense(self.width, ("mlp", "embed"), name="fc2", dtype=self.dtype)(ACTIVATIONS[self.activation](h))
        return x + nn.Dropout(self.dropout)(h, deterministic=not train)


class TextEncoder(nn.Module):
    """Token ids (B, L <= max_length) -> features (B, L, width)."""

    vocab_size: int
    max_length: int
    width: int
    depth: int
    num_heads: int
    head_dim: int = 0  # 0 = width // num_heads
    ffn_dim: int = 0  # 0 = 4 * width
    activation: str = "gelu"
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    mask_padding: bool = True
    causal: bool = False
    pad_id: int = 0
    dropout: float = 0.0  # residual-branch dropout, as BERT's hidden dropout; 0 = none
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        length = tokens.shape[1]
        if length > self.max_length:
            raise ValueError(f"{length} tokens exceed the encoder's max_length {self.max_length}")
        positions = self.param("positions", nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
                               (self.max_length, self.width))
        table = layers.embedding_table(self.vocab_size, self.width, name="token_embedding")
        # Gather the (small) table whole before the lookup, so that the lookup is sharded like the
        # tokens (over the batch); looking up in an FSDP-sharded table makes XLA replicate the result.
        x = jnp.take(nn.with_logical_constraint(table.embedding, (None, None)), tokens, axis=0)
        x = layers.constrain_batch((x + positions[None, :length]).astype(self.dtype))
        mask = tokens != self.pad_id if self.mask_padding else None
        for i in range(self.depth):
            x = EncoderBlock(self.width, self.num_heads, self.head_dim or self.width // self.num_heads,
                             self.ffn_dim or 4 * self.width, self.activation, self.qkv_bias, self.norm_eps,
                             self.dropout, self.dtype, causal=self.causal, name=f"blocks_{i}")(x, mask, train)
            x = layers.constrain_batch(x)
        return layers.layer_norm(epsilon=self.norm_eps, name="final_norm", dtype=self.dtype)(x)


class TextEmbedder(nn.Module):
    """Captions -> (context, context_mask or None) for cross-attention, with CEP applied to the encoding.

    Null rows (classifier-free guidance) are encoded as the empty caption, so the unconditional
    context is learned by the same encoder, as LDM does with its empty-string condition.
    ``encoder`` is a preset name or JSON spec (``encoder_shape``), ``tokenizer`` a
    ``model.tokenizer`` config value: both plain strings, so that the module stays hashable.
    """

    encoder: str
    max_length: int = 77
    noise: ConditionNoise = ConditionNoise()
    dtype: Dtype = jnp.float32
    tokenizer: str = "bytes"

    @nn.compact
    def __call__(self, tokens: jax.Array, null_mask: jax.Array,
                 train: bool = False) -> tuple[jax.Array, jax.Array | None]:
        if tokens.shape[1] != self.max_length:
            raise ValueError(f"expected captions of {self.max_length} tokens, got {tokens.shape[1]}")
        tokenizer, shape = make_tokenizer(self.tokenizer, self.max_length), encoder_shape(self.encoder)
        tokens = jnp.where(null_mask[:, None], jnp.asarray(tokenizer.empty)[None], tokens)
        context = TextEncoder(tokenizer.vocab_size, self.max_length, **dataclasses.asdict(shape),
                              pad_id=tokenizer.pad_id, dtype=self.dtype, name="encoder")(tokens, train)
        context = PerturbCondition(self.noise, name="perturb")(context, null_mask, train)
        return context, (tokens != tokenizer.pad_id if shape.mask_padding else None)
