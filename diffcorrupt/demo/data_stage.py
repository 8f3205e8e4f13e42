"""The demo's data stage: corruption manifests, and batches streamed through the grain pipeline and
checked, example by example, against them.

Fashion-MNIST at eta = 5% (symmetric label flips) and the captioned shapes at eta = 10% (caption
swaps): the two kinds of corruption the study applies, on the two embedded datasets.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
from absl import logging

from diffcorrupt.config.loading import load_config
from diffcorrupt.config.validate import validate
from diffcorrupt.corruption import build_manifest, write_manifest
from diffcorrupt.data.pipeline import make_iterator
from diffcorrupt.demo.settings import FMNIST, REPO, Scale
from diffcorrupt.report.figures import save_flip_matrix, save_image_grid

DATASETS = {
    "fmnist_symmetric_5pct": ("configs/fmnist.py", FMNIST + ["data.corruption.ratio=0.05"]),
    "shapes_swap_10pct": ("configs/shapes.py", ["data.corruption.ratio=0.1"]),
}


def _stream(config, num_batches: int, corrupted: set[int]) -> tuple[dict, dict]:
    """Streams batches; returns (figures, first batch) and checks every flag against the manifest."""
    iterator = make_iterator(config)
    first = next(iterator)
    seen = served_corrupted = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(iterator)
        for index, flag in zip(batch["index"], batch["corrupted"]):
            if bool(flag) != (int(index) in corrupted):
                raise AssertionError(f"example {index}: pipeline and manifest disagree on its corruption")
        seen += len(batch["index"])
        served_corrupted += int(batch["corrupted"].sum())
    elapsed = time.perf_counter() - start
    return {"examples": seen, "examples_per_s": round(seen / elapsed), "served_corrupted_fraction": served_corrupted / seen}, first


def _titles(batch: dict, class_names: list[str]) -> list[str]:
    if "caption" in batch:
        return [c if not flag else f"{c}\n(true: {t})" for c, t, flag in zip(batch["caption"], batch["clean_caption"], batch["corrupted"])]
    return [class_names[c] if not flag else f"{class_names[c]}\n(true: {class_names[t]})"
            for c, t, flag in zip(batch["label"], batch["clean_label"], batch["corrupted"])]


def data_stage(out: pathlib.Path, scale: Scale, lines: list[str]) -> dict:
    """Writes each dataset's manifest, batch grid and flip matrix into ``out/data/<name>``."""
    results = {}
    lines += ["## 1. Corrupted data", "",
              "Corrupted examples are shown with their served condition and, in red, the true one.", ""]
    for name, (config_path, overrides) in DATASETS.items():
        config = load_config(str(REPO / config_path), overrides + ["train.batch_size=32"])
        validate(config)
        folder = out / "data" / name
        logging.info("demo: %s: computing the corruption manifest", name)
        summary, indices = build_manifest(config)
        write_manifest(folder, config, summary, indices)
        logging.info("demo: %s: %d of %d examples corrupted; streaming batches", name, summary["num_corrupted"],
                     summary["num_examples"])
        stream, batch = _stream(config, scale.stream_batches, set(indices.tolist()))
        results[name] = {"manifest": {k: summary[k] for k in ("kind", "num_examples", "num_corrupted", "actual_ratio")},
                         "pipeline": stream}
        class_names = summary.get("class_names", [])
        order = np.argsort(~batch["corrupted"], kind="stable")[:16]  # corrupted examples first
        titles = _titles(batch, class_names)
        save_image_grid(folder / "batch.png", batch["image"][order], [titles[i] for i in order],
                        batch["corrupted"][order], columns=4 if "caption" in batch else 8)
        lines += [f"### {name}", "", f"`{config_path}` with {', '.join(overrides)}", "",
                  "| kind | examples | corrupted | ratio | pipeline examples/s | corrupted share served |",
                  "|---|---|---|---|---|---|",
                  f"| {summary['kind']} | {summary['num_examples']} | {summary['num_corrupted']} | {summary['actual_ratio']:.4f} "
                  f"| {stream['examples_per_s']} | {stream['served_corrupted_fraction']:.4f} |", "",
                  f"![a batch](data/{name}/batch.png)", ""]
        if "flip_matrix" in summary:
            save_flip_matrix(folder / "flip_matrix.png", summary["flip_matrix"], class_names, f"{name}: corrupted examples")
            lines += [f"![flip matrix](data/{name}/flip_matrix.png)", ""]
    return results
