"""Control branches beside a frozen base (ControlNet for DiT and the U-Net, T2I-Adapter): an
untrained ControlNet leaves the base exactly as it was, a trained one makes the output depend on
the control image, the T2I-Adapter's layout is diffusers' and a branch that cannot fit is refused."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.errors import ConfigError
from diffcorrupt.models import control_branch
from diffcorrupt.models.hint_embedder import HintEmbedder, halvings
from diffcorrupt.models.dit import DiT
from diffcorrupt.models.registry import example_inputs
from diffcorrupt.models.t2i_adapter import T2IAdapter, pixel_unshuffle
from diffcorrupt.models.unet import UNet
from diffcorrupt.training.pretrained import start_from
from weights import away_from_zero

SIZE, HINT = 8, 32  # 8x8x4 latents of 32x32 images, as the demo's
# Narrow twins of DiT-T/2 (6 blocks, half of them copied) and of LDM-small's three levels: quick to compile.
MODELS = {
    "dit": lambda: DiT(input_size=SIZE, in_channels=4, patch=2, hidden=64, depth=6, num_heads=4, num_classes=10),
    "unet": lambda: UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                         attention_resolutions=(2, 4), num_heads=4, transformer_depth=1, context_dim=32, num_classes=10),
}


def _base(name):
    base = MODELS[name]()
    x, t, cond, null = example_inputs(base, (SIZE, SIZE, 4), 2)
    x = jax.random.normal(jax.random.key(0), x.shape)
    t, cond = jnp.array([3, 700]), jnp.array([1, 7])
    params = nn.meta.unbox(base.init(jax.random.key(1), x, t, cond, null)["params"])
    params = away_from_zero(params, 0.02, seed=2)
    return base, params, (x, t, cond, null)


def _hints(count=2):
    return [jax.random.uniform(jax.random.key(10 + i), (2, HINT, HINT, 1)) for i in range(count)]


def _branch(kind, base, base_params, hint):
    control = control_branch.make_control(kind, base, SIZE)
    inputs = control_branch.example_branch_inputs(control, (SIZE, SIZE, 4), hint.shape[1:], batch=2)
    params = nn.meta.unbox(control.init(jax.random.key(3), *inputs)["params"])
    return control, _copy(params, base_params)


def _copy(params, base_params):
    names = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(base_params)}
    return jax.tree_util.tree_map_with_path(lambda p, leaf: names.get(jax.tree_util.keystr(p), leaf), params)


def _output(base, base_params, inputs, control=None, params=None, hint=None):
    added = None if control is None else control_branch.residuals(control, params, *inputs, hint)
    kwargs = {} if added is None else {"control": added}
    return base.apply({"params": base_params}, *inputs, **kwargs)


@pytest.mark.parametrize("name", ["dit", "unet"])
def test_an_untrained_controlnet_leaves_the_base_exactly_as_it_was_and_a_trained_one_reads_its_control(name):
    base, base_params, inputs = _base(name)
    first, second = _hints()
    control, params = _branch("controlnet", base, base_params, first)
    alone = _output(base, base_params, inputs)
    assert np.array_equal(alone, _output(base, base_params, inputs, control, params, first))
    trained = away_from_zero(params, seed=5)
    a = _output(base, base_params, inputs, control, trained, first)
    b = _output(base, base_params, inputs, control, trained, second)
    assert float(jnp.abs(a - alone).max()) > 1e-3  # the branch reaches the output
    assert float(jnp.abs(a - b).max()) > 1e-3  # and what it adds depends on the control image


def test_the_dit_copy_is_the_first_blocks_of_the_base_and_its_projections_start_at_zero():
    base, base_params, _ = _base("dit")
    control, params = _branch("controlnet", base, base_params, _hints(1)[0])
    assert control.copy_count == 3  # half of the 6 blocks
    copied = {name for name in params if name in base_params}
    assert copied == {"x_embedder", "t_embedder", "y_embedder", "blocks_0", "blocks_1", "blocks_2"}
    assert {name for name in params if name not in base_params} == {
        "hint_embedder", "after_proj_0", "after_proj_1", "after_proj_2"}
    for i in range(3):
        assert not np.any(params[f"after_proj_{i}"]["kernel"])
    assert not np.any(params["hint_embedder"]["conv_out"]["kernel"])


def test_the_unet_copy_feeds_every_skip_and_the_middle_block():
    base, base_params, inputs = _base("unet")
    control, params = _branch("controlnet", base, base_params, _hints(1)[0])
    added = control_branch.residuals(control, params, *inputs, _hints(1)[0])
    # 3 levels of 1 res block, 2 downsamples: the first conv, 3 blocks and 2 downsamples
    assert len(added.skips) == 6 and added.middle.shape == (2, 2, 2, 64)
    assert [r.shape[1] for r in added.skips] == [8, 8, 4, 4, 2, 2]


def test_t2i_adapter_gives_one_feature_map_per_level_and_moves_the_output():
    base, base_params, inputs = _base("unet")
    first, second = _hints()
    adapter, params = _branch("t2i-adapter", base, base_params, first)
    assert isinstance(adapter, T2IAdapter) and adapter.channels == (32, 64, 64)
    levels = control_branch.residuals(adapter, params, *inputs, first).levels
    assert [level.shape for level in levels] == [(2, 8, 8, 32), (2, 4, 4, 64), (2, 2, 2, 64)]
    alone = _output(base, base_params, inputs)
    a = _output(base, base_params, inputs, adapter, params, first)
    b = _output(base, base_params, inputs, adapter, params, second)
    assert float(jnp.abs(a - alone).max()) > 1e-3 and float(jnp.abs(a - b).max()) > 1e-3
    assert "body_1" in params and "in_conv" in params["body_1"] and "in_conv" not in params["body_2"]


def test_pixel_unshuffle_is_pytorchs():
    x = np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3)  # NHWC
    out = np.asarray(pixel_unshuffle(jnp.asarray(x), 2))
    # PyTorch: out[n, c * 4 + i * 2 + j, h, w] = in[n, c, 2h + i, 2w + j]
    for c in range(3):
        for i in range(2):
            for j in range(2):
                np.testing.assert_array_equal(out[..., c * 4 + i * 2 + j], x[:, i::2, j::2, c])


def test_hint_embedder_halves_to_the_model_size_and_refuses_sizes_that_do_not_halve():
    embedder = HintEmbedder(64, 4)
    params = nn.meta.unbox(embedder.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"])
    assert [params[f"blocks_{i}"]["kernel"].shape[-1] for i in range(6)] == [16, 32, 32, 96, 96, 256]
    assert embedder.apply({"params": params}, jnp.ones((1, 32, 32, 3))).shape == (1, 4, 4, 64)
    assert halvings(32, 32) == 0 and halvings(64, 2) == 5
    with pytest.raises(ConfigError, match="24x24 do not reduce to the model's 8x8"):
        halvings(24, 8)


def test_a_branch_that_does_not_fit_its_base_is_refused_in_one_sentence():
    dit, unet = MODELS["dit"](), MODELS["unet"]()
    with pytest.raises(ConfigError, match="DiT has none; set personalize.method to 'controlnet'"):
        control_branch.make_control("t2i-adapter", dit, SIZE)
    with pytest.raises(ConfigError, match="'personalize.copies' is 7 but the DiT has 6 blocks"):
        control_branch.make_control("controlnet", dit, SIZE, copies=7)
    with pytest.raises(ConfigError, match="set it to 0 for a U-Net"):
        control_branch.make_control("controlnet", unet, SIZE, copies=2)


def test_a_controlnet_starts_from_its_base_in_the_train_state():
    """``start_from`` as the train job calls it: copies take the base's weights, the rest keep theirs."""
    import optax

    from diffcorrupt.parallel.mesh import make_mesh
    from diffcorrupt.config.schema import base_config
    from diffcorrupt.parallel.sharding import rules_from_config
    from diffcorrupt.training.state import create_state

    base, base_params, _ = _base("dit")
    control = control_branch.make_control("controlnet", base, SIZE, copies=2)
    config = base_config()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
    mesh = make_mesh(config.mesh, jax.devices()[:1])
    state, _ = create_state(control, optax.adam(1e-3), (SIZE, SIZE, 4), 0, mesh, rules_from_config(config.mesh.rules),
                            (HINT, HINT, 1))
    state = start_from(state, base_params, own=lambda name: True)
    np.testing.assert_array_equal(state.params["blocks_1"]["mlp"]["fc1"]["kernel"], base_params["blocks_1"]["mlp"]["fc1"]["kernel"])
    np.testing.assert_array_equal(state.ema_params["x_embedder"]["kernel"], base_params["x_embedder"]["kernel"])
    assert "blocks_2" not in state.params and not np.any(state.params["after_proj_1"]["kernel"])
