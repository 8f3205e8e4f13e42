"""CLIP (Radford et al. 2021) in Flax: the image and text towers, as the paper's measurements use them.

The paper computes its CLIP score, RMD and memorization in "CLIP ViT-B/16" features, so ``VIT_B16``
(OpenAI's ViT-B/16: 224 px, 16 px patches, 12 layers 768 wide, a 12-layer 512-wide text tower over
77 tokens, 512-d joint space, quick-GELU) is the default geometry; ``ClipShape`` takes any ViT
CLIP's (B/32, L/14), read off the weights when they are imported. Both towers are pre-LN
transformers built from the blocks our text encoder uses (``EncoderBlock``): the image tower adds a
class token to the patch tokens and projects that token's final state; the text tower is causal and
projects the state at the end-of-text token, which OpenAI finds as the largest id in each row.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffcorrupt.models import layers
from diffcorrupt.models.text_encoder import EncoderBlock, TextEncoder


@dataclasses.dataclass(frozen=True)
class ClipShape:
    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    activation: str = "quick_gelu"  # a key of text_encoder.ACTIVATIONS: OpenAI's weights use quick-GELU
    norm_eps: float = 1e-5


VIT_B16 = ClipShape()


class ImageTower(nn.Module):
    """Normalised pixels (B, S, S, 3), S = ``image_size`` -> image embeddings (B, embed_dim)."""

    shape: ClipShape

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        s = self.shape
        x = nn.Conv(s.vision_width, (s.patch_size,) * 2, strides=(s.patch_size,) * 2, padding="VALID",
                    use_bias=False, name="patch_embed")(pixels)
        x = x.reshape(x.shape[0], -1, s.vision_width)
        token = self.param("class_embedding", nn.initializers.normal(0.02), (s.vision_width,))
        x = jnp.concatenate([jnp.broadcast_to(token, (x.shape[0], 1, s.vision_width)), x], axis=1)
        x = x + self.param("positions", nn.initializers.normal(0.02), x.shape[1:])
        x = layers.layer_norm(epsilon=s.norm_eps, name="pre_norm")(x)
        for i in range(s.vision_layers):
            x = EncoderBlock(s.vision_width, s.vision_heads, s.vision_width // s.vision_heads, 4 * s.vision_width,
                             s.activation, norm_eps=s.norm_eps, name=f"blocks_{i}")(x, None, False)
        x = layers.layer_norm(epsilon=s.norm_eps, name="post_norm")(x[:, 0])
        return layers.dense(s.embed_dim, ("embed", None), use_bias=False, name="projection")(x)


class TextTower(nn.Module):
    """Token ids (B, context_length), zero-padded after the end-of-text token -> text embeddings (B, embed_dim)."""

    shape: ClipShape

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        s = self.shape
        x = TextEncoder(s.vocab_size, s.context_length, s.text_width, s.text_layers, s.text_heads,
                        activation=s.activation, norm_eps=s.norm_eps, mask_padding=False, causal=True,
                        name="encoder")(tokens)
        x = x[jnp.arange(x.shape[0]), jnp.argmax(tokens, axis=-1)]
        return layers.dense(s.embed_dim, ("embed", None), use_bias=False, name="projection")(x)


class Clip(nn.Module):
    """Both towers; ``__call__`` exists to initialise them together (``encode_image``/``encode_text`` are used)."""

    shape: ClipShape = VIT_B16

    def setup(self) -> None:
        self.image = ImageTower(self.shape)
        self.text = TextTower(self.shape)

    def __call__(self, pixels: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.image(pixels), self.text(tokens)

    def encode_image(self, pixels: jax.Array) -> jax.Array:
        return self.image(pixels)

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        return self.text(tokens)
