"""Training a small autoencoder on an embedded dataset, so that the CPU demo is a real latent model.

The released autoencoders (SD's KL-f8, LDM's VQ-f4) were trained with a perceptual (LPIPS) and an
adversarial loss, whose weights this project cannot fetch from a package registry; a small
autoencoder for 32x32 images needs neither. The losses are: the mean squared reconstruction error,
plus for KL a weight 1e-6 times the posterior's KL divergence (per latent element, as LDM's
``kl_weight``), or for VQ the codebook and 0.25 x commitment terms with the straight-through
estimator (van den Oord et al.). Afterwards the latent scale factor is set as LDM does, to one over
the standard deviation of the training latents, so the diffusion model sees unit-variance latents.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffcorrupt.autoencoders.presets import preset
from diffcorrupt.autoencoders.storage import make_autoencoder, save_autoencoder
from diffcorrupt.data.preprocess import clean_images
from diffcorrupt.data.sources.registry import make_source

KL_WEIGHT = 1e-6
COMMITMENT = 0.25
HELD_OUT = 512
PROGRESS_EVERY_S = 5.0  # a line at least this often, so that minutes of steps do not pass in silence


def train_autoencoder(data: ml_collections.ConfigDict, preset_name: str, out: str | Path, *, steps: int,
                      batch_size: int = 64, lr: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Trains, measures held-out reconstruction, and saves the autoencoder folder; returns a summary."""
    config = dataclasses.replace(preset(preset_name), in_channels=data.channels, out_channels=data.channels)
    module = make_autoencoder(config)
    images = clean_images(make_source(data), data.image_size, data.channels)
    held_out, train_images = images[-HELD_OUT:], images[:-HELD_OUT]
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    batch_size = -(-batch_size // mesh.size) * mesh.size
    rows, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
    variables = module.init(jax.random.key(seed), jnp.zeros((1, *images.shape[1:]), jnp.float32))
    optimizer = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, min(100, steps // 10 + 1), steps), weight_decay=0.0)
    state = jax.device_put((variables, optimizer.init(variables)), replicated)
    step_fn = jax.jit(_make_step(module, config.kind, optimizer), in_shardings=(replicated, rows, None),
                      out_shardings=(replicated, None), donate_argnums=0)
    rng = np.random.default_rng(seed)
    start, loss = time.perf_counter(), float("nan")
    logged = start
    for step in range(1, steps + 1):
        batch = train_images[rng.integers(0, len(train_images), batch_size)]
        state, metrics = step_fn(state, jax.device_put(_to_float(batch), rows), jax.random.key(step))
        if step == steps or time.perf_counter() - logged >= PROGRESS_EVERY_S:  # the loss read waits for the step
            loss, logged = float(metrics["loss"]), time.perf_counter()
            logging.info("autoencoder: step %d of %d, loss %.4f (%.1f steps/s)", step, steps, loss,
                         step / (logged - start))
    variables = jax.device_get(state[0])
    latents, reconstruction = _encode_decode(module, config.kind, variables, _to_float(held_out))
    mse = float(np.mean((reconstruction - _to_float(held_out)) ** 2))
    scale = float(1.0 / np.std(latents))
    config = dataclasses.replace(config, scale_factor=scale)
    meta = {"source": "trained", "dataset": data.name, "image_size": data.image_size, "channels": data.channels,
            "preset": preset_name, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
            "final_loss": loss, "held_out_mse": mse, "held_out_psnr": 10 * math.log10(4.0 / mse),
            "train_seconds": round(time.perf_counter() - start, 1)}
    sha256 = save_autoencoder(out, config, variables, meta)
    return {"out": str(out), "sha256": sha256, "scale_factor": scale, **meta}


def _make_step(module, kind: str, optimizer: optax.GradientTransformation):
    def loss_fn(variables, x, key):
        if kind == "kl":
            mean, logvar = module.apply(variables, x, method="encode")
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
            rec = module.apply(variables, z, method="decode")
            kl = 0.5 * jnp.mean(mean**2 + jnp.exp(logvar) - 1.0 - logvar)
            return jnp.mean((rec - x) ** 2) + KL_WEIGHT * kl
        h = module.apply(variables, x, method="encode")
        zq = module.apply(variables, h, method="quantize")[0]
        codebook = jnp.mean((zq - jax.lax.stop_gradient(h)) ** 2)
        commitment = jnp.mean((h - jax.lax.stop_gradient(zq)) ** 2)
        straight_through = h + jax.lax.stop_gradient(zq - h)
        rec = module.apply(variables, straight_through, False, method="decode")
        return jnp.mean((rec - x) ** 2) + codebook + COMMITMENT * commitment

    def step(state, x, key):
        variables, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(variables, x, key)
        updates, opt_state = optimizer.update(grads, opt_state, variables)
        return (optax.apply_updates(variables, updates), opt_state), {"loss": loss}

    return step


def _encode_decode(module, kind: str, variables, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    encoded = module.apply(variables, x, method="encode")
    latents = encoded[0] if kind == "kl" else encoded
    return np.asarray(latents), np.asarray(module.apply(variables, latents, method="decode"))


def _to_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 127.5 - 1.0
