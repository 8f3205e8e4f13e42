"""A small CNN trained per dataset: the feature space and the condition judge where Inception is not.

Inception features of 32x32 grey clothes or procedural shapes say little, so for Fashion-MNIST and
the captioned shapes the evaluator uses a classifier the project trains itself
(``classifier_training``). Its 128-d global-average-pooled activations ("pool") serve the Frechet
distance, precision/recall and memorization; its heads say whether a generated image shows the
condition it was generated for: one softmax head over the classes, or one head per caption attribute.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffcorrupt.data.sources.caption_parse import parse_caption
from diffcorrupt.evaluation.batched import map_in_batches
from diffcorrupt.errors import UserError

# Channels per stage; every stage halves the resolution (32 -> 4 pixels), which keeps a training
# step cheap enough for a CPU. The last width is the dimension of the "pool" features.
WIDTHS = (32, 64, 128)
FEATURE_DIM = WIDTHS[-1]


class Classifier(nn.Module):
    """uint8 NHWC images -> (pool features (N, FEATURE_DIM), logits of all heads concatenated)."""

    heads: Sequence[int]
    widths: Sequence[int] = WIDTHS

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = images.astype(jnp.float32) / 127.5 - 1.0
        # Two coordinate channels, so that where something is (a caption attribute) survives the
        # global pooling below instead of hinging on border effects.
        n, h, w, _ = x.shape
        ys, xs = jnp.meshgrid(jnp.linspace(-1.0, 1.0, h), jnp.linspace(-1.0, 1.0, w), indexing="ij")
        x = jnp.concatenate([x, jnp.broadcast_to(jnp.stack([ys, xs], -1), (n, h, w, 2))], axis=-1)
        for width in self.widths:
            x = nn.Conv(width, (3, 3), strides=2)(x)
            x = nn.relu(nn.GroupNorm(num_groups=8)(x))
        pool = x.mean(axis=(1, 2))
        return pool, nn.Dense(sum(self.heads))(pool)


def predict(logits: np.ndarray, heads: Sequence[int]) -> np.ndarray:
    """Concatenated logits -> labels (N,) for one head, or attribute ids (N, A) for several."""
    splits = np.split(np.asarray(logits), np.cumsum(heads)[:-1], axis=-1)
    ids = np.stack([part.argmax(axis=-1) for part in splits], axis=-1)
    return ids[:, 0] if len(heads) == 1 else ids


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: Classifier, params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    # One compiled function per model, shape and placement, shared by every instance that loads it.
    return model.apply({"params": params}, images)


def check_classifier_input(images: np.ndarray, image_shape: tuple[int, int, int], dataset: str) -> None:
    """Refuses images the classifier of ``dataset`` cannot take; the evaluator asks before training it."""
    if images.dtype != np.uint8 or images.shape[1:] != tuple(image_shape):
        raise UserError(
            f"the {dataset} classifier takes uint8 images of shape (N, {', '.join(map(str, image_shape))}), "
            f"got {images.dtype} {images.shape}; convert the samples to the dataset's resolution and channels"
        )


class ClassifierFeatures:
    """A trained ``Classifier`` as a batched feature extractor (``load_classifier`` reads one).

    Batches have one fixed size (the last one padded), so a run compiles once, and are split over a
    1-D "data" mesh of ``devices`` (default: this process's) that holds the parameters replicated. ``meta`` is
    what ``classifier.json`` records; ``weights_hash`` and ``dataset`` identify the feature space in
    reports, so that numbers from different feature networks are never compared.
    """

    name = "classifier"

    def __init__(self, params: dict, meta: dict, *, batch_size: int = 256, devices: Sequence[jax.Device] | None = None):
        devices = jax.local_devices() if devices is None else list(devices)
        self.meta = meta
        self.heads = tuple(meta["heads"])
        self.head_names = tuple(meta["head_names"])
        self.weights_hash = meta["weights_sha256"]
        self.dataset = f"{meta['dataset']}-{meta['resolution']}px"
        self.image_shape = (meta["resolution"], meta["resolution"], meta["channels"])
        self.batch_size = -(-batch_size // len(devices)) * len(devices)
        mesh = Mesh(np.array(devices), ("data",))
        self._batch = NamedSharding(mesh, PartitionSpec("data"))
        self._params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        self._model = Classifier(self.heads, tuple(meta["widths"]))

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (N, H, W, C) -> {"pool": (N, 128) float32, "logits": (N, sum of head sizes) float32}."""
        images = np.asarray(images)
        check_classifier_input(images, self.image_shape, self.dataset)
        return map_in_batches(lambda batch: dict(zip(("pool", "logits"), _apply(self._model, self._params, batch))),
                              images, self.batch_size, self._batch, {"pool": (FEATURE_DIM,), "logits": (sum(self.heads),)})

    def predict(self, logits: np.ndarray) -> np.ndarray:
        """Labels (N,) for class data, attribute ids (N, A) for captions."""
        return predict(logits, self.heads)

    def targets(self, conditions: Sequence) -> np.ndarray:
        """Conditions as the ids ``predict`` returns: class labels, or the attributes captions name."""
        if self.meta["condition"] == "text":
            return np.array([parse_caption(c) for c in conditions], np.int64).reshape(-1, len(self.heads))
        return np.asarray(conditions, np.int64)

    def accuracy(self, logits: np.ndarray, conditions: Sequence) -> dict[str, float]:
        """``condition_accuracy`` from logits already computed (the evaluator has them from ``__call__``)."""
        if len(logits) != len(conditions):
            raise ValueError(f"{len(logits)} logits but {len(conditions)} conditions")
        hits = self.predict(logits) == self.targets(conditions)
        if hits.ndim == 1:
            return {"accuracy": float(hits.mean())}
        scores = {"accuracy": float(hits.all(axis=1).mean())}
        scores.update({f"accuracy_{name}": float(hits[:, k].mean()) for k, name in enumerate(self.head_names)})
        return scores

    def condition_accuracy(self, images: np.ndarray, conditions: Sequence) -> dict[str, float]:
        """How often the classifier sees the condition an image was made for: {"accuracy"} for class
        labels; for captions also "accuracy_<attribute>", with "accuracy" the all-attributes match."""
        return self.accuracy(self(images)["logits"], conditions)
