"""Condition embedders and what training does to their output: CEP and the paper's baselines.

The condition enters every model through one of these embedders, so that CEP (condition embedding
perturbation) is applied in one place, to the embedder's output, before it reaches the network
(adaLN for DiT, cross-attention for the U-Net), exactly as the paper's loss
E ||eps - eps_theta(x_t, t, c_theta(y) + delta)||^2 states: a fresh delta per example per step,
during training only.

  CEP-U: delta ~ U(-gamma/sqrt(d), +gamma/sqrt(d)) elementwise.
  CEP-G: delta ~ N(0, sigma^2), sigma = gamma/sqrt(d) (``gaussian_reading='std'``, the default);
         the paper prints N(0, (gamma/sqrt(d)) I), read literally the *variance* is gamma/sqrt(d)
         (``gaussian_reading='variance'``).
  d is the embedding's last dimension (``dims='last'``: 512 for the LDM class embedding, 1152 for
  DiT-XL, 768 per text token) or all its elements (``dims='all'``: 77 x 768 for text).
The null (unconditional) embedding of classifier-free guidance is left unperturbed unless
``perturb_null``. Dropout and label smoothing on the condition are the paper's Table 6 baselines.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from diffcorrupt.models.layers import Dtype, embedding_table


@dataclasses.dataclass(frozen=True)
class ConditionNoise:
    """What training does to condition embeddings (from ``config.model``)."""

    cep: str = "none"  # none | uniform | gaussian
    gamma: float = 1.0
    gaussian_reading: str = "std"  # std | variance
    dims: str = "last"  # last | all
    perturb_null: bool = False
    dropout: float = 0.0
    label_smoothing: float = 0.0

    @classmethod
    def from_config(cls, model_config: ml_collections.ConfigDict) -> "ConditionNoise":
        cep = model_config.cep
        return cls(cep=cep.kind, gamma=cep.gamma, gaussian_reading=cep.gaussian_reading, dims=cep.dims,
                   perturb_null=cep.perturb_null, dropout=model_config.condition_dropout,
                   label_smoothing=model_config.label_smoothing)

    def scale(self, embedding_shape: tuple[int, ...]) -> float:
        """gamma / sqrt(d) for an embedding of shape (batch, ...)."""
        d = embedding_shape[-1] if self.dims == "last" else math.prod(embedding_shape[1:])
        return self.gamma / math.sqrt(d)


def cep_delta(rng: jax.Array, shape: tuple[int, ...], noise: ConditionNoise, dtype=jnp.float32) -> jax.Array:
    """One draw of the CEP perturbation (zeros when CEP is off)."""
    scale = noise.scale(shape)
    if noise.cep == "uniform":
        return jax.random.uniform(rng, shape, dtype, minval=-scale, maxval=scale)
    if noise.cep == "gaussian":
        std = scale if noise.gaussian_reading == "std" else math.sqrt(scale)
        return std * jax.random.normal(rng, shape, dtype)
    return jnp.zeros(shape, dtype)


class PerturbCondition(nn.Module):
    """CEP (rng stream 'cep') and condition dropout (rng stream 'dropout'), training only."""

    noise: ConditionNoise

    @nn.compact
    def __call__(self, c: jax.Array, null_mask: jax.Array, train: bool) -> jax.Array:
        if not train:
            return c
        if self.noise.cep != "none":
            delta = cep_delta(self.make_rng("cep"), c.shape, self.noise, c.dtype)
            if not self.noise.perturb_null:
                keep = ~null_mask.reshape(null_mask.shape + (1,) * (c.ndim - 1))
                delta = jnp.where(keep, delta, 0)
            c = c + delta
        if self.noise.dropout > 0:
            c = nn.Dropout(self.noise.dropout)(c, deterministic=False)
        return c


class ClassEmbedder(nn.Module):
    """A table of num_classes + 1 rows; the last row is the null condition of guidance."""

    num_classes: int
    features: int
    noise: ConditionNoise = ConditionNoise()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, labels: jax.Array, null_mask: jax.Array, train: bool = False) -> jax.Array:
        table = embedding_table(self.num_classes + 1, self.features, name="table")
        ids = jnp.where(null_mask, self.num_classes, labels)
        c = table(ids)
        if train and self.noise.label_smoothing > 0:
            # The embedding of a smoothed one-hot over the real classes: (1 - e) E[y] + e mean(E).
            mean = table.embedding[: self.num_classes].mean(axis=0)
            smoothed = (1 - self.noise.label_smoothing) * c + self.noise.label_smoothing * mean
            c = jnp.where(null_mask[:, None], c, smoothed)
        return PerturbCondition(self.noise, name="perturb")(c.astype(self.dtype), null_mask, train)
