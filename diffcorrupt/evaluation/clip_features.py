"""CLIP as a feature network of the evaluator: image embeddings for every metric, text embeddings
for the CLIP score.

Images are prepared as CLIP's own preprocessing does (OpenAI's ``clip.load`` transform, and Hugging
Face's ``CLIPImageProcessor``): the shorter side resized to the model's resolution with Pillow's
bicubic filter on the uint8 image, a centre crop, then (x / 255 - mean) / std with CLIP's
per-channel mean and std. Grey images are repeated to RGB first. The resize runs on the host
(Pillow, so that the pixels are CLIP's), the rest on the devices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from PIL import Image

from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.batched import ShardedNet
from diffcorrupt.evaluation.clip import Clip, ClipShape
from diffcorrupt.evaluation.clip_weights import ClipWeights

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def resize_and_crop(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 1 or 3) -> uint8 (N, size, size, 3), as CLIP's transform: shorter side to
    ``size`` (the longer to int(size * long / short)), bicubic, then the central ``size`` square."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("RGB")
        width, height = picture.size
        resized = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
        picture = picture.resize(resized, Image.Resampling.BICUBIC)
        left, top = int(round((resized[0] - size) / 2.0)), int(round((resized[1] - size) / 2.0))
        out[i] = np.asarray(picture.crop((left, top, left + size, top + size)))
    return out


def normalise(pixels: jax.Array) -> jax.Array:
    return (pixels.astype(jnp.float32) / 255.0 - jnp.asarray(MEAN)) / jnp.asarray(STD)


@functools.cache
def _jitted(shape: ClipShape) -> tuple[Callable, Callable]:
    """The two towers' forward functions, shared by every ClipFeatures of one geometry."""
    model = Clip(shape)
    image = jax.jit(lambda params, pixels: {"pool": model.apply({"params": params}, normalise(pixels),
                                                                method=Clip.encode_image)})
    text = jax.jit(lambda params, tokens: {"text": model.apply({"params": params}, tokens, method=Clip.encode_text)})
    return image, text


class ClipFeatures:
    """CLIP image embeddings (``pool``, the joint space's, unnormalised) of uint8 NHWC images of any
    size, and text embeddings of captions; batches split over the mesh's devices, parameters replicated."""

    name = "clip"

    def __init__(self, weights: ClipWeights, batch_size: int = 64, mesh: Mesh | None = None):
        self._net = ShardedNet(weights.params, batch_size, mesh)
        self.batch_size = self._net.batch_size
        self.shape = weights.shape
        self.tokenizer = weights.tokenizer
        self.weights_hash = weights.sha256
        self._image, self._text = _jitted(weights.shape)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """{"pool": (N, embed_dim) float32} for uint8 images (N, H, W, 1 or 3)."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise UserError(f"CLIP features need uint8 images of shape (N, H, W, 1 or 3), got {images.dtype} {images.shape}")
        return self._net.map(self._image, images, {"pool": (self.shape.embed_dim,)},
                             prepare=lambda batch: resize_and_crop(batch, self.shape.image_size))

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), embed_dim) float32, unnormalised. Each distinct text is encoded once: a class
        run's 50,000 samples share 1,000 captions."""
        distinct, which = np.unique(np.asarray(list(texts), dtype=str), return_inverse=True)
        tokens = self.tokenizer.encode_batch(distinct.tolist(), self.shape.context_length)
        return self._net.map(self._text, tokens, {"text": (self.shape.embed_dim,)})["text"][which.reshape(-1)]
