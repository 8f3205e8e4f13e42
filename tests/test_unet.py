"""The latent-diffusion U-Net: CompVis layout and size, shapes, zero init, gradients, guidance.

The small preset runs for real (32x32 inputs, batch 2, one compile per conditioning kind); the
full-size presets are only traced with jax.eval_shape, so nothing of their size is allocated.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from diffcorrupt.models.conditioning import ConditionNoise
from diffcorrupt.models.tokenizer import ByteTokenizer
from diffcorrupt.models.unet import UNET_PRESETS, UNet

NO_NULL = jnp.zeros((2,), bool)
ZERO_INIT = ("proj_out", "out_layers_3", "out_2")  # CompVis zero_module() layers


# ---- The CompVis UNetModel's state dict, derived from openaimodel.py and attention.py ---------------

def compvis_state_dict(in_channels, out_channels, model_channels, channel_mult, num_res_blocks,
                       attention_resolutions, context_dim, transformer_depth, **_) -> dict:
    """{torch key: (shape, kind)} of UNetModel(use_spatial_transformer=True), built by the same loops
    as its __init__ (ResBlock: in_layers.{0,2}, emb_layers.1, out_layers.{0,3}, skip_connection;
    SpatialTransformer: norm, proj_in, transformer_blocks.N.{attn1,attn2,ff,norm1-3}, proj_out)."""
    sd = {}

    def linear(key, i, o, bias=True):
        sd[key + ".weight"] = ((o, i), "linear")
        if bias:
            sd[key + ".bias"] = ((o,), "bias")

    def conv(key, i, o, k):
        sd[key + ".weight"], sd[key + ".bias"] = ((o, i, k, k), "conv"), ((o,), "bias")

    def norm(key, c):
        sd[key + ".weight"], sd[key + ".bias"] = ((c,), "norm"), ((c,), "bias")

    def res_block(key, ci, co):
        norm(f"{key}.in_layers.0", ci)
        conv(f"{key}.in_layers.2", ci, co, 3)
        linear(f"{key}.emb_layers.1", emb, co)
        norm(f"{key}.out_layers.0", co)
        conv(f"{key}.out_layers.3", co, co, 3)
        if ci != co:
            conv(f"{key}.skip_connection", ci, co, 1)

    def transformer(key, c):
        norm(f"{key}.norm", c)
        conv(f"{key}.proj_in", c, c, 1)
        for d in range(transformer_depth):
            block = f"{key}.transformer_blocks.{d}"
            for attn, kv_dim in (("attn1", c), ("attn2", context_dim)):
                linear(f"{block}.{attn}.to_q", c, c, bias=False)
                linear(f"{block}.{attn}.to_k", kv_dim, c, bias=False)
                linear(f"{block}.{attn}.to_v", kv_dim, c, bias=False)
                linear(f"{block}.{attn}.to_out.0", c, c)
            linear(f"{block}.ff.net.0.proj", c, 8 * c)
            linear(f"{block}.ff.net.2", 4 * c, c)
            for n in (1, 2, 3):
                norm(f"{block}.norm{n}", c)
        conv(f"{key}.proj_out", c, c, 1)

    emb = 4 * model_channels
    linear("time_embed.0", model_channels, emb)
    linear("time_embed.2", emb, emb)
    conv("input_blocks.0.0", in_channels, model_channels, 3)
    chans, ch, ds, index = [model_channels], model_channels, 1, 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            res_block(f"input_blocks.{index}.0", ch, mult * model_channels)
            ch = mult * model_channels
            if ds in attention_resolutions:
                transformer(f"input_blocks.{index}.1", ch)
            chans.append(ch)
            index += 1
        if level != len(channel_mult) - 1:
            conv(f"input_blocks.{index}.0.op", ch, ch, 3)
            chans.append(ch)
            index, ds = index + 1, ds * 2
    res_block("middle_block.0", ch, ch)
    transformer("middle_block.1", ch)
    res_block("middle_block.2", ch, ch)
    index = 0
    for level, mult in reversed(list(enumerate(channel_mult))):
        for i in range(num_res_blocks + 1):
            res_block(f"output_blocks.{index}.0", ch + chans.pop(), mult * model_channels)
            ch, sub = mult * model_channels, 1
            if ds in attention_resolutions:
                transformer(f"output_blocks.{index}.{sub}", ch)
                sub += 1
            if level and i == num_res_blocks:
                conv(f"output_blocks.{index}.{sub}.conv", ch, ch, 3)
                ds //= 2
            index += 1
    norm("out.0", model_channels)
    conv("out.2", model_channels, out_channels, 3)
    return sd


def to_flax(key: str, shape: tuple, kind: str) -> tuple[tuple[str, ...], tuple]:
    """The unet.py docstring's naming rule: numeric segments join the one before with '_'."""
    path = []
    for segment in key.split("."):
        if segment.isdigit():
            path[-1] += "_" + segment
        else:
            path.append(segment)
    path = {"time_embed_0": ["time_embed", "fc1"], "time_embed_2": ["time_embed", "fc2"]}.get(path[0], path[:1]) + path[1:]
    leaf = path.pop()
    if leaf == "bias":
        return (*path, "bias"), shape
    if kind == "linear":
        return (*path, "kernel"), shape[::-1]
    if kind == "conv":
        return (*path, "kernel"), (shape[2], shape[3], shape[1], shape[0])
    return (*path, "scale"), shape


def abstract_params(preset: str, num_classes: int, cond: jax.Array) -> dict:
    model = UNet(**UNET_PRESETS[preset], num_classes=num_classes)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1,)), cond,
                               jnp.zeros((1,), bool))
    return {path: leaf.shape for path, leaf in traverse_util.flatten_dict(nn.meta.unbox(variables)["params"]).items()}


def test_cin256_v2_matches_compvis_layout_and_size():
    params = abstract_params("cin256-v2", 1000, jnp.zeros((1,), jnp.int32))
    conditioner = {path: shape for path, shape in params.items() if path[0] == "cond_stage_model"}
    expected = dict(to_flax(key, *entry) for key, entry in compvis_state_dict(**UNET_PRESETS["cin256-v2"]).items())
    # Every CompVis parameter exists here under the mapped name with the mapped shape, and nothing else.
    assert {p: s for p, s in params.items() if p[0] != "cond_stage_model"} == expected
    # LDM's ClassEmbedder: nn.Embedding(1001, 512) (1000 classes + the null class).
    assert conditioner == {("cond_stage_model", "table", "embedding"): (1001, 512)}
    # Derived from the source: UNetModel 400,920,579 + ClassEmbedder 1001 * 512 = 512,512 -> 401,433,091
    # (the paper's "LDM-4, 400M"); for example input_blocks.1.0 (ResBlock 192 -> 192, emb 768) holds
    # 2*192 + 192*192*9+192 + 768*192+192 + 2*192 + 192*192*9+192 = 812,160.
    compvis = sum(int(np.prod(shape)) for shape, _ in compvis_state_dict(**UNET_PRESETS["cin256-v2"]).values())
    assert compvis == 400_920_579
    total = sum(int(np.prod(shape)) for shape in params.values())
    assert abs(total - (compvis + 1001 * 512)) <= 0.01 * (compvis + 1001 * 512)
    assert total == 401_433_091


def test_txt256_size():
    params = abstract_params("txt256", 0, jnp.zeros((1, 77), jnp.int32))
    unet = sum(int(np.prod(s)) for p, s in params.items() if p[0] != "cond_stage_model")
    encoder = sum(int(np.prod(s)) for p, s in params.items() if p[0] == "cond_stage_model")
    assert unet == sum(int(np.prod(shape)) for shape, _ in compvis_state_dict(**UNET_PRESETS["txt256"]).values())
    # BERT-base shape over 259 byte tokens and 77 positions: (259 + 77) * 768 + final LN 2 * 768
    # + 12 blocks * (2 LN 4*768 + qkv 768*2304+2304 + out 768*768+768 + MLP 2*768*3072+3072+768).
    assert encoder == (259 + 77) * 768 + 2 * 768 + 12 * (4 * 768 + 768 * 2304 + 2304 + 768 * 768 + 768
                                                         + 2 * 768 * 3072 + 3072 + 768)
    assert unet == 406_327_299 and encoder == 85_314_048


# ---- The small preset, run for real -----------------------------------------------------------------

def small_inputs(kind: str, size: int = 32) -> tuple:
    x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    t = jnp.array([10.0, 900.0])
    if kind == "class":
        return x, t, jnp.array([3, 7])
    return x, t, jnp.asarray(ByteTokenizer(16).encode_batch(["a red square", "blue circle"]))


@functools.lru_cache(maxsize=None)
def small_model(kind: str):
    """(model, initial params, step), built once per kind; step(params, cond, null_mask) -> (output,
    vector-Jacobian product with ones) in training mode (CEP on), jitted."""
    model = UNet(**UNET_PRESETS["small"], num_classes=10 if kind == "class" else 0, text_max_length=16,
                 noise=ConditionNoise(cep="uniform", gamma=1.0))
    x, t, cond = small_inputs(kind)
    variables = jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), x, t, cond, NO_NULL)

    @jax.jit
    def step(params, cond, null_mask):
        def forward(params):
            return model.apply({"params": params}, x, t, cond, null_mask, train=True, rngs={"cep": jax.random.key(2)})

        out, vjp = jax.vjp(forward, params)
        return out, vjp(jnp.ones_like(out))[0]

    return model, nn.meta.unbox(variables)["params"], step


def unzeroed(params):
    """The parameters with the zero-initialised layers redrawn, so that every path matters."""
    rng = np.random.default_rng(3)
    return traverse_util.unflatten_dict({
        path: 0.05 * rng.standard_normal(leaf.shape, np.float32) if path[-2] in ZERO_INIT else leaf
        for path, leaf in traverse_util.flatten_dict(params).items()})


@pytest.mark.parametrize("kind", ["class", "text"])
def test_small_forward_shapes_and_zero_output(kind):
    model, params, step = small_model(kind)
    x, t, cond = small_inputs(kind)
    out, _ = step(params, cond, NO_NULL)
    assert out.shape == (2, 32, 32, 3)
    assert not np.asarray(out).any()  # the zero-initialised output convolution
    x64, t, cond = small_inputs(kind, 64)
    assert jax.eval_shape(model.apply, {"params": params}, x64, t, cond, NO_NULL).shape == (2, 64, 64, 3)


@pytest.mark.parametrize("kind", ["class", "text"])
def test_small_zero_initialised_layers(kind):
    _, params, _ = small_model(kind)
    flat = traverse_util.flatten_dict(params)
    zeroed = {path: leaf for path, leaf in flat.items() if path[-2] in ZERO_INIT}
    assert {path[-2] for path in zeroed} == set(ZERO_INIT)
    # The small preset has 7 spatial transformers (input 2, middle 1, output 4) and 11 ResBlocks.
    assert sum(path[-2:] == ("proj_out", "kernel") for path in zeroed) == 7
    assert sum(path[-2:] == ("out_layers_3", "kernel") for path in zeroed) == 11
    assert all(not np.asarray(leaf).any() for leaf in zeroed.values())
    assert all(np.asarray(leaf).any() for path, leaf in flat.items() if path[-1] == "kernel" and path not in zeroed)


@pytest.mark.parametrize("kind", ["class", "text"])
def test_small_gradients_finite(kind):
    _, params, step = small_model(kind)
    out, grads = step(unzeroed(params), small_inputs(kind)[2], jnp.array([False, True]))
    assert np.isfinite(np.asarray(out)).all() and np.asarray(out).any()
    flat = traverse_util.flatten_dict(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in flat.values())
    # The gradient reaches the input convolution and, through cross-attention, the conditioner.
    assert np.asarray(flat[("input_blocks_0_0", "kernel")]).any()
    assert any(np.asarray(g).any() for path, g in flat.items() if path[0] == "cond_stage_model")


@pytest.mark.parametrize("kind", ["class", "text"])
def test_small_null_rows_ignore_condition(kind):
    _, params, step = small_model(kind)
    params, cond = unzeroed(params), small_inputs(kind)[2]
    null_mask = jnp.array([True, False])
    out, _ = step(params, cond, null_mask)
    out_other, _ = step(params, cond[::-1], null_mask)  # both rows get a different condition
    np.testing.assert_allclose(out[0], out_other[0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(out[1], out_other[1])
