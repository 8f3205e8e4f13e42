"""The README's main job: ``diffcorrupt demo --quick`` goes data -> autoencoder -> latents -> train ->
checkpoint -> sample -> evaluate -> report, and a rerun resumes instead of starting over."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from diffcorrupt.demo.job import run_demo
from diffcorrupt.demo.settings import FULL, QUICK, RUNS
from diffcorrupt.errors import UserError

REPO = pathlib.Path(__file__).resolve().parent.parent


def _demo(out):
    # As a user runs it: on the machine's one CPU device, not the 8 this test process simulates (the stages'
    # multi-device paths are tested on their own; simulated collectives also stall when the cores are busy).
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f)
    result = subprocess.run([sys.executable, "-m", "diffcorrupt", "demo", "--quick", f"--out={out}"], cwd=REPO,
                            capture_output=True, text=True, timeout=900, env={**os.environ, "XLA_FLAGS": flags})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_quick_demo_end_to_end_and_resume(tmp_path):
    first = _demo(tmp_path)
    report = (tmp_path / "report.md").read_text()
    steps = QUICK.train_steps
    for artefact in ("data/fmnist_symmetric_5pct/flip_matrix.png", "data/shapes_swap_10pct/batch.png", "training_loss.png",
                     "report/classifier_vs_cfg.png"):
        assert (tmp_path / artefact).is_file() and artefact in report, artefact
    assert (tmp_path / "data/fmnist_symmetric_5pct/corruption.json").is_file()
    assert (tmp_path / "autoencoder" / "params.npz").is_file() and (tmp_path / "latents" / "meta.json").is_file()
    assert first["data"]["fmnist_symmetric_5pct"]["manifest"]["num_corrupted"] == 500  # 5% of the embedded 10k
    assert first["latent"]["latents"]["encoded_now"] == 10_000
    for name, run in first["training"].items():
        workdir = tmp_path / "runs" / name
        assert run["first_step"] == 0 and run["last_step"] == steps
        assert (workdir / "checkpoints" / str(steps) / "commit_success.txt").exists()
        assert (workdir / "model.json").is_file() and (workdir / "metrics.jsonl").is_file()
        for scale in QUICK.cfg_scales.split(","):
            samples = workdir / "eval" / f"step_{steps}" / f"dpm{QUICK.sampler_steps}-cfg{float(scale):g}-seed0"
            metrics = json.loads((samples / "metrics.json").read_text())
            assert metrics["num_samples"] == QUICK.num_samples
            # Decoded images scored against the pixel dataset the latents came from, by its classifier.
            assert metrics["reference"]["spec"] == "dataset" and set(metrics["networks"]) == {"classifier", "pixels"}
            assert 0.0 <= metrics["networks"]["classifier"]["metrics"]["accuracy"] <= 1.0
    rows = (tmp_path / "report" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * len(RUNS) * len(QUICK.cfg_scales.split(","))  # classifier and pixel rows
    assert "Each run at its best guidance scale" in report and "| symmetric | 5% |" in report

    again = _demo(tmp_path)
    assert all(run["first_step"] == run["last_step"] == steps for run in again["training"].values())
    assert again["latent"]["latents"]["encoded_now"] == 0
    assert (tmp_path / "report" / "results.csv").read_text().splitlines() == rows


def test_demo_refuses_a_folder_of_the_other_scale(tmp_path):
    (tmp_path / "demo.json").write_text(json.dumps({"scale": "quick"}))
    with pytest.raises(UserError, match="scale 'quick'"):
        run_demo(tmp_path, FULL)
    (tmp_path / "demo.json").unlink()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        run_demo(tmp_path, FULL)
    assert (tmp_path / "notes.txt").read_text() == "mine"
