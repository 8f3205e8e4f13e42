"""Feature-network throughput: images/s through the evaluator's preprocessing and network (``inception``:
resize to 299 and the FID network; ``clip``: Pillow's resize and crop to 224 and CLIP ViT-B/16's
image tower), and for CLIP also captions/s through the text tower.

Without ``weights`` the network runs with random parameters: the arithmetic is the same, so the
figure holds for the real weights, and the benchmark needs no converted file.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffcorrupt.benchmarks.random_weights import random_variables


def _inception(weights: str | None, batch_size: int):
    from diffcorrupt.evaluation.inception import InceptionV3
    from diffcorrupt.evaluation.inception_weights import InceptionFeatures, InceptionWeights, load_inception_params

    if weights:
        return InceptionFeatures(load_inception_params(weights), batch_size=batch_size)
    params = random_variables(InceptionV3(), jnp.zeros((1, 299, 299, 3)))["params"]
    return InceptionFeatures(InceptionWeights(params=params, has_logits=False, sha256="random",
                                              source="random"), batch_size=batch_size)


def _clip(weights: str | None, batch_size: int):
    from diffcorrupt.evaluation.clip import VIT_B16, Clip
    from diffcorrupt.evaluation.clip_features import ClipFeatures
    from diffcorrupt.evaluation.clip_tokenizer import ClipTokenizer
    from diffcorrupt.evaluation.clip_weights import ClipWeights, load_clip

    if weights:
        return ClipFeatures(load_clip(weights), batch_size=batch_size)
    size, length = VIT_B16.image_size, VIT_B16.context_length
    params = random_variables(Clip(), jnp.zeros((1, size, size, 3)), jnp.zeros((1, length), jnp.int32))["params"]
    # A random tokenizer of the real vocabulary's size: the text tower's work depends on the length only.
    merges = [(f"m{i}", "x</w>") for i in range(VIT_B16.vocab_size - 2 * 256 - 2)]
    return ClipFeatures(ClipWeights(params, VIT_B16, ClipTokenizer(merges), "random",
                                    "random"), batch_size=batch_size)


NETWORKS: dict[str, Callable] = {"inception": _inception, "clip": _clip}


def _median_seconds(work: Callable[[], object]) -> tuple[float, float]:
    """The first call's seconds (compilation included) and the median of three more."""
    start = time.perf_counter()
    work()
    first = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def run(network: str, input_shape: tuple[int, int, int], batch_size: int, num_images: int, weights: str | None) -> dict:
    net = NETWORKS[network](weights, batch_size)
    images = np.random.default_rng(0).integers(0, 256, (num_images, *input_shape), dtype=np.uint8)
    compile_s, _ = _median_seconds(lambda: net(images[:net.batch_size]))
    _, seconds = _median_seconds(lambda: net(images))
    result = {
        "bench": network, "input_shape": list(input_shape), "batch_size": net.batch_size, "num_images": num_images,
        "weights": weights or "random", "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
        "images_per_s": round(num_images / seconds, 2), "compile_s": round(compile_s, 2),
    }
    if network == "clip":
        captions = [f"a photo of a class {i}." for i in range(num_images)]
        _, seconds = _median_seconds(lambda: net.text_embeddings(captions))
        result["captions_per_s"] = round(num_images / seconds, 2)
    return result
