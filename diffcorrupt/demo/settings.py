"""What the demo runs, at its two sizes; one place, so the report states exactly what was run."""

from __future__ import annotations

import dataclasses
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent.parent

# The embedded 10k Fashion-MNIST split (also what Debian's package holds as t10k), so that the demo
# trains, and is scored, on the same images on every machine.
FMNIST = ["data.split=test"]
AUTOENCODER = "kl-f4-small"  # 32x32x1 images -> 8x8x4 latents
AUTOENCODER_BATCH = 32
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
        return min(self.num_samples, 200)


FULL = Scale("full", stream_batches=100, autoencoder_steps=400, train_steps=1200, num_samples=800, sampler_steps=25,
             cfg_scales="1,2,3")
QUICK = Scale("quick", stream_batches=10, autoencoder_steps=30, train_steps=40, num_samples=80, sampler_steps=10,
              cfg_scales="1,2")
