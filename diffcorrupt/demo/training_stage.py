"""The demo's three latent diffusion runs: clean, slightly corrupted (eta = 5%) and clean with CEP-U,
the comparison at the heart of the paper. Each resumes from its checkpoints when rerun."""

from __future__ import annotations

import json
import pathlib

import jax
from absl import logging

from diffcorrupt.config.loading import load_config
from diffcorrupt.config.validate import validate
from diffcorrupt.demo.settings import REPO, RUN_CONFIG, RUN_TITLES, RUNS, Scale
from diffcorrupt.report.figures import save_curves
from diffcorrupt.training.loop import train


def run_overrides(out: pathlib.Path, scale: Scale) -> list[str]:
    """What the demo changes in ``RUN_CONFIG``: its latents, and the schedule at this scale."""
    steps = scale.train_steps
    return [f"data.data_dir={(out / 'latents').absolute()}", f"train.num_steps={steps}",
            f"train.log_every={max(1, steps // 20)}", f"train.sample_every={steps}",
            f"checkpoint.every_steps={max(1, steps // 2)}"]


def training_stage(out: pathlib.Path, scale: Scale, lines: list[str]) -> dict[str, dict]:
    """Trains the runs into ``out/runs/<name>``; returns each run's summary with its final loss."""
    config_path, _, preset = RUN_CONFIG.partition(":")
    shared = run_overrides(out, scale)
    summaries, curves = {}, {}
    for number, (name, overrides) in enumerate(RUNS.items(), 1):
        config = load_config(f"{REPO / config_path}:{preset}", shared + overrides)
        validate(config, num_devices=jax.device_count())
        logging.info("demo: training run %d of %d (%s) for %d steps", number, len(RUNS), name, scale.train_steps)
        workdir = out / "runs" / name
        summaries[name] = train(config, str(workdir))
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        records = [r for r in records if "loss" in r]
        curves[name] = ([r["step"] for r in records], [r["loss"] for r in records])
        summaries[name]["final_loss"] = curves[name][1][-1]
    model = config.model.name
    weighting = f", min-SNR-{config.diffusion.min_snr_gamma:g} weighted" if config.diffusion.min_snr_gamma else ""
    save_curves(out / "training_loss.png", curves, f"training loss ({config.diffusion.prediction} MSE{weighting})",
                f"{model} on Fashion-MNIST latents, {scale.train_steps} steps")
    lines += ["## 3. Training", "",
              f"{model} on the 8x8x4 latents, batch {config.train.batch_size}, {scale.train_steps} steps each: "
              f"`{RUN_CONFIG}` with " + ", ".join(f"`{o}`" for o in shared if not o.startswith("data.data_dir"))
              + ". Checkpoints, metrics and TensorBoard events are in `runs/<name>`.", "",
              "| run | what | settings | final loss |", "|---|---|---|---|"]
    lines += [f"| {name} | {RUN_TITLES[name]} | {', '.join(RUNS[name]) or '—'} | {summaries[name]['final_loss']:.4f} |"
              for name in RUNS]
    lines += ["", "![training loss](training_loss.png)", ""]
    return summaries
