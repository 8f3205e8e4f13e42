"""Sample grids from the EMA weights during training: a glance at what the run has learned.

A fixed set of conditions (the first classes, or the first captions of the dataset) and fixed
noise, so grids of successive steps are comparable; DDIM with 25 steps at the configured
guidance scale. Written to ``<workdir>/samples/step_<n>.png`` and to TensorBoard.
"""

from __future__ import annotations

import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffcorrupt.diffusion.samplers import guided, sample
from diffcorrupt.diffusion.schedules import Schedule
from diffcorrupt.models.tokenizer import Tokenizer
from diffcorrupt.report.figures import save_tiled
from diffcorrupt.sampling.quantise import quantise

GRID = 16
STEPS = 25


def preview_conditions(num_classes: int, tokenizer: Tokenizer | None, captions: list[str]) -> jax.Array:
    if tokenizer is None:
        return jnp.arange(GRID) % num_classes
    return jnp.asarray(tokenizer.encode_batch([captions[i % len(captions)] for i in range(GRID)]))


def write_preview(model, ema_params, config: ml_collections.ConfigDict, schedule: Schedule, cond: jax.Array,
                  input_shape: tuple[int, int, int], workdir: pathlib.Path, step: int, writer,
                  decode: Callable[[jax.Array], jax.Array] | None = None) -> pathlib.Path:
    """``decode`` turns a latent model's samples into pixels (the autoencoder that made its latents)."""
    noise = jax.random.normal(jax.random.key(config.seed), (GRID, *input_shape))
    channels = input_shape[-1]

    def model_fn(x, t, null_mask):
        return model.apply({"params": ema_params}, x, t, jnp.concatenate([cond, cond]), null_mask)

    def generate(z: jax.Array) -> jax.Array:
        x = sample(guided(model_fn, config.sample.cfg_scale, channels), z, schedule, sampler="ddim", steps=STEPS,
                   learned_sigma=config.model.learned_sigma)
        return x if decode is None else decode(x)

    images = jax.jit(generate)(noise)
    pixels = np.asarray(quantise(images))
    path = workdir / "samples" / f"step_{step}.png"
    grid = save_tiled(path, pixels)
    writer.write_images(step, {"samples": grid[None].astype(np.float32) / 255.0})
    return path
