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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _random_params(module, *inputs) -> dict:
    """Random parameters drawn in numpy from the shapes alone (kernels He-scaled, scales and variances
    1, vectors 0): flax's init would run the network op by op, a compile each (80 of the 90 s that
    ``bench inception`` took on a 2-core CPU), only to throw the numbers away."""
    abstract = nn.meta.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs))["params"]
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        if getattr(path[-1], "key", None) in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        if len(leaf.shape) < 2:
            return np.zeros(leaf.shape, leaf.dtype)
        return (rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def _inception(weights: str | None, batch_size: int):
    from diffcorrupt.evaluation.inception import InceptionV3
    from diffcorrupt.evaluation.inception_weights import InceptionFeatures, InceptionWeights, load_inception_params

    if weights:
        return InceptionFeatures(load_inception_params(weights), batch_size=batch_size)
    params = _random_params(InceptionV3(), jnp.zeros((1, 299, 299, 3)))
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
    params = _random_params(Clip(), jnp.zeros((1, size, size, 3)), jnp.zeros((1, length), jnp.int32))
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
