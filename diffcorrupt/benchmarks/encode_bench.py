"""Latent encoding throughput, and what pre-encoding saves a training step.

Encoding on the fly costs every training step one encoder forward of its batch; pre-encoded
latents cost nothing there. The speed-up of a step is therefore (encode + step) / step, both
measured here on the same devices: the encoder of an autoencoder preset (random weights: the
arithmetic is the same) and the train step of a diffusion model on that preset's latent shape.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from diffcorrupt.autoencoders.presets import preset
from diffcorrupt.autoencoders.storage import make_autoencoder
from diffcorrupt.benchmarks import train_bench
from diffcorrupt.benchmarks.random_weights import random_variables
from diffcorrupt.errors import UserError


def run(preset_name: str, image_shape: tuple[int, int, int], batch_size: int, model_name: str, num_classes: int,
        steps: int = 5) -> dict:
    config = preset(preset_name)
    module = make_autoencoder(config)
    if batch_size % jax.device_count():
        raise UserError(f"--batch_size={batch_size} does not split over {jax.device_count()} devices; use a multiple")
    images = np.random.default_rng(0).uniform(-1, 1, (batch_size, *image_shape)).astype(np.float32)
    variables = random_variables(module, jnp.asarray(images[:1]))
    images = jax.device_put(images, NamedSharding(Mesh(np.asarray(jax.devices()), ("data",)), P("data")))  # as pre-encoding shards it
    encode = jax.jit(lambda v, x: module.apply(v, x, method="encode"))
    start = time.perf_counter()
    jax.block_until_ready(encode(variables, images))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(encode(variables, images))
        times.append(time.perf_counter() - start)
    encode_s = statistics.median(times)
    factor = config.downsampling_factor
    latent_shape = (image_shape[0] // factor, image_shape[1] // factor, config.latent_channels)
    step = train_bench.run(model_name, latent_shape, batch_size, num_classes, steps)
    step_s = batch_size / step["images_per_s"]
    return {
        "bench": "encode", "autoencoder": preset_name, "image_shape": list(image_shape), "latent_shape": list(latent_shape),
        "batch_size": batch_size, "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
        "encode_images_per_s": round(batch_size / encode_s, 2), "encode_compile_s": round(compile_s, 2),
        "model": model_name, "train_images_per_s_pre_encoded": step["images_per_s"],
        "train_images_per_s_on_the_fly": round(batch_size / (encode_s + step_s), 2),
        "pre_encoding_speedup": round((encode_s + step_s) / step_s, 2),
    }
