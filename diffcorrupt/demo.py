"""``diffcorrupt demo``: the end-to-end demo on the embedded datasets, as far as the stages exist.

Today it runs the data stage of the study for real: it writes the corruption manifests of
Fashion-MNIST at eta = 5% (symmetric) and of the captioned shapes at eta = 10% (caption swap),
streams batches through the grain pipeline to check what training would see against the
manifest, and leaves a report with plots. Training, sampling and evaluation join it as their
issues land. ``--quick`` streams fewer batches.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np
from absl import logging

from diffcorrupt import jobs
from diffcorrupt.config.loading import load_config
from diffcorrupt.config.validate import validate
from diffcorrupt.corruption import build_manifest, write_manifest
from diffcorrupt.data.pipeline import make_iterator
from diffcorrupt.report.figures import save_flip_matrix, save_image_grid

REPO = pathlib.Path(__file__).resolve().parent.parent
RUNS = {
    "fmnist_symmetric_5pct": ("configs/fmnist.py", ["data.corruption.ratio=0.05"]),
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


def run_demo(out: pathlib.Path, quick: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    lines = ["# diffcorrupt demo: the data stage", "",
             "Corrupted examples are shown with their served condition and, in red, the true one.", ""]
    for name, (config_path, overrides) in RUNS.items():
        config = load_config(str(REPO / config_path), overrides + ["train.batch_size=32"])
        validate(config)
        logging.info("demo: %s: computing the corruption manifest", name)
        summary, indices = build_manifest(config)
        write_manifest(out / name, config, summary, indices)
        logging.info("demo: %s: %d of %d examples corrupted; streaming batches", name, summary["num_corrupted"], summary["num_examples"])
        stream, batch = _stream(config, 10 if quick else 100, set(indices.tolist()))
        results[name] = {"manifest": {k: summary[k] for k in ("kind", "num_examples", "num_corrupted", "actual_ratio")}, "pipeline": stream}
        grid = out / name / "batch.png"
        class_names = summary.get("class_names", [])
        order = np.argsort(~batch["corrupted"], kind="stable")[:16]  # corrupted examples first
        titles = _titles(batch, class_names)
        save_image_grid(grid, batch["image"][order], [titles[i] for i in order], batch["corrupted"][order],
                        columns=4 if "caption" in batch else 8)
        lines += [f"## {name}", "", f"`{config_path}` with {', '.join(overrides)}", "",
                  "| kind | examples | corrupted | ratio | pipeline examples/s | corrupted share served |",
                  "|---|---|---|---|---|---|",
                  f"| {summary['kind']} | {summary['num_examples']} | {summary['num_corrupted']} | {summary['actual_ratio']:.4f} "
                  f"| {stream['examples_per_s']} | {stream['served_corrupted_fraction']:.4f} |", "",
                  f"![a batch]({name}/batch.png)", ""]
        if "flip_matrix" in summary:
            save_flip_matrix(out / name / "flip_matrix.png", summary["flip_matrix"], class_names, f"{name}: corrupted examples")
            lines += [f"![flip matrix]({name}/flip_matrix.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("demo", __doc__.splitlines()[0], config=False)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer batches")
    parser.add_argument("--out", default="demo_out", help="folder for the manifests, plots and report")
    flags = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    results = run_demo(pathlib.Path(flags.out), flags.quick)
    print(json.dumps({"out": flags.out, "report": str(pathlib.Path(flags.out) / "report.md"), **results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.run("demo", main))
