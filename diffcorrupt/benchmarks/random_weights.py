"""Random weights for the benchmarks that need no real ones (the arithmetic is the same)."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np


def random_variables(module: nn.Module, *inputs) -> dict:
    """Every variable of ``module`` drawn in numpy from the shapes alone (kernels He-scaled, scales and
    variances 1, vectors 0). flax's init would run the network op by op, a compile each (80 of the 90 s
    that ``bench inception`` took on a 2-core CPU), only to throw the numbers away."""
    abstract = nn.meta.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        if getattr(path[-1], "key", None) in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        if len(leaf.shape) < 2:
            return np.zeros(leaf.shape, leaf.dtype)
        return (rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)
