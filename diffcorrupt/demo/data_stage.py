"""``diffcorrupt demo``: the study in miniature on the embedded datasets, end to end as far as the
stages exist.

1. Data: the corruption manifests of Fashion-MNIST at eta = 5% (symmetric label flips) and of the
   captioned shapes at eta = 10% (caption swaps), with batches streamed through the grain pipeline
   and checked against the manifests.
2. Training: three small DiT-T/4 runs on Fashion-MNIST (clean, eta = 5%, and clean with CEP-U),
   each leaving orbax checkpoints, metrics and an EMA sample grid in ``<out>/runs/<name>``.
3. A report (``<out>/report.md``) with the flip matrix, batch grids, loss curves and samples.

Sampling at scale and the FID evaluation join it with their issues. Rerunning resumes the runs
from their checkpoints. ``--quick`` is a smoke run (fewer batches and steps).
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import jax
import numpy as np
from absl import logging

from diffcorrupt import jobs
from diffcorrupt.config.loading import load_config
from diffcorrupt.config.validate import validate
from diffcorrupt.corruption import build_manifest, write_manifest
from diffcorrupt.data.pipeline import make_iterator
from diffcorrupt.report.figures import save_curves, save_flip_matrix, save_image_grid

REPO = pathlib.Path(__file__).resolve().parent.parent
RUNS = {
    "fmnist_symmetric_5pct": ("configs/fmnist.py", ["data.corruption.ratio=0.05"]),
    "shapes_swap_10pct": ("configs/shapes.py", ["data.corruption.ratio=0.1"]),
}
# Small enough for 2 CPU cores; a short EMA so that the sample grids of a short run show something.
TRAINING = ["model.name=DiT-T/4", "train.batch_size=32", "train.lr=3e-4", "train.ema_decay=0.99",
            "train.warmup_steps=20"]
TRAIN_RUNS = {
    "clean": [],
    "eta_5pct": ["data.corruption.ratio=0.05"],
    "clean_cep_uniform": ["model.cep.kind=uniform"],
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
    results["training"] = _training_stage(out, quick, lines)
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def _training_stage(out: pathlib.Path, quick: bool, lines: list[str]) -> dict:
    """Trains (or resumes) the three small runs and adds their curves and samples to the report."""
    from diffcorrupt.training.loop import train

    steps = 40 if quick else 600
    schedule = [f"train.num_steps={steps}", f"train.log_every={steps // 20}", f"train.sample_every={steps}",
                f"checkpoint.every_steps={steps // 2}"]
    summaries, curves = {}, {}
    for name, overrides in TRAIN_RUNS.items():
        config = load_config(str(REPO / "configs/fmnist.py"), TRAINING + schedule + overrides)
        validate(config, num_devices=jax.device_count())
        logging.info("demo: training %s for %d steps", name, steps)
        workdir = out / "runs" / name
        summaries[name] = train(config, str(workdir))
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        records = [r for r in records if "loss" in r]
        curves[name] = ([r["step"] for r in records], [r["loss"] for r in records])
        summaries[name]["final_loss"] = curves[name][1][-1]
    save_curves(out / "training_loss.png", curves, "training loss (eps MSE)", f"DiT-T/4 on Fashion-MNIST, {steps} steps")
    lines += ["## Training", "", f"DiT-T/4 on Fashion-MNIST, batch 32, {steps} steps each, from `configs/fmnist.py` with "
              + ", ".join(TRAINING) + ". Checkpoints, metrics and TensorBoard events are in `runs/<name>`.", "",
              "| run | settings | final loss |", "|---|---|---|"]
    lines += [f"| {name} | {', '.join(TRAIN_RUNS[name]) or 'clean'} | {summaries[name]['final_loss']:.4f} |" for name in TRAIN_RUNS]
    lines += ["", "![training loss](training_loss.png)", ""]
    lines += [f"{name}, EMA samples at step {steps} (classes 0-9, then 0-5; guidance 1.5):\n\n"
              f"![{name}](runs/{name}/samples/step_{steps}.png)\n" for name in TRAIN_RUNS]
    return summaries


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("demo", __doc__.splitlines()[0], config=False)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer batches and training steps")
    parser.add_argument("--out", default="demo_out", help="folder for the manifests, plots and report")
    flags = parser.parse_args(argv)
    jobs.log_progress()
    results = run_demo(pathlib.Path(flags.out), flags.quick)
    print(json.dumps({"out": flags.out, "report": str(pathlib.Path(flags.out) / "report.md"), **results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.run("demo", main))
