"""The training objective: the diffusion loss of a model under condition drop, CEP and the
baselines, with its split over corrupted and clean examples.

One function serves the trainer and the train-step benchmark, so what is measured is what trains.
The rng of a step splits into the guidance drop (which examples see the null condition), the
diffusion draws (t, noise), CEP and dropout; each is fresh per step and, by its shape, per example.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from diffcorrupt.diffusion.losses import training_losses
from diffcorrupt.diffusion.schedules import Schedule

LossFn = Callable[[Any, dict[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
# (params, x_t, t, condition, null mask, batch, rngs) -> the model's output
Forward = Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array, dict[str, jax.Array], dict], jax.Array]


def condition_key(model: nn.Module) -> str:
    """The batch field a model is conditioned on."""
    return "label" if model.num_classes else "tokens"


def make_loss_fn(model: nn.Module, schedule: Schedule, config: ml_collections.ConfigDict,
                 forward: Forward | None = None) -> LossFn:
    """loss_fn(params, batch, rng) -> (mean loss, metrics); batch holds 'image' or 'latent', the
    condition ('label' or 'tokens') and optionally the pipeline's 'corrupted' flags and 'control'
    images. ``forward`` computes the prediction from ``params`` (default: ``model`` in training
    mode); a personalization passes the frozen base called with its control branch."""
    diffusion = config.diffusion

    def train_forward(params, x_t, t, cond, null_mask, batch, rngs):
        return model.apply({"params": params}, x_t, t, cond, null_mask, train=True, rngs=rngs)

    forward = forward or train_forward

    def loss_fn(params, batch, rng):
        drop_key, loss_key, cep_key, dropout_key = jax.random.split(rng, 4)
        x0 = batch["latent"] if "latent" in batch else batch["image"]
        cond = batch[condition_key(model)]
        null_mask = jax.random.bernoulli(drop_key, config.model.label_drop, (x0.shape[0],))

        def model_fn(x_t, t):
            return forward(params, x_t, t, cond, null_mask, batch, {"cep": cep_key, "dropout": dropout_key})

        losses = training_losses(model_fn, x0, loss_key, schedule, prediction=diffusion.prediction,
                                 learned_sigma=config.model.learned_sigma, loss=diffusion.loss,
                                 input_perturbation=diffusion.input_perturbation,
                                 min_snr_gamma=diffusion.min_snr_gamma)
        per_example = losses["loss"]
        metrics = {"loss": per_example.mean(), "mse": losses["mse"].mean(), **corruption_split(per_example, batch)}
        if "vb" in losses:
            metrics["vb"] = losses["vb"].mean()
        return per_example.mean(), metrics

    return loss_fn


def corruption_split(per_example: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The sums the trainer turns into the loss on corrupted and on clean examples, when the
    pipeline flags them."""
    if "corrupted" not in batch:
        return {}
    corrupted = batch["corrupted"].astype(jnp.float32)
    return {"loss_sum_corrupted": jnp.sum(per_example * corrupted), "loss_sum_clean": jnp.sum(per_example * (1 - corrupted)),
            "num_corrupted": jnp.sum(corrupted)}
