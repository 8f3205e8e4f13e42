"""Input-pipeline benchmark: examples/s with corruption on and off, and the per-index cost.

Targets (issue 2): corruption costs under 5% of pipeline throughput, and the per-index cost does
not grow with the dataset size. ``corruption_cost_pct`` is the share of the pipeline's time per
example spent corrupting (the corruption timed alone x the uncorrupted throughput); the A/B of
whole pipelines with corruption on and off is reported beside it, alternating runs and taking
medians, but on a 2-core machine its noise is larger than the effect.
"""

from __future__ import annotations

import statistics
import time

import ml_collections
import numpy as np

from diffcorrupt.config.schema import base_config
from diffcorrupt.data.corruption.caption_swap import CaptionSwap
from diffcorrupt.data.corruption.label_flip import LabelFlip
from diffcorrupt.data.pipeline import corrupted_source, make_iterator


def per_index_seconds(num_examples: int, calls: int = 20_000, batch: int = 256) -> dict[str, float]:
    """Seconds to decide one index's corruption at ratio 0.1 (1000 classes for label flips): one
    index at a time (``observe_one`` / ``partner_one``), and per index within a batch of ``batch``
    (the vectorised form the pipeline uses)."""
    flip = LabelFlip(num_examples=num_examples, num_classes=1000, ratio=0.1, seed=0, mode="fixed",
                     prior=np.full(1000, 1e-3))
    swap = CaptionSwap(num_examples=num_examples, ratio=0.1, seed=0, mode="fixed")
    indices = (np.arange(calls, dtype=np.int64) * 2_654_435_761) % num_examples
    labels = indices % 1000
    cases = {
        "label_flip": lambda i: flip.observe_one(i, 7),
        "caption_swap": swap.partner_one,
        "label_flip_batched": lambda k: flip.observe(indices[k:k + batch], labels[k:k + batch]),
        "caption_swap_batched": lambda k: swap.partners(indices[k:k + batch]),
    }
    out = {}
    for name, call in cases.items():
        call(0)  # builds the permutation
        arguments = range(0, calls, batch) if name.endswith("batched") else indices.tolist()
        start = time.perf_counter()
        for argument in arguments:
            call(argument)
        out[name] = (time.perf_counter() - start) / calls
    return out


def pipeline_config(name: str, num_examples: int, ratio: float, batch_size: int, num_workers: int) -> ml_collections.ConfigDict:
    config = base_config()
    config.data.name = name
    config.data.num_examples = num_examples
    config.data.corruption.ratio = ratio
    config.data.corruption.prior = "uniform" if name == "synthetic" else "empirical"
    config.data.num_workers = num_workers
    config.train.batch_size = batch_size
    return config


def examples_per_second(config: ml_collections.ConfigDict, num_batches: int) -> float:
    iterator = make_iterator(config)
    next(iterator)  # start-up (threads, workers, permutation) is not throughput
    start = time.perf_counter()
    for _ in range(num_batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    if hasattr(iterator, "close"):
        iterator.close()
    return num_batches * config.train.batch_size / elapsed


def corruption_seconds_per_example(config: ml_collections.ConfigDict, batches: int = 200) -> float:
    """Time the pipeline spends corrupting one example: the batched call ``read_many`` makes, on
    this dataset's size and labels, timed alone (the end-to-end A/B is too noisy on 2 cores)."""
    view = corrupted_source(config)
    n, batch = len(view), config.train.batch_size
    indices = (np.arange(batches * batch, dtype=np.int64) * 2_654_435_761) % n
    labels = view.source.labels()[indices]
    view.corruption.observe(indices[:batch], labels[:batch])  # builds the permutation
    start = time.perf_counter()
    for k in range(0, len(indices), batch):
        view.corruption.observe(indices[k:k + batch], labels[k:k + batch])
    return (time.perf_counter() - start) / len(indices)


def run(batch_size: int = 256, num_batches: int = 100, repeats: int = 5, num_workers: int = 0, ratio: float = 0.1) -> dict:
    result: dict = {"bench": "data", "batch_size": batch_size, "num_batches": num_batches, "repeats": repeats,
                    "num_workers": num_workers, "corruption_ratio": ratio}
    for label, name, n in (("fashion_mnist", "fashion_mnist", 0), ("synthetic_1e6", "synthetic", 10**6)):
        runs = {"off": [], "on": []}
        for _ in range(repeats):
            for state, r in (("off", 0.0), ("on", ratio)):
                runs[state].append(examples_per_second(pipeline_config(name, n, r, batch_size, num_workers), num_batches))
        off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
        per_example = corruption_seconds_per_example(pipeline_config(name, n, ratio, batch_size, num_workers))
        result[label] = {
            "examples_per_s_off": round(off),
            "examples_per_s_on": round(on),
            "ab_difference_pct": round(100 * (1 - on / off), 2),
            "corruption_us_per_example": round(per_example * 1e6, 3),
            "corruption_cost_pct": round(100 * per_example * off, 2),
        }
    for n in (10**3, 10**9):
        result[f"per_index_us_n1e{len(str(n)) - 1}"] = {k: round(v * 1e6, 3) for k, v in per_index_seconds(n).items()}
    return result
