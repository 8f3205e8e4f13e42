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
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffcorrupt.diffusion.samplers import guided, sample
from diffcorrupt.diffusion.schedules import Schedule
from diffcorrupt.models.tokenizer import Tokenizer
from diffcorrupt.parallel.sharding import gathered_for_compute
from diffcorrupt.report.figures import save_tiled
from diffcorrupt.sampling.quantise import quantise

GRID = 16
STEPS = 25


def preview_conditions(num_classes: int, tokenizer: Tokenizer | None, captions: list[str]) -> np.ndarray:
    """Host values, the same on every process, that the sampling program embeds as constants."""
    if tokenizer is None:
        return np.arange(GRID) % num_classes
    return np.asarray(tokenizer.encode_batch([captions[i % len(captions)] for i in range(GRID)]))


def write_preview(model, ema_params, config: ml_collections.ConfigDict, schedule: Schedule, cond: np.ndarray,
                  input_shape: tuple[int, int, int], workdir: pathlib.Path, step: int, writer, mesh: Mesh,
                  decode: Callable[[jax.Array], jax.Array] | None = None) -> pathlib.Path | None:
    """Every process calls it (the EMA weights span all of them); process 0 writes the grid and
    returns its path. ``decode`` turns a latent model's samples into pixels (the autoencoder that
    made its latents), on process 0's own device."""
    channels = input_shape[-1]
    shardings = jax.tree.map(lambda x: x.sharding, ema_params)

    def generate(params) -> jax.Array:
        params = gathered_for_compute(params, shardings)
        z = jax.random.normal(jax.random.key(config.seed), (GRID, *input_shape))

        def model_fn(x, t, null_mask):
            return model.apply({"params": params}, x, t, jnp.concatenate([cond, cond]), null_mask)

        return sample(guided(model_fn, config.sample.cfg_scale, channels), z, schedule, sampler="ddim", steps=STEPS,
                      learned_sigma=config.model.learned_sigma)

    replicated = NamedSharding(mesh, PartitionSpec())  # readable on every process
    samples = np.asarray(jax.jit(generate, out_shardings=replicated)(ema_params))
    if jax.process_index() > 0:
        return None
    pixels = np.asarray(quantise(samples if decode is None else jax.jit(decode)(samples)))
    path = workdir / "samples" / f"step_{step}.png"
    grid = save_tiled(path, pixels)
    writer.write_images(step, {"samples": grid[None].astype(np.float32) / 255.0})
    return path
