"""CEP and the condition baselines: the stated distributions, training only, fresh per step and example."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.config.schema import base_config
from diffcorrupt.models.conditioning import ClassEmbedder, ConditionNoise, cep_delta

D = 512


def _embedder(noise, num_classes=10, features=D):
    module = ClassEmbedder(num_classes, features, noise)
    variables = nn.meta.unbox(module.init({"params": jax.random.key(0)}, jnp.zeros(2, jnp.int32), jnp.zeros(2, bool)))
    return module, variables


def _delta(noise, rng=1, labels=None, null=None, train=True):
    module, variables = _embedder(noise)
    labels = jnp.arange(64) % 10 if labels is None else labels
    null = jnp.zeros(len(labels), bool) if null is None else null
    clean = module.apply(variables, labels, null, train=False)
    noisy = module.apply(variables, labels, null, train=train,
                         rngs={"cep": jax.random.key(rng), "dropout": jax.random.key(rng + 1)})
    return np.asarray(noisy - clean)


@pytest.mark.parametrize("gamma", [0.1, 1.0, 5.0])
def test_uniform_cep_is_bounded_by_gamma_over_sqrt_d_with_the_uniform_variance(gamma):
    delta = _delta(ConditionNoise(cep="uniform", gamma=gamma))
    bound = gamma / math.sqrt(D)
    assert np.abs(delta).max() <= bound * (1 + 1e-6)
    assert np.abs(delta).max() > 0.95 * bound
    assert abs(delta.mean()) < 0.02 * bound
    assert delta.var() == pytest.approx(bound**2 / 3, rel=0.03)


@pytest.mark.parametrize("reading,std", [("std", 1 / math.sqrt(D)), ("variance", math.sqrt(1 / math.sqrt(D)))])
def test_gaussian_cep_has_the_stated_standard_deviation(reading, std):
    delta = _delta(ConditionNoise(cep="gaussian", gamma=1.0, gaussian_reading=reading))
    assert delta.std() == pytest.approx(std, rel=0.03)
    assert abs(delta.mean()) < 0.02 * std
    kurtosis = ((delta - delta.mean()) ** 4).mean() / delta.var() ** 2
    assert kurtosis == pytest.approx(3.0, abs=0.15)


def test_dims_all_scales_by_every_element():
    noise = ConditionNoise(cep="uniform", gamma=1.0, dims="all")
    delta = cep_delta(jax.random.key(0), (4, 77, 768), noise)
    assert float(jnp.abs(delta).max()) <= 1 / math.sqrt(77 * 768) * (1 + 1e-6)
    assert noise.scale((4, 77, 768)) == pytest.approx(1 / math.sqrt(77 * 768))
    assert ConditionNoise(cep="uniform").scale((4, 77, 768)) == pytest.approx(1 / math.sqrt(768))


def test_cep_is_absent_at_sampling():
    delta = _delta(ConditionNoise(cep="gaussian", gamma=5.0), train=False)
    assert not delta.any()


def test_cep_differs_between_steps_and_between_examples():
    noise = ConditionNoise(cep="uniform", gamma=1.0)
    labels = jnp.zeros(8, jnp.int32)  # same class: any difference is the noise's
    step1, step2 = _delta(noise, rng=1, labels=labels), _delta(noise, rng=2, labels=labels)
    assert not np.allclose(step1, step2)
    assert len({row.tobytes() for row in step1}) == 8
    assert np.array_equal(step1, _delta(noise, rng=1, labels=labels))  # a pure function of the key


@pytest.mark.parametrize("perturb_null", [False, True])
def test_the_null_embedding_is_perturbed_only_when_asked(perturb_null):
    null = jnp.array([True, False] * 4)
    delta = _delta(ConditionNoise(cep="uniform", perturb_null=perturb_null), labels=jnp.arange(8) % 10, null=null)
    assert delta[1::2].any(axis=1).all()
    assert delta[0::2].any(axis=1).all() == perturb_null


def test_cep_off_changes_nothing_in_training():
    assert not _delta(ConditionNoise()).any()


def test_condition_dropout_baseline_zeroes_a_share_and_rescales_the_rest():
    module, variables = _embedder(ConditionNoise(dropout=0.5))
    labels, null = jnp.arange(64) % 10, jnp.zeros(64, bool)
    clean = np.asarray(module.apply(variables, labels, null))
    dropped = np.asarray(module.apply(variables, labels, null, train=True, rngs={"dropout": jax.random.key(3)}))
    zero = dropped == 0
    assert 0.45 < zero.mean() < 0.55
    assert np.allclose(dropped[~zero], 2 * clean[~zero])


def test_label_smoothing_baseline_mixes_in_the_mean_class_embedding():
    module, variables = _embedder(ConditionNoise(label_smoothing=0.1))
    table = np.asarray(variables["params"]["table"]["embedding"])
    labels, null = jnp.array([3, 4]), jnp.array([False, True])
    smoothed = np.asarray(module.apply(variables, labels, null, train=True))
    assert np.allclose(smoothed[0], 0.9 * table[3] + 0.1 * table[:10].mean(axis=0), atol=1e-6)
    assert np.allclose(smoothed[1], table[10])  # the null row is left alone


def test_condition_noise_reads_the_config():
    config = base_config()
    config.model.cep.kind = "gaussian"
    config.model.cep.gamma = 0.5
    config.model.cep.gaussian_reading = "variance"
    config.model.cep.perturb_null = True
    config.model.label_smoothing = 0.1
    noise = ConditionNoise.from_config(config.model)
    assert noise == ConditionNoise(cep="gaussian", gamma=0.5, gaussian_reading="variance", dims="last",
                                   perturb_null=True, dropout=0.0, label_smoothing=0.1)
