"""Settings that several presets share, so the embedded datasets' twins stay in step."""

from __future__ import annotations

import ml_collections


def small_scale(config: ml_collections.ConfigDict) -> None:
    """The small-scale twin of the paper's runs: what fits a CPU or one small accelerator."""
    config.model.name = "DiT-S/4"
    config.train.batch_size = 128
    config.train.num_steps = 20_000
    config.train.lr = 2e-4
    config.checkpoint.every_steps = 1_000


def smoke(config: ml_collections.ConfigDict) -> None:
    """A few steps on a small batch: the smoke-test variant of any preset."""
    config.train.batch_size = 16
    config.train.num_steps = 20
    config.checkpoint.every_steps = 10
    config.checkpoint.keep = 2
