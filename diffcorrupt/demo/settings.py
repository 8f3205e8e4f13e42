"""What the demo runs, at its two sizes; one place, so the report states exactly what was run."""

from __future__ import annotations

import dataclasses
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent.parent

# The embedded 10k Fashion-MNIST split (also what Debian's package holds as t10k), so that the demo
# trains, and is scored, on the same images on every machine.
FMNIST = ["data.split=test"]
AUTOENCODER = "kl-f4-small"  # 32x32x1 images -> 8x8x4 latents
# Batch 16 halves the autoencoder's time (194 s -> 104 s for 400 steps) for a latent space the diffusion
# runs learn equally well from: held-out PSNR 20.1 dB against 20.3, and a clean run's accuracy at guidance 2
# 0.474 against 0.466 (2026-12-04; docs/performance.md, "The demo's wall-clock").
AUTOENCODER_BATCH = 16
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
# 0.466 against 0.475, FD 3.80 against 3.68) in 41 s instead of 75 (2026-12-04).
FULL = Scale("full", stream_batches=100, autoencoder_steps=400, train_steps=1000, num_samples=500, sampler_steps=15,
             cfg_scales="1,2,3")
QUICK = Scale("quick", stream_batches=10, autoencoder_steps=30, train_steps=40, num_samples=80, sampler_steps=10,
              cfg_scales="1,2")
