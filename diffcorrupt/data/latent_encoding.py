"""Pre-encoding a dataset into latent ArrayRecord shards, once, so that training skips the encoder.

What is stored is the clean dataset: example i's latent, its clean label or caption and i itself.
The corruption is applied when training reads the shards, keyed by that index as for images, so
one encoding serves every corruption ratio and seed. A KL autoencoder's posterior is stored as its
moments (mean and log-variance) by default, and training draws a fresh sample per (index, epoch);
``kind="latent"`` stores the posterior mean, or a VQ autoencoder's pre-quantisation latent.

Shard k holds examples [k S, (k + 1) S) for the shard size S, and process p writes the shards
k = p mod P. Each shard is written under a temporary name and renamed, so a shard that exists is
whole: an interrupted encoding resumes with the missing shards, and gives the same bytes as an
uninterrupted one. ``meta.json`` is written last, once every shard exists; the training source
refuses a folder without it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffcorrupt.autoencoders.storage import LoadedAutoencoder, load_autoencoder
from diffcorrupt.data.preprocess import training_pixels
from diffcorrupt.data.sources.latent_records import META_FILE, write_meta, write_shard
from diffcorrupt.data.sources.registry import make_source
from diffcorrupt.errors import ConfigError, UserError

PLAN_FILE = "encoding.json"
KINDS = ("moments", "latent")


def pixel_data_config(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The image dataset behind a latent run's data config, from its shards' ``encoding.json``.

    Evaluating a latent run compares decoded samples with images, and picks the feature classifier,
    by the dataset the latents were encoded from; the corruption settings stay the run's. Any other
    data config, or shards without a plan (written elsewhere), is returned unchanged.
    """
    plan = Path(data.data_dir) / PLAN_FILE
    if data.name != "latent_records" or not plan.is_file():
        return data
    pixels = ml_collections.ConfigDict(data.to_dict())
    pixels.update(json.loads(plan.read_text())["dataset"])
    return pixels


def encode_dataset(data: ml_collections.ConfigDict, autoencoder_dir: str | Path, out: str | Path, *,
                   kind: str | None = None, batch_size: int = 64, shard_size: int = 4096,
                   flips: bool = False) -> dict[str, Any]:
    """Encodes the configured dataset into ``out``; returns a summary with the throughput. With
    ``flips`` each record also holds the encoding of its mirrored image, which ``data.random_flip``
    needs: mirroring a latent does not give the latent of the mirrored image (the demo's autoencoder
    is far from mirror-symmetric; its model lost a third of its class accuracy training on mirrored
    latents), so a flip must be encoded, not computed."""
    out = Path(out)
    autoencoder = load_autoencoder(autoencoder_dir)
    kind = kind or ("moments" if autoencoder.config.kind == "kl" else "latent")
    if kind not in KINDS or (kind == "moments" and autoencoder.config.kind != "kl"):
        raise UserError(f"--kind={kind}: use 'latent', or 'moments' with a KL autoencoder")
    if data.subset:
        raise ConfigError(f"config key 'data.subset' is '{data.subset}'; encode the whole split and set data.subset "
                          "on the runs that train on the latents (they select the same examples)")
    source = make_source(data)
    if autoencoder.config.in_channels != data.channels:
        raise UserError(f"the autoencoder takes {autoencoder.config.in_channels}-channel images but data.channels is "
                        f"{data.channels}; set data.channels or use an autoencoder trained on this data")
    total = len(source)
    num_shards = math.ceil(total / shard_size)
    plan = {"dataset": {k: data[k] for k in ("name", "split", "data_dir", "image_size", "channels", "num_examples")},
            "autoencoder_sha256": autoencoder.sha256, "kind": kind, "shard_size": shard_size, "num_examples": total,
            "flips": flips}
    if jax.process_index() == 0:
        _start_or_resume(out, plan)
    multihost_utils.sync_global_devices("diffcorrupt: encoding planned")
    encode = _encoder(autoencoder, kind, batch_size)
    start, encoded = time.perf_counter(), 0
    for shard in range(jax.process_index(), num_shards, jax.process_count()):
        path = out / _shard_name(shard)
        if path.is_file():
            continue
        indices = range(shard * shard_size, min((shard + 1) * shard_size, total))
        records = _encode_shard(source, data, indices, encode, flips)
        temporary = path.with_name(path.name + ".tmp")
        write_shard(temporary, records)
        os.replace(temporary, path)
        encoded += len(indices)
        rate = encoded / (time.perf_counter() - start)
        logging.info("encode: shard %d of %d written (%d examples, %.1f images/s)", shard + 1, num_shards, len(indices), rate)
    seconds = time.perf_counter() - start
    multihost_utils.sync_global_devices("diffcorrupt: shards encoded")
    if jax.process_index() == 0:
        _write_meta(out, source, autoencoder, Path(autoencoder_dir), kind, num_shards, total, data, flips)
    return {"out": str(out), "num_examples": total, "encoded_now": encoded, "kind": kind, "flips": flips, "shards": num_shards,
            "seconds": round(seconds, 2), "images_per_s": round(encoded / seconds, 1) if encoded else None}


def _start_or_resume(out: Path, plan: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / PLAN_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != json.loads(json.dumps(plan)):
            differing = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k))
            raise UserError(f"{out} holds an encoding with other settings ({', '.join(differing)} differ); "
                            "pass another --out or remove that folder")
    elif any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no {PLAN_FILE}; pass an empty or new --out")
    path.write_text(json.dumps(plan, indent=1, sort_keys=True) + "\n")
    for leftover in out.glob("*.tmp"):
        leftover.unlink()


def _shard_name(shard: int) -> str:
    return f"latents-{shard:05d}.array_record"


def _encoder(autoencoder: LoadedAutoencoder, kind: str, batch_size: int):
    """One jitted encoder for a fixed batch, split over every local device, parameters replicated."""
    mesh = Mesh(np.asarray(jax.local_devices()), ("data",))
    batch_size = -(-batch_size // mesh.size) * mesh.size
    rows, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
    params = jax.device_put(autoencoder.params, replicated)

    def encode(params, images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32) / 127.5 - 1.0
        out = autoencoder.module.apply(params, x, method="encode")
        if autoencoder.config.kind == "kl":
            mean, logvar = out
            return jnp.concatenate([mean, logvar], axis=-1) if kind == "moments" else mean
        return out

    jitted = jax.jit(encode, in_shardings=(replicated, rows), out_shardings=rows)

    def run(images: np.ndarray) -> np.ndarray:
        count = len(images)
        padded = np.concatenate([images, np.zeros((batch_size - count, *images.shape[1:]), images.dtype)])
        return np.asarray(jitted(params, jax.device_put(padded, rows)))[:count]

    run.batch_size = batch_size
    return run


def _encode_shard(source, data: ml_collections.ConfigDict, indices: range, encode, flips: bool) -> list[dict]:
    records = []
    step = encode.batch_size
    for first in range(indices.start, indices.stop, step):
        chunk = range(first, min(first + step, indices.stop))
        elements = [source[i] for i in chunk]
        images = np.stack([training_pixels(e["image"], data.image_size, data.channels) for e in elements])
        mirrored = encode(np.ascontiguousarray(images[:, :, ::-1])) if flips else [None] * len(chunk)
        for i, element, latent, flipped in zip(chunk, elements, encode(images), mirrored):
            record = {"index": i, "latent": latent.astype(np.float32)}
            if flips:
                record["latent_flipped"] = flipped.astype(np.float32)
            if "label" in element:
                record["label"] = int(element["label"])
            else:
                record["caption"] = str(element["caption"])
            records.append(record)
    return records


def _write_meta(out: Path, source, autoencoder: LoadedAutoencoder, autoencoder_dir: Path, kind: str, num_shards: int,
                total: int, data: ml_collections.ConfigDict, flips: bool) -> None:
    missing = [name for name in map(_shard_name, range(num_shards)) if not (out / name).is_file()]
    if missing:
        raise UserError(f"{out} lacks shard {missing[0]} after encoding; run the same command again to finish it")
    factor = autoencoder.config.downsampling_factor
    latent_shape = (data.image_size // factor, data.image_size // factor, autoencoder.config.latent_channels)
    write_meta(out, shards=[_shard_name(k) for k in range(num_shards)], num_examples=total, latent_shape=latent_shape,
               condition=source.condition, kind=kind, num_classes=getattr(source, "num_classes", 0),
               class_names=getattr(source, "class_names", None), scale_factor=autoencoder.config.scale_factor,
               autoencoder={"path": str(autoencoder_dir.absolute()), "sha256": autoencoder.sha256},
               image_size=data.image_size, channels=data.channels, source_dataset=data.name, flips=flips)
    if (out / META_FILE).is_file():
        logging.info("encode: %s complete (%d examples, latent %s, %s)", out, total, latent_shape, kind)
