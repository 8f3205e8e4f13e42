"""KeyedPermutation and the counter-based random numbers it is built on."""

import numpy as np
import pytest

from diffcorrupt.data.keyed_random import derive_key, keyed_bits, keyed_uniform, mix64
from diffcorrupt.data.permutation import KeyedPermutation

SIZES = (1, 2, 3, 5, 16, 17, 1000, 4097)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("key", (0, 7, 2**64 - 1))
def test_is_a_bijection_of_range_n(n, key):
    perm = KeyedPermutation(n, key)
    positions = perm(np.arange(n))
    assert positions.dtype == np.int64
    assert positions.shape == (n,)
    assert positions.min() >= 0 and positions.max() < n
    assert np.array_equal(np.sort(positions), np.arange(n))


@pytest.mark.parametrize("n", SIZES)
def test_inverse_undoes_the_permutation_array_path(n):
    perm = KeyedPermutation(n, 12345)
    indices = np.arange(n)
    assert np.array_equal(perm.inverse(perm(indices)), indices)
    # and the other way round: perm(inverse(p)) == p
    assert np.array_equal(perm(perm.inverse(indices)), indices)
    # the inverse is a bijection too
    assert np.array_equal(np.sort(perm.inverse(indices)), indices)


@pytest.mark.parametrize("n", SIZES)
def test_inverse_undoes_the_permutation_scalar_path(n):
    perm = KeyedPermutation(n, 99)
    for i in range(min(n, 300)):
        position = perm(i)
        assert isinstance(position, int)
        assert 0 <= position < n
        assert perm.inverse(position) == i
        assert perm(perm.inverse(i)) == i


@pytest.mark.parametrize("n", SIZES)
def test_scalar_path_equals_vector_path(n):
    perm = KeyedPermutation(n, 4242)
    indices = np.arange(n) if n <= 1000 else np.random.default_rng(0).choice(n, 500, replace=False)
    forward = perm(indices)
    backward = perm.inverse(indices)
    assert forward.tolist() == [perm(int(i)) for i in indices]
    assert backward.tolist() == [perm.inverse(int(i)) for i in indices]


def test_accepts_numpy_scalars_and_other_integer_dtypes():
    perm = KeyedPermutation(1000, 5)
    expected = perm(np.arange(1000))
    assert perm(np.int64(17)) == expected[17]
    assert np.array_equal(perm(np.arange(1000, dtype=np.int32)), expected)
    assert np.array_equal(perm(np.arange(1000, dtype=np.uint64)), expected)


def test_same_key_same_permutation():
    a = KeyedPermutation(1000, 31337)
    b = KeyedPermutation(1000, 31337)
    assert np.array_equal(a(np.arange(1000)), b(np.arange(1000)))


@pytest.mark.parametrize("n", (16, 17, 1000, 4097))
def test_different_keys_give_different_permutations(n):
    indices = np.arange(n)
    perms = [tuple(KeyedPermutation(n, key)(indices).tolist()) for key in range(8)]
    assert len(set(perms)) == len(perms)
    # not the identity either
    assert all(p != tuple(range(n)) for p in perms)


def test_permutation_is_not_trivially_ordered():
    """A pseudo-random permutation should scatter indices: few fixed points, little correlation."""
    n = 4097
    positions = KeyedPermutation(n, 2024)(np.arange(n))
    assert np.sum(positions == np.arange(n)) < 20
    assert abs(np.corrcoef(positions, np.arange(n))[0, 1]) < 0.1


def test_large_n_works_on_a_few_indices_and_round_trips():
    n = 10**9
    perm = KeyedPermutation(n, 77)
    indices = np.array([0, 1, 2, 12345, 10**8, n // 2, n - 2, n - 1], np.int64)
    positions = perm(indices)
    assert positions.dtype == np.int64
    assert np.all((positions >= 0) & (positions < n))
    assert len(set(positions.tolist())) == len(indices)
    assert np.array_equal(perm.inverse(positions), indices)
    assert positions.tolist() == [perm(int(i)) for i in indices]
    for i in indices.tolist():
        assert perm.inverse(perm(i)) == i


def test_rejects_empty_range():
    with pytest.raises(ValueError):
        KeyedPermutation(0, 1)


# ---------------------------------------------------------------- keyed random numbers


def test_mix64_scalar_equals_vector_and_stays_in_64_bits():
    values = [0, 1, 2, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15]
    vector = mix64(np.array(values, np.uint64))
    scalar = [mix64(v) for v in values]
    assert vector.tolist() == scalar
    assert all(0 <= s < 2**64 for s in scalar)


def test_keyed_bits_scalar_equals_vector():
    counters = np.arange(0, 5000, 7, dtype=np.int64)
    vector = keyed_bits(11, counters, 3)
    assert vector.tolist() == [keyed_bits(11, int(c), 3) for c in counters]


def test_keyed_uniform_scalar_and_vector_paths_are_identical():
    counters = np.arange(2000)
    vector = keyed_uniform(123, counters, 5)
    scalar = [keyed_uniform(123, int(c), 5) for c in counters]
    assert isinstance(scalar[0], float)
    assert vector.dtype == np.float64
    assert vector.tolist() == scalar  # bit-identical, not merely close


def test_keyed_uniform_broadcasts_two_array_counters():
    a = np.arange(6).reshape(2, 3)
    b = np.arange(3)
    out = keyed_uniform(9, a, b)
    assert out.shape == (2, 3)
    assert out[1, 2] == keyed_uniform(9, 5, 2)


def test_keyed_uniform_is_roughly_uniform_on_0_1():
    n = 100_000
    u = keyed_uniform(derive_key(3, "test/uniform"), np.arange(n))
    assert u.min() >= 0.0 and u.max() < 1.0
    # mean of U(0,1) is 1/2 with variance 1/12
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 0.005
    # Kolmogorov-Smirnov statistic against the uniform CDF; 1.95/sqrt(n) is the 0.1% critical value
    s = np.sort(u)
    grid = np.arange(1, n + 1) / n
    d = max(np.max(grid - s), np.max(s - (grid - 1 / n)))
    assert d < 2.5 / np.sqrt(n)
    # and the values are (essentially) all distinct
    assert len(np.unique(u)) > n - 5


def test_keyed_uniform_depends_on_key_and_every_counter():
    base = keyed_uniform(1, np.arange(100), 0)
    assert not np.array_equal(base, keyed_uniform(2, np.arange(100), 0))
    assert not np.array_equal(base, keyed_uniform(1, np.arange(100), 1))
    assert not np.array_equal(base, keyed_uniform(1, np.arange(100)))
    # consecutive counters are uncorrelated
    assert abs(np.corrcoef(base[:-1], base[1:])[0, 1]) < 0.3


def test_derive_key_differs_by_purpose_and_seed_and_is_deterministic():
    purposes = ["label_flip/permutation", "label_flip/new_label", "caption_swap/permutation", "a", "b", ""]
    keys = [derive_key(0, p) for p in purposes]
    assert len(set(keys)) == len(keys)
    assert derive_key(0, "label_flip/permutation") == derive_key(0, "label_flip/permutation")
    assert derive_key(0, "x") != derive_key(1, "x")
    seeds = [derive_key(s, "x") for s in range(100)]
    assert len(set(seeds)) == 100
    assert all(0 <= k < 2**64 for k in keys + seeds)
