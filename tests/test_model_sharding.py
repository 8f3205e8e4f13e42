"""Models under an 8-device mesh, alone and with a control branch beside them: parameters created
sharded, results equal to one device's."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.config.schema import base_config
from diffcorrupt.models import control_branch
from diffcorrupt.models.dit import DiT
from diffcorrupt.models.registry import example_inputs
from diffcorrupt.models.unet import UNet
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.parallel.sharding import DEFAULT_RULES, gathered_for_compute, init_sharded

SHAPE = (16, 16, 4)
LAYOUTS = {
    "fsdp": dict(data=1, fsdp=8, tensor=1),
    "data_fsdp": dict(data=2, fsdp=4, tensor=1),
    "fsdp_tensor": dict(data=1, fsdp=2, tensor=4),
    "data_fsdp_tensor": dict(data=2, fsdp=2, tensor=2),
}


def _mesh(layout):
    config = base_config()
    config.mesh.update(layout)
    return make_mesh(config.mesh)


def _shifted(variables):
    """Moves every parameter off its initial value, so that zero-initialised layers do not hide errors."""
    return jax.tree.map(lambda x: x + 0.02 * jnp.cos(jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)), variables)


def _small(family):
    """Two-block models whose widths and head counts the 8-way mesh axes divide."""
    if family == "dit":
        return DiT(input_size=16, in_channels=4, patch=4, hidden=64, depth=2, num_heads=4, num_classes=10)
    return UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(2,), num_heads=4, transformer_depth=1, context_dim=32, num_classes=10)


HINT = jnp.linspace(0, 1, 8 * 32 * 32).reshape(8, 32, 32, 1)  # control images at twice the input size


def _model(family):
    """(init() -> variables, apply(params, x, t, y, null) -> output) of a small model, or of a small
    base with a control branch beside it (``<base>+<method>``), whose parameters are both trained."""
    name, _, method = family.partition("+")
    model = _small(name)
    inputs = example_inputs(model, SHAPE, batch=8)
    if not method:
        return (lambda: model.init({"params": jax.random.key(0)}, *inputs),
                lambda params, *args: model.apply({"params": params}, *args))
    branch = control_branch.make_control(method, model, SHAPE[0])
    branch_inputs = control_branch.example_branch_inputs(branch, SHAPE, HINT.shape[1:], batch=8)

    def init():
        return {"params": {"base": model.init({"params": jax.random.key(0)}, *inputs)["params"],
                           "branch": branch.init({"params": jax.random.key(1)}, *branch_inputs)["params"]}}

    def apply(params, x, t, y, null):
        added = control_branch.residuals(branch, params["branch"], x, t, y, null, HINT)
        return model.apply({"params": params["base"]}, x, t, y, null, control=added)

    return init, apply


# The U-Net compiles slowly on CPU: CI checks it on the pure fsdp layout and on all three axes at once,
# the two-axis layouts (which those two cover between them) run with -m long.
TWO_AXIS = ("data_fsdp", "fsdp_tensor")


@pytest.mark.parametrize("family, layout_name", [
    *(pytest.param(family, layout, marks=[pytest.mark.long] if family == "unet" and layout in TWO_AXIS else [])
      for family in ("dit", "unet") for layout in LAYOUTS),
    *((family, layout) for family in ("dit+controlnet", "unet+controlnet")
      for layout in ("data_fsdp_tensor",)),
])
def test_sharded_forward_and_backward_equal_the_single_device_ones(family, layout_name):
    layout = LAYOUTS[layout_name]
    mesh = _mesh(layout)
    init, apply = _model(family)
    variables, shardings = init_sharded(init, mesh)
    variables = jax.jit(_shifted, out_shardings=shardings)(variables)

    specs = [s.spec for s in jax.tree.leaves(shardings)]
    if layout["fsdp"] == 8:
        assert any("fsdp" in str(spec) for spec in specs), "no parameter is sharded over fsdp"
    leaf = jax.tree.leaves(variables)[0]
    assert len(leaf.sharding.device_set) == 8

    x = jax.random.normal(jax.random.key(1), (8, *SHAPE))
    t, y, null = jnp.arange(8) * 100, jnp.arange(8) % 10, jnp.array([False] * 6 + [True] * 2)

    def loss(params, x, shardings=None):
        if shardings is not None:  # as the train step and the sampler apply a model
            params = gathered_for_compute(params, shardings)
        out = apply(params, x, t, y, null)
        return jnp.mean(out**2), out

    host = jax.device_get(variables)
    (ref_loss, ref_out), ref_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(host["params"], x)
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        sharded_loss = functools.partial(loss, shardings=shardings["params"])
        (out_loss, out), grad = jax.jit(jax.value_and_grad(sharded_loss, has_aux=True))(variables["params"], x)
    scale = float(jnp.abs(ref_out).max())
    assert scale > 0
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=2e-5 * scale, rtol=2e-4)
    np.testing.assert_allclose(float(out_loss), float(ref_loss), rtol=2e-4)
    # Some gradients are zero in exact arithmetic (a bias right before a normalisation) and float
    # noise in practice, so the tolerance is set by the largest gradient of the model.
    grad_scale = max(float(np.abs(b).max()) for b in jax.tree.leaves(ref_grad))
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * grad_scale, rtol=2e-3)


def test_rules_from_the_config_override_the_default_table():
    from diffcorrupt.errors import ConfigError
    from diffcorrupt.parallel.sharding import rules_from_config

    rules = dict(rules_from_config("mlp=,heads=,batch=data+fsdp"))
    assert rules["mlp"] is None and rules["heads"] is None and rules["batch"] == ("data", "fsdp")
    assert rules["embed"] == dict(DEFAULT_RULES)["embed"]
    assert rules_from_config("") == tuple(DEFAULT_RULES)
    with pytest.raises(ConfigError, match="mesh.rules"):
        rules_from_config("embed=fsdpp")


def test_several_slices_multiply_the_per_slice_shape_and_a_mismatch_is_one_sentence():
    from diffcorrupt.errors import ConfigError
    from diffcorrupt.parallel.mesh import mesh_shape

    config = base_config()
    config.mesh.dcn_data = 2
    config.mesh.fsdp = 2
    assert mesh_shape(config.mesh, 8) == {"data": 4, "fsdp": 2, "tensor": 1}
    # one process on CPU devices without slice indices: two slices cannot be formed
    with pytest.raises(ConfigError, match="slices"):
        make_mesh(config.mesh)


class _Initialisers(nn.Module):
    """One layer per initialiser the models use, at their sizes: normal (erfinv), truncated normal,
    uniform and zeros."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(192, kernel_init=nn.initializers.normal(0.02))(x)
        x = nn.Dense(192, kernel_init=nn.initializers.xavier_uniform())(x)
        x = nn.Dense(768, kernel_init=nn.initializers.lecun_normal(), bias_init=nn.initializers.zeros)(x)
        x = nn.Embed(1001, 192)(jnp.zeros(x.shape[:1], jnp.int32)) + x[:, :192]
        return nn.Conv(64, (3, 3))(x.reshape(-1, 8, 8, 3))


@pytest.mark.parametrize("layout_name", ["fsdp", "data_fsdp_tensor"])
def test_initialisation_compiled_cheaply_gives_the_default_compilations_bits(layout_name, monkeypatch):
    from diffcorrupt.parallel import sharding

    module = _Initialisers()
    init = functools.partial(module.init, jax.random.key(7), jnp.zeros((2, 48)))
    cheap, _ = init_sharded(init, _mesh(LAYOUTS[layout_name]))
    monkeypatch.setattr(sharding, "INIT_COMPILER_OPTIONS", None)
    default, _ = init_sharded(init, _mesh(LAYOUTS[layout_name]))
    for a, b in zip(jax.tree.leaves(cheap), jax.tree.leaves(default), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
