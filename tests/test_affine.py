"""The hand-written backward of ``affine`` gives autodiff's gradients of the same expression."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.models.affine import affine


@pytest.mark.parametrize("x_shape, kernel_shape, in_axes", [
    ((4, 6, 8), (8, 12), 1),            # a dense layer on (batch, tokens, in)
    ((4, 6, 8), (8, 3, 2, 5), 1),       # the fused qkv projection: (embed, 3, heads, head_dim)
    ((4, 6, 2, 5), (2, 5, 8), 2),       # the attention output: (heads, head_dim) -> embed
    ((7, 8), (8, 3), 1),                # a 2-D input (the adaLN modulation on conditions)
])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gradients_equal_autodiffs(x_shape, kernel_shape, in_axes, with_bias):
    keys = jax.random.split(jax.random.key(0), 4)
    x, kernel = jax.random.normal(keys[0], x_shape), jax.random.normal(keys[1], kernel_shape)
    bias = jax.random.normal(keys[2], kernel_shape[in_axes:]) if with_bias else None
    cotangent = jax.random.normal(keys[3], x_shape[:len(x_shape) - in_axes] + kernel_shape[in_axes:])

    def reference(x, kernel, bias):
        y = jnp.tensordot(x, kernel, axes=in_axes)
        return jnp.sum((y if bias is None else y + bias) * cotangent)

    def ours(x, kernel, bias):
        return jnp.sum(affine(x, kernel, bias, in_axes) * cotangent)

    argnums = (0, 1, 2) if with_bias else (0, 1)
    np.testing.assert_allclose(ours(x, kernel, bias), reference(x, kernel, bias), rtol=1e-6)
    for got, want in zip(jax.grad(ours, argnums)(x, kernel, bias), jax.grad(reference, argnums)(x, kernel, bias)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
