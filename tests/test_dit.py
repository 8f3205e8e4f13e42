"""DiT: published sizes and cost, zero output at init, conditioning paths, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.benchmarks.model_bench import run as model_bench
from diffcorrupt.errors import ConfigError
from diffcorrupt.models.dit import fixed_position_count
from diffcorrupt.models.layers import sincos_2d
from diffcorrupt.models.registry import example_inputs, make_model, model_names, parameter_count
from weights import away_from_zero

PUBLISHED = {"DiT-S/2": 33.0e6, "DiT-B/2": 130.5e6, "DiT-L/2": 458.1e6, "DiT-XL/2": 675.1e6}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_paper(name):
    model = make_model(name, input_shape=(32, 32, 4), num_classes=1000, learned_sigma=True)
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *example_inputs(model, (32, 32, 4))))
    count = parameter_count(variables["params"]) + fixed_position_count(model)
    assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.01


def test_dit_xl2_forward_cost_is_close_to_the_published_118_6_gmacs():
    result = model_bench("DiT-XL/2", (32, 32, 4), 1000)
    assert abs(result["gmacs"] - 118.6) / 118.6 < 0.02
    assert result["xla_gflops"] == pytest.approx(2 * result["gmacs"], rel=1e-3)


def _tiny(num_classes=10, learned_sigma=False, shape=(16, 16, 3)):
    model = make_model("DiT-T/4", input_shape=shape, num_classes=num_classes, learned_sigma=learned_sigma)
    variables = model.init({"params": jax.random.key(0)}, *example_inputs(model, shape, batch=2))
    return model, nn.meta.unbox(variables)


def _inputs(shape=(16, 16, 3), batch=4, num_classes=10):
    x = jax.random.normal(jax.random.key(1), (batch, *shape))
    t = jnp.arange(batch) * 7
    cond = jnp.arange(batch) % num_classes
    return x, t, cond, jnp.zeros(batch, bool)


def test_zero_initialised_adaln_and_final_layer_give_zero_output():
    model, variables = _tiny()
    out = model.apply(variables, *_inputs())
    assert out.shape == (4, 16, 16, 3)
    assert float(jnp.abs(out).max()) == 0.0
    params = variables["params"]
    assert not np.any(params["blocks_0"]["adaLN_modulation"]["kernel"])
    assert not np.any(params["final_layer"]["linear"]["kernel"])


def test_learned_sigma_doubles_the_output_channels_and_labels_matter():
    model, variables = _tiny(learned_sigma=True)
    variables = away_from_zero(variables)
    x, t, cond, null = _inputs()
    out = model.apply(variables, x, t, cond, null)
    assert out.shape == (4, 16, 16, 6)
    other = model.apply(variables, x, t, (cond + 1) % 10, null)
    assert not np.allclose(out, other)
    # null rows ignore their label: the last table row stands in for every one of them
    nulls = jnp.ones(4, bool)
    assert np.allclose(model.apply(variables, x, t, cond, nulls), model.apply(variables, x, t, (cond + 3) % 10, nulls))


def test_text_conditioning_runs_and_depends_on_the_caption():
    from diffcorrupt.models.tokenizer import ByteTokenizer

    shape = (16, 16, 3)
    model = make_model("DiT-T/4", input_shape=shape, num_classes=0, text_max_length=16)
    variables = away_from_zero(nn.meta.unbox(model.init({"params": jax.random.key(0)}, *example_inputs(model, shape, batch=2))))
    tokenizer = ByteTokenizer(16)
    x, t, _, null = _inputs(batch=2)
    a = model.apply(variables, x, t, jnp.asarray(tokenizer.encode_batch(["a red circle", "a red circle"])), null)
    b = model.apply(variables, x, t, jnp.asarray(tokenizer.encode_batch(["two blue squares", "a red circle"])), null)
    assert not np.allclose(a[0], b[0])
    assert np.allclose(a[1], b[1], atol=1e-6)


def test_forward_and_backward_jit_compile_with_finite_gradients():
    model, variables = _tiny()
    x, t, cond, null = _inputs()

    @jax.jit
    def loss(params):
        return jnp.mean(model.apply({"params": params}, x, t, cond, null) ** 2 - model.apply({"params": params}, x, t, cond, null))

    grads = jax.grad(loss)(variables["params"])
    flat = jax.tree.leaves(grads)
    assert all(np.isfinite(g).all() for g in flat)
    # at init only the zero-initialised layers receive gradient, and they do
    assert np.any(grads["final_layer"]["linear"]["kernel"])


def test_sincos_table_matches_the_mae_layout():
    table = sincos_2d(8, 3)
    assert table.shape == (9, 8)
    # first half encodes the column (w) coordinate, second half the row (h); sin then cos
    assert np.allclose(table[1, 0], np.sin(1.0)) and np.allclose(table[1, 2], np.cos(1.0))
    assert np.allclose(table[3, 4], np.sin(1.0)) and np.allclose(table[3, 0], 0.0)


def test_registry_names_and_errors():
    names = model_names()
    assert "DiT-XL/2" in names and "DiT-S/8" in names and any(n.startswith("LDM-") for n in names)
    with pytest.raises(ConfigError, match="did you mean 'DiT-XL/"):
        make_model("DiT-XL/3", input_shape=(32, 32, 4), num_classes=10)
    with pytest.raises(ConfigError, match="divisible by 8"):
        make_model("DiT-S/8", input_shape=(28, 28, 1), num_classes=10)
