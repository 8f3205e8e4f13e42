"""Inception feature extraction throughput: images/s through resize to 299 and the FID network.

Without ``weights`` the network runs with random parameters: the arithmetic is the same, so the
figure holds for the real weights, and the benchmark needs no converted file.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from diffcorrupt.evaluation.inception import InceptionV3
from diffcorrupt.evaluation.inception_weights import InceptionFeatures, InceptionWeights, load_inception_params


def run(input_shape: tuple[int, int, int], batch_size: int, num_images: int, weights: str | None) -> dict:
    if weights:
        loaded = load_inception_params(weights)
    else:
        params = InceptionV3().init(jax.random.key(0), jnp.zeros((1, 299, 299, 3)))["params"]
        loaded = InceptionWeights(params=jax.device_get(params), has_logits=False, sha256="random", source="random")
    net = InceptionFeatures(loaded, batch_size=batch_size)
    images = np.random.default_rng(0).integers(0, 256, (num_images, *input_shape), dtype=np.uint8)
    start = time.perf_counter()
    net(images[:net.batch_size])  # compiles
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        net(images)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "bench": "inception", "input_shape": list(input_shape), "batch_size": net.batch_size, "num_images": num_images,
        "weights": weights or "random", "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
        "images_per_s": round(num_images / seconds, 2), "compile_s": round(compile_s, 2),
    }
