"""What the demo runs, at its two sizes; one place, so the report states exactly what was run."""

from __future__ import annotations

import dataclasses
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent.parent

# The embedded 10k Fashion-MNIST split (also what Debian's package holds as t10k), so that the demo
# trains, and is scored, on the same images on every machine.
FMNIST = ["data.split=test"]
AUTOENCODER = "kl-f4-small"  # 32x32x1 images -> 8x8x4 latents
# Batch 8 at lr 3e-3 (the job's defaults are 64 and 1e-3): 400 steps in 57 s, held-out PSNR 21.1 dB, and the
# clean run on its latents scores accuracy 0.852 and FD 1.14 at guidance 2. Batch 16 at lr 1e-3, the demo's
# setting before, took 104 s for 20.2 dB, and the same run scored 0.808 and FD 1.87 (2026-12-04;
# docs/reproduction.md, "Better small models").
AUTOENCODER_BATCH = 8
AUTOENCODER_LR = 3e-3
RUN_CONFIG = "configs/fmnist.py:latent"  # DiT-T/2 on those latents; the reproduction's runs too
RUNS = {
    "clean": [],
    "eta_5pct": ["data.corruption.ratio=0.05"],
    "clean_cep_uniform": ["model.cep.kind=uniform"],
}
RUN_TITLES = {"clean": "clean", "eta_5pct": "slight corruption (eta = 5%)", "clean_cep_uniform": "CEP-U (gamma = 1)"}


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much of everything: the full demo, or the smoke run of ``--quick``."""

    name: str
    stream_batches: int
    autoencoder_steps: int
    train_steps: int
    num_samples: int  # per run and guidance scale
    sampler_steps: int
    cfg_scales: str

    @property
    def sample_batch(self) -> int:
        return min(self.num_samples, 250)  # 500 samples in two full batches


# 500 samples at 15 DPM-Solver++ steps scored the clean run as 800 at 25 did (accuracy at guidance 2:
# 0.466 against 0.475, FD 3.80 against 3.68) in 41 s instead of 75; 10 steps scored the three demo runs
# as 15 did (accuracy at guidance 2 0.816 / 0.788 / 0.838 against 0.808 / 0.790 / 0.840, FD 0.1 higher)
# in two thirds of the time (2026-12-04).
FULL = Scale("full", stream_batches=100, autoencoder_steps=400, train_steps=1000, num_samples=500, sampler_steps=10,
             cfg_scales="1,2,3")
QUICK = Scale("quick", stream_batches=10, autoencoder_steps=30, train_steps=40, num_samples=80, sampler_steps=10,
              cfg_scales="1,2")
