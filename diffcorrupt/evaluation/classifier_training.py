"""Training, saving, caching and loading the per-dataset feature classifier (``classifier.Classifier``).

The classifier learns from the clean conditions of the clean training data, so that it judges
generated images against what the condition says, not against the corruption under study. It is
trained once per dataset, resolution and setting and cached, since every evaluation of every run
on that dataset must use the very same feature space for its numbers to be comparable.

On disk a classifier is a directory with ``classifier.npz`` (flat parameter arrays, keys joined by
'/') and ``classifier.json`` (what it was trained on, how, its held-out accuracy and the npz's sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffcorrupt.cache import cache_root
from diffcorrupt.data.preprocess import training_pixels
from diffcorrupt.data.sources.base import ClassSource, Source
from diffcorrupt.data.sources.caption_parse import CARDINALITIES, parse_caption
from diffcorrupt.data.sources.captioned_shapes import ATTRIBUTES
from diffcorrupt.data.sources.registry import make_source
from diffcorrupt.errors import ConfigError, DataError, UserError
from diffcorrupt.evaluation.classifier import WIDTHS, Classifier, ClassifierFeatures
from diffcorrupt.weights.hashing import file_sha256

SUPPORTED = ("fashion_mnist", "captioned_shapes")
WEIGHTS_FILE = "classifier.npz"
META_FILE = "classifier.json"
FORMAT = 1  # bump when the architecture or the training recipe changes, so caches retrain
# Steps that take about a minute on two CPU cores at batch 128: Fashion-MNIST reaches about 88.5%
# held-out accuracy, the captioned shapes about 100% on every attribute.
DEFAULT_STEPS = {"fashion_mnist": 2000, "captioned_shapes": 1000}
BATCH_SIZE = 128
SEED = 0
HELDOUT_SHARE = 0.1  # of a class dataset without a second split
GENERATED_HELDOUT = 2000  # fresh draws of a generated dataset, past its training indices
LOG_EVERY = 500
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4


def _with(data: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    data = ml_collections.ConfigDict(data.to_dict())
    data.update(overrides)
    return data


def _splits(data: ml_collections.ConfigDict) -> tuple[Source, range, Source, range]:
    """(train source, train indices, held-out source, held-out indices) of the clean dataset: the
    whole of it, not a run's subset, since the classifier is the instrument every run is measured by."""
    data = _with(data, subset="")
    if data.name not in SUPPORTED:
        raise UserError(
            f"there is no feature classifier for the dataset '{data.name}', only for {' and '.join(SUPPORTED)} "
            "(where Inception features say little); evaluate it with Inception features"
        )
    if data.name == "captioned_shapes":
        if data.num_examples <= 0:
            raise ConfigError(
                "config key 'data.num_examples' must be positive for the generated dataset 'captioned_shapes'"
            )
        # Any N: the held-out examples are the next draws of the same keyed stream.
        source = make_source(_with(data, split="train", num_examples=data.num_examples + GENERATED_HELDOUT))
        return source, range(data.num_examples), source, range(data.num_examples, len(source))
    train = make_source(_with(data, split="train"))
    if not train.embedded:  # the embedded fallback serves its one split as 'test' too
        try:
            test = make_source(_with(data, split="test"))
            return train, range(len(train)), test, range(len(test))
        except DataError:
            pass  # a data_dir without the test split: hold out a slice instead
    cut = len(train) - max(1, int(HELDOUT_SHARE * len(train)))
    if cut < 1:
        raise DataError(
            f"Fashion-MNIST in '{data.data_dir}' has {len(train)} example(s); a classifier needs at least 2"
        )
    return train, range(cut), train, range(cut, len(train))


def _heads(source: Source) -> tuple[tuple[int, ...], tuple[str, ...], str]:
    if isinstance(source, ClassSource):
        return (source.num_classes,), ("class",), "class"
    return CARDINALITIES, ATTRIBUTES, "text"


def _load(source: Source, indices: Sequence[int], size: int, channels: int) -> tuple[np.ndarray, list]:
    """uint8 images at the diffusion data's size and channels, and their clean conditions."""
    images = np.empty((len(indices), size, size, channels), np.uint8)
    conditions = []
    for row, index in enumerate(indices):
        element = source[index]
        images[row] = training_pixels(element["image"], size, channels)
        conditions.append(element["label"] if "label" in element else element["caption"])
    return images, conditions


def _targets(conditions: list, condition: str) -> np.ndarray:
    if condition == "text":
        return np.array([parse_caption(c) for c in conditions], np.int32)
    return np.asarray(conditions, np.int32)[:, None]


def _make_step(
    model: Classifier, optimizer: optax.GradientTransformation, replicated: NamedSharding, batch: NamedSharding
):
    heads = model.heads

    def loss_fn(params, images, targets):
        _, logits = model.apply({"params": params}, images)
        parts = jnp.split(logits, np.cumsum(heads)[:-1].tolist(), axis=-1)
        losses = [optax.softmax_cross_entropy_with_integer_labels(part, targets[:, k]) for k, part in enumerate(parts)]
        return sum(loss.mean() for loss in losses)

    def step(params, opt_state, images, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, targets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(
        step,
        in_shardings=(replicated, replicated, batch, batch),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=(0, 1),
    )


def train_classifier(
    data_config: ml_collections.ConfigDict,
    out_dir: pathlib.Path,
    *,
    steps: int | None = None,
    batch_size: int = BATCH_SIZE,
    seed: int = SEED,
) -> pathlib.Path:
    """Trains the classifier of ``data_config``'s dataset (clean data and conditions, at
    ``data.image_size`` and ``data.channels``) with AdamW for ``steps`` (default: the dataset's
    entry in ``DEFAULT_STEPS``), measures it on held-out data and writes it to ``out_dir``."""
    started = time.time()
    train, train_idx, heldout, heldout_idx = _splits(data_config)
    steps = _default_steps(data_config) if steps is None else steps
    devices = jax.local_devices()  # host-side work: under several processes, process 0 trains it alone
    if batch_size % len(devices):
        raise UserError(
            f"the classifier batch size {batch_size} does not split over {len(devices)} devices; use a multiple"
        )
    heads, head_names, condition = _heads(train)
    size, channels = data_config.image_size, data_config.channels
    # An example never drawn is never read: a short run loads only what it can see.
    images, conditions = _load(train, train_idx[:steps * batch_size], size, channels)
    targets = _targets(conditions, condition)

    model = Classifier(heads, WIDTHS)
    params = model.init(jax.random.key(seed), jnp.zeros((1, size, size, channels), jnp.uint8))["params"]
    schedule = optax.warmup_cosine_decay_schedule(0.0, LEARNING_RATE, max(1, steps // 20), max(steps, 2))
    optimizer = optax.adamw(schedule, weight_decay=WEIGHT_DECAY)
    mesh = Mesh(np.array(devices), ("data",))
    replicated, batch = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    step = _make_step(model, optimizer, replicated, batch)
    # Placed as the step returns them, so that the second step does not compile again.
    params, opt_state = jax.device_put((params, optimizer.init(params)), replicated)
    rng = np.random.default_rng(seed)
    order = np.empty(0, np.int64)
    for done in range(1, steps + 1):
        if len(order) < batch_size:  # epochs of a fresh permutation each
            order = np.concatenate([order, rng.permutation(len(images))])
        picked, order = order[:batch_size], order[batch_size:]
        params, opt_state, loss = step(params, opt_state, images[picked], targets[picked])
        if done % LOG_EVERY == 0:
            logging.info("classifier: step %d of %d, loss %.3f", done, steps, float(loss))
    params = jax.device_get(params)

    meta = {
        "format": FORMAT,
        "dataset": data_config.name,
        "resolution": size,
        "channels": channels,
        "condition": condition,
        "heads": list(heads),
        "head_names": list(head_names),
        "widths": list(WIDTHS),
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "num_train": len(images),
        "num_heldout": len(heldout_idx),
    }
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    np.savez(weights, **traverse_util.flatten_dict(params, sep="/"))
    meta["weights_sha256"] = file_sha256(weights)
    held_images, held_conditions = _load(heldout, heldout_idx, size, channels)
    meta["heldout"] = ClassifierFeatures(params, meta).condition_accuracy(held_images, held_conditions)
    meta["train_seconds"] = round(time.time() - started, 1)
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def _default_steps(data_config: ml_collections.ConfigDict) -> int:
    return DEFAULT_STEPS[data_config.name]


def classifier_dir(data_config: ml_collections.ConfigDict, cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Where ``ensure_classifier`` keeps the classifier of this data: one directory per setting."""
    train, train_idx, _, heldout_idx = _splits(data_config)
    settings = {
        "format": FORMAT,
        "dataset": data_config.name,
        "data_dir": data_config.data_dir,
        "resolution": data_config.image_size,
        "channels": data_config.channels,
        # The data itself: the embedded 10k Fashion-MNIST and the full 60k give different networks.
        "num_train": len(train_idx),
        "num_heldout": len(heldout_idx),
        "steps": _default_steps(data_config),
        "seed": SEED,
        "batch_size": BATCH_SIZE,
        "widths": list(WIDTHS),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    root = cache_root() if cache_dir is None else pathlib.Path(cache_dir)
    return root / "classifiers" / f"{data_config.name}-{data_config.image_size}px-{digest}"


def ensure_classifier(data_config: ml_collections.ConfigDict, cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """The cached classifier directory of this data, trained first if it is not there yet.

    Training writes into a temporary sibling that is renamed into place only when complete, so an
    interrupted run leaves no directory that looks finished; if a concurrent process finished first,
    its classifier is kept and this one's discarded.
    """
    target = classifier_dir(data_config, cache_dir)
    if (target / META_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logging.info(
        "classifier: training the %s feature classifier for %d steps into %s (cached for later evaluations)",
        data_config.name, _default_steps(data_config), target,
    )
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        train_classifier(data_config, tmp, steps=_default_steps(data_config), batch_size=BATCH_SIZE, seed=SEED)
        os.rename(tmp, target)
    except OSError:
        if not (target / META_FILE).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info("classifier: %s held-out %s", target.name, json.loads((target / META_FILE).read_text())["heldout"])
    return target


def load_classifier(
    path: pathlib.Path, *, batch_size: int = 256, devices: Sequence[jax.Device] | None = None
) -> ClassifierFeatures:
    """The classifier saved in directory ``path``, checked against the sha256 its json records."""
    path = pathlib.Path(path)
    retrain = f"delete '{path}' and rerun, which trains it again (ensure_classifier)"
    try:
        meta = json.loads((path / META_FILE).read_text())
        digest = file_sha256(path / WEIGHTS_FILE)
    except (OSError, ValueError) as err:
        raise UserError(f"the classifier in '{path}' cannot be read ({err}); {retrain}") from None
    if digest != meta.get("weights_sha256"):
        raise UserError(
            f"'{path / WEIGHTS_FILE}' is truncated or changed (its sha256 differs from {META_FILE}'s); {retrain}"
        )
    with np.load(path / WEIGHTS_FILE) as arrays:
        params = traverse_util.unflatten_dict({key: arrays[key] for key in arrays.files}, sep="/")
    return ClassifierFeatures(params, meta, batch_size=batch_size, devices=devices)
