"""The caption encoder of the text-conditional U-Net, and the embedder that applies CEP to it.

LDM's text models train their transformer encoder jointly with the U-Net (``cond_stage_trainable``),
and the paper's CC3M LDM uses a BERT-base-shaped one over 77 tokens; ``TEXT_ENCODERS['bert-base']``
is that shape, ``'small'`` a CPU-sized one. Padding is masked out of self-attention, so a caption's
encoding does not depend on how many pad tokens follow it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffcorrupt.models import layers
from diffcorrupt.models.conditioning import ConditionNoise, PerturbCondition
from diffcorrupt.models.layers import Dtype
from diffcorrupt.models.tokenizer import PAD, ByteTokenizer

TEXT_ENCODERS: dict[str, dict[str, int]] = {
    "bert-base": dict(width=768, depth=12, num_heads=12),
    "small": dict(width=256, depth=4, num_heads=4),
}


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with a 4x GELU MLP."""

    width: int
    num_heads: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
        h = layers.layer_norm(name="norm1", dtype=self.dtype)(x)
        h = layers.MultiHeadAttention(self.num_heads, self.width // self.num_heads, self.width, dtype=self.dtype,
                                      name="attn")(h, context_mask=mask)
        x = x + nn.Dropout(self.dropout)(h, deterministic=not train)
        h = layers.layer_norm(name="norm2", dtype=self.dtype)(x)
        h = layers.dense(4 * self.width, ("embed", "mlp"), name="fc1", dtype=self.dtype)(h)
        h = layers.dense(self.width, ("mlp", "embed"), name="fc2", dtype=self.dtype)(nn.gelu(h, approximate=False))
        return x + nn.Dropout(self.dropout)(h, deterministic=not train)


class TextEncoder(nn.Module):
    """Token ids (B, L <= max_length) -> features (B, L, width)."""

    vocab_size: int
    max_length: int
    width: int
    depth: int
    num_heads: int
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
        mask = tokens != PAD
        for i in range(self.depth):
            x = EncoderBlock(self.width, self.num_heads, self.dropout, self.dtype, name=f"blocks_{i}")(x, mask, train)
            x = layers.constrain_batch(x)
        return layers.layer_norm(name="final_norm", dtype=self.dtype)(x)


class TextEmbedder(nn.Module):
    """Captions -> (context, context_mask) for cross-attention, with CEP applied to the encoding.

    Null rows (classifier-free guidance) are encoded as the empty caption, so the unconditional
    context is learned by the same encoder, as LDM does with its empty-string condition.
    """

    encoder: str
    max_length: int = 77
    noise: ConditionNoise = ConditionNoise()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, null_mask: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        if tokens.shape[1] != self.max_length:
            raise ValueError(f"expected captions of {self.max_length} tokens, got {tokens.shape[1]}")
        empty = jnp.asarray(ByteTokenizer(self.max_length).empty)
        tokens = jnp.where(null_mask[:, None], empty[None], tokens)
        context = TextEncoder(ByteTokenizer.vocab_size, self.max_length, **TEXT_ENCODERS[self.encoder],
                              dtype=self.dtype, name="encoder")(tokens, train)
        context = PerturbCondition(self.noise, name="perturb")(context, null_mask, train)
        return context, tokens != PAD
