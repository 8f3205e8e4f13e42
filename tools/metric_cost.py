"""The cost of RMD, sample entropy and TopP&R at a reference and sample-set size: one JSON line each.

    .venv/bin/python tools/metric_cost.py --reference=10000 --samples=500 --dim=128 --classes=10

Features are standard normal (the metrics' cost does not depend on their values). Each metric runs
twice against one reference: ``first_s`` pays for the reference's side, ``again_s`` is what every
later sample set of a batch report pays.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from diffcorrupt.evaluation.rmd import rmd_scores
from diffcorrupt.evaluation.sample_entropy import feature_entropy
from diffcorrupt.evaluation.top_pr import top_pr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    flags = parser.parse_args()
    rng = np.random.default_rng(0)
    real = rng.normal(size=(flags.reference, flags.dim)).astype(np.float32)
    labels = rng.integers(0, flags.classes, flags.reference)
    sets = [(rng.normal(size=(flags.samples, flags.dim)).astype(np.float32), rng.integers(0, flags.classes, flags.samples))
            for _ in range(2)]
    metrics = {"rmd": lambda fake, fake_labels: rmd_scores(real, labels, fake, fake_labels),
               "sample_entropy": lambda fake, _: feature_entropy(fake, real),
               "top_pr": lambda fake, _: top_pr(real, fake)}
    for name, compute in metrics.items():
        seconds = []
        for fake, fake_labels in sets:
            start = time.perf_counter()
            compute(fake, fake_labels)
            seconds.append(round(time.perf_counter() - start, 2))
        print(json.dumps({"metric": name, "reference": flags.reference, "samples": flags.samples, "dim": flags.dim,
                          "classes": flags.classes, "first_s": seconds[0], "again_s": seconds[1]}), flush=True)


if __name__ == "__main__":
    main()
