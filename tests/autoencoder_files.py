"""Autoencoders with random parameters of a known scale, for tests: drawn in numpy from the traced
shapes, since ``module.init`` compiles its hundreds of random draws for longer than the tests take."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffcorrupt.autoencoders.presets import PRESETS, AutoencoderConfig
from diffcorrupt.autoencoders.storage import param_shapes, save_autoencoder, unflatten_params


def random_flat_params(config: AutoencoderConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Flat float32 parameters: non-zero biases and norm offsets, so that a mix-up of parameters shows in
    the outputs."""
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in param_shapes(config).items():
        if name == "codebook":
            flat[name] = rng.uniform(-1, 1, shape)
        elif name.endswith("kernel"):
            flat[name] = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            flat[name] = name.endswith("scale") + 0.05 * rng.normal(size=shape)
    return {name: np.asarray(value, np.float32) for name, value in flat.items()}


def save_random_vq(path: Path, config: AutoencoderConfig = PRESETS["vq-f4-small"],
                   flat: dict[str, np.ndarray] | None = None) -> str:
    """An autoencoder folder of ``flat`` (default: random) parameters; returns its weights' sha256."""
    flat = random_flat_params(config) if flat is None else flat
    return save_autoencoder(path, config, unflatten_params(flat), {"source": "random"})
