"""What the step sees of the data: the model's input shape, and batches in the step's layout.

Captions are tokenized here, on the host, so the pipeline stays model-agnostic and the step gets
plain int32 arrays; the abstract batch lets the step compile before any data is read.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from diffcorrupt.data.control_maps import control_channels
from diffcorrupt.data.global_batch import batch_sharding
from diffcorrupt.models.tokenizer import Tokenizer


def input_spec(config: ml_collections.ConfigDict, source) -> tuple[tuple[int, int, int], int]:
    """(input shape, number of classes, 0 for captions) of the configured data."""
    meta = getattr(source, "meta", None)
    shape = tuple(meta["latent_shape"]) if meta else (config.data.image_size, config.data.image_size, config.data.channels)
    return shape, getattr(source, "num_classes", 0) if source.condition == "class" else 0


def control_shape(config: ml_collections.ConfigDict, source) -> tuple[int, int, int] | None:
    """The shape of the batches' control images (at the pixels' size, for latents too), or None."""
    if not config.data.control:
        return None
    size = (getattr(source, "meta", None) or {}).get("image_size", config.data.image_size)
    return size, size, control_channels(config.data.control)


def model_batch(batch: dict[str, np.ndarray], tokenizer: Tokenizer | None) -> dict[str, np.ndarray]:
    """The fields the step reads, in the dtypes it expects; captions become tokens here."""
    out = {"corrupted": batch["corrupted"].astype(bool)}
    key = "latent" if "latent" in batch else "image"
    out[key] = batch[key].astype(np.float32)
    if "control" in batch:
        out["control"] = batch["control"].astype(np.float32)
    if tokenizer is None:
        out["label"] = batch["label"].astype(np.int32)
    else:
        out["tokens"] = tokenizer.encode_batch(list(batch["caption"]))
    return out


def abstract_batch(config: ml_collections.ConfigDict, input_shape: tuple[int, int, int], tokenizer: Tokenizer | None,
                   mesh, control: tuple[int, int, int] | None = None) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch's shapes, dtypes and sharding: what the step is compiled for."""
    batch, sharding = config.train.batch_size, batch_sharding(mesh)
    spec = lambda shape, dtype: jax.ShapeDtypeStruct((batch, *shape), dtype, sharding=sharding)  # noqa: E731
    data_key = "latent" if config.data.name == "latent_records" else "image"
    out = {"corrupted": spec((), bool), data_key: spec(input_shape, np.float32)}
    if control is not None:
        out["control"] = spec(control, np.float32)
    if tokenizer is None:
        out["label"] = spec((), np.int32)
    else:
        out["tokens"] = spec((tokenizer.max_length,), np.int32)
    return out
