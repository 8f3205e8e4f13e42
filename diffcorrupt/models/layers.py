"""Building blocks the model files share: logically partitioned layers, fused attention, and
timestep and position embeddings.

Every parameter carries logical axis names, mapped to the (data, fsdp, tensor) mesh by the rules
in ``diffcorrupt.parallel.sharding``:
  embed     the model width (FSDP shards it)          mlp    hidden width of MLPs (tensor parallel)
  heads     fused attention heads x head dim (tensor)  vocab  embedding-table rows
  conv_in / conv_out  convolution channels             norm   normalisation scales and offsets
Activations are constrained on their batch axis (``batch``) so that XLA never gathers the batch.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diffcorrupt.models.affine import affine

Dtype = Any
DEFAULT_INIT = nn.initializers.xavier_uniform()


def dense(features: int, axes: tuple[str | None, str | None], *, name: str | None = None, dtype: Dtype = jnp.float32,
          use_bias: bool = True, kernel_init=DEFAULT_INIT, bias_init=nn.initializers.zeros) -> Projection:
    """A dense layer (``nn.Dense``'s parameters: kernel (in, out) named ``axes``, bias ``axes[1]``)."""
    return Projection((features,), axes, use_bias=use_bias, dtype=dtype, kernel_init=kernel_init,
                      bias_init=bias_init, name=name)


def conv(features: int, kernel: int, *, stride: int = 1, name: str | None = None, dtype: Dtype = jnp.float32,
         kernel_init=nn.initializers.lecun_normal(), padding: str | Sequence = "SAME") -> nn.Conv:
    """A 2-D convolution (NHWC) whose channels are named (conv_in, conv_out)."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        dtype=dtype,
        kernel_init=nn.with_logical_partitioning(kernel_init, (None, None, "conv_in", "conv_out")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
        name=name,
    )


def layer_norm(*, affine: bool = True, epsilon: float = 1e-6, name: str | None = None, dtype: Dtype = jnp.float32) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=epsilon,
        use_scale=affine,
        use_bias=affine,
        dtype=dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
        name=name,
    )


def group_norm(groups: int = 32, *, epsilon: float = 1e-5, name: str | None = None, dtype: Dtype = jnp.float32) -> nn.GroupNorm:
    return nn.GroupNorm(
        num_groups=groups,
        epsilon=epsilon,
        dtype=dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
        name=name,
    )


def embedding_table(num: int, features: int, *, name: str, init=nn.initializers.normal(0.02)) -> nn.Embed:
    return nn.Embed(num, features, embedding_init=nn.with_logical_partitioning(init, ("vocab", "embed")), name=name)


def constrain_batch(x: jax.Array) -> jax.Array:
    """Keeps the leading (batch) axis sharded over the batch mesh axes, the rest unconstrained."""
    return nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 1))


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
              causal: bool = False) -> jax.Array:
    """Multi-head attention on (batch, length, heads, head_dim), through JAX's fused kernel
    (cuDNN flash attention on GPUs where it applies, XLA's fusion elsewhere)."""
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)


class Projection(nn.Module):
    """x (..., in) -> (..., *features) against a kernel (in, *features), or with ``in_axes=2`` x
    (..., a, b) -> (..., features) against (a, b, features). Xavier-uniform over all input and
    output axes equals Xavier on the flattened 2-D kernel of the original layers."""

    features: tuple[int, ...]
    axes: tuple[str | None, ...]
    in_axes: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    kernel_init: Any = None  # default: Xavier over all input and output axes
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = x.shape[-self.in_axes:] + self.features
        init = self.kernel_init or nn.initializers.variance_scaling(
            1.0, "fan_avg", "uniform", in_axis=tuple(range(self.in_axes)),
            out_axis=tuple(range(self.in_axes, len(shape))))
        kernel = self.param("kernel", nn.with_logical_partitioning(init, self.axes), shape)
        bias = None
        if self.use_bias:
            bias_axes = self.axes[self.in_axes:]
            bias = self.param("bias", nn.with_logical_partitioning(self.bias_init, bias_axes), self.features).astype(self.dtype)
        return affine(x.astype(self.dtype), kernel.astype(self.dtype), bias, self.in_axes)


class MultiHeadAttention(nn.Module):
    """Self-attention (``context=None``) or cross-attention over ``context``.

    Projections keep an explicit head axis (kernels (embed, [2|3,] heads, head_dim)) instead of a
    flat heads x head_dim axis: splitting a flat axis that is sharded over the tensor mesh axis
    into heads is where XLA's partitioner mis-compiled attention on a (2, 2, 2) mesh, and the
    explicit axis is also what lets the head axis alone be sharded.
    """

    num_heads: int
    head_dim: int
    out_features: int
    use_bias: bool = True
    causal: bool = False  # each position attends to itself and earlier ones only (CLIP's text tower)
    dtype: Dtype = jnp.float32

    def _heads(self, x: jax.Array, parts: int, name: str) -> jax.Array:
        features = ((parts,) if parts > 1 else ()) + (self.num_heads, self.head_dim)
        axes = ("embed",) + ((None,) if parts > 1 else ()) + ("heads", "kv")
        return Projection(features, axes, use_bias=self.use_bias, dtype=self.dtype, name=name)(x)

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None, context_mask: jax.Array | None = None) -> jax.Array:
        if context is None:
            qkv = self._heads(x, 3, "qkv")
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        else:
            q = self._heads(x, 1, "q")
            kv = self._heads(context, 2, "kv")
            k, v = kv[:, :, 0], kv[:, :, 1]
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out = attention(q, k, v, mask=mask, causal=self.causal)
        return Projection((self.out_features,), ("heads", "kv", "embed"), in_axes=2, dtype=self.dtype, name="out")(out)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal features of (possibly fractional) timesteps: [cos, sin] halves, as DiT and ADM."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        embedding = jnp.pad(embedding, ((0, 0), (0, 1)))
    return embedding


class TimestepEmbedder(nn.Module):
    """Sinusoidal features -> MLP (Linear, SiLU, Linear).

    With ``guidance_dim`` > 0 (a consistency-distilled student, LCM) the guidance scale s enters too:
    sinusoidal features of (s - 1) * 1000, LCM's w-embedding with w = s - 1, go through a linear map
    without bias, ``cond_proj``, and are added to the timestep features before the MLP, as in
    diffusers' ``TimestepEmbedding``. The map starts at zero, so a student made from a teacher's
    weights starts as exactly that teacher, whatever s.
    """

    features: int
    frequency_dim: int = 256
    guidance_dim: int = 0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array, guidance: jax.Array | None = None) -> jax.Array:
        init = nn.initializers.normal(0.02)
        h = timestep_embedding(t, self.frequency_dim)
        if self.guidance_dim:
            scale = jnp.ones(t.shape, jnp.float32) if guidance is None else jnp.asarray(guidance, jnp.float32)
            w = timestep_embedding((scale - 1.0) * 1000.0, self.guidance_dim)
            h = h + dense(self.frequency_dim, (None, None), name="cond_proj", dtype=self.dtype, use_bias=False,
                          kernel_init=nn.initializers.zeros)(w)
        h = dense(self.features, (None, "embed"), name="fc1", dtype=self.dtype, kernel_init=init)(h)
        return dense(self.features, ("embed", None), name="fc2", dtype=self.dtype, kernel_init=init)(nn.silu(h))


def sincos_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D sin-cos position table (grid_size**2, embed_dim), MAE/DiT layout."""
    coords = np.arange(grid_size, dtype=np.float64)
    grid_w, grid_h = np.meshgrid(coords, coords)

    def one_axis(dim: int, positions: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10_000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = positions.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([one_axis(embed_dim // 2, grid_w), one_axis(embed_dim // 2, grid_h)], axis=1)
    return table.astype(np.float32)
