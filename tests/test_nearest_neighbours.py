"""The streamed, device-sharded exact k-nearest-neighbour search against a brute-force numpy answer.

tests/conftest.py gives JAX 8 simulated CPU devices, so the default mesh (all local devices) splits
every chunk eight ways; the 1-device mesh is built explicitly where the two are compared.
"""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from diffcorrupt.evaluation.memorization import memorization
from diffcorrupt.evaluation.nearest_neighbours import k_nearest


def _brute_force(queries, keys, k):
    """Float64 distances, and indices in (distance, index) order, as k_nearest breaks ties."""
    d = ((queries[:, None, :].astype(np.float64) - keys[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


def _one_device_mesh():
    return Mesh(np.array(jax.devices()[:1]), ("keys",))


@pytest.mark.parametrize("key_chunk, query_block", [(40, 17), (64, 1000), (100000, 3)])
def test_k_nearest_matches_brute_force_on_ragged_shapes(key_chunk, query_block):
    rng = np.random.default_rng(0)
    queries, keys = rng.normal(size=(101, 16)).astype(np.float32), rng.normal(size=(333, 16)).astype(np.float32)
    distances, indices = k_nearest(queries, keys, 7, key_chunk=key_chunk, query_block=query_block)
    expected_d, expected_i = _brute_force(queries, keys, 7)
    assert distances.dtype == np.float32 and indices.dtype == np.int64 and distances.shape == (101, 7)
    np.testing.assert_array_equal(indices, expected_i)
    np.testing.assert_allclose(distances, expected_d, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_k_larger_than_a_devices_share_of_a_chunk():
    # 8 devices, key_chunk 8: each device sees one key per chunk, k=6 comes from many chunks and devices.
    rng = np.random.default_rng(1)
    queries, keys = rng.normal(size=(23, 5)).astype(np.float32), rng.normal(size=(61, 5)).astype(np.float32)
    assert len(jax.devices()) == 8
    for mesh in (None, _one_device_mesh()):
        distances, indices = k_nearest(queries, keys, 6, key_chunk=8, query_block=10, mesh=mesh)
        expected_d, expected_i = _brute_force(queries, keys, 6)
        np.testing.assert_array_equal(indices, expected_i)
        np.testing.assert_allclose(distances, expected_d, rtol=1e-5, atol=1e-5)


def test_k_equal_to_the_number_of_keys_returns_them_all():
    rng = np.random.default_rng(2)
    queries, keys = rng.normal(size=(4, 3)), rng.normal(size=(9, 3))
    _, indices = k_nearest(queries, keys, 9, key_chunk=4)
    np.testing.assert_array_equal(np.sort(indices, axis=1), np.tile(np.arange(9), (4, 1)))
    with pytest.raises(ValueError, match="k must be"):
        k_nearest(queries, keys, 10)


def test_duplicated_keys_are_found_at_distance_zero_lowest_index_first():
    rng = np.random.default_rng(3)
    keys = rng.normal(size=(50, 8)).astype(np.float32)
    keys[37] = keys[5]  # two copies of key 5, in different chunks
    distances, indices = k_nearest(keys[[5, 12]], keys, 2, key_chunk=16)
    np.testing.assert_array_equal(indices[0], [5, 37])
    np.testing.assert_allclose(distances[0], 0.0, atol=1e-5)
    assert indices[1, 0] == 12 and distances[1, 0] < 1e-5


def test_memmap_keys_are_read_in_chunks(tmp_path):
    rng = np.random.default_rng(4)
    keys = np.lib.format.open_memmap(tmp_path / "keys.npy", "w+", np.float32, (1000, 12))
    keys[:] = rng.normal(size=(1000, 12))
    keys.flush()
    queries = rng.normal(size=(50, 12)).astype(np.float32)
    reread = np.load(tmp_path / "keys.npy", mmap_mode="r")
    distances, indices = k_nearest(queries, reread, 5, key_chunk=96, query_block=32)
    expected_d, expected_i = _brute_force(queries, np.asarray(reread), 5)
    np.testing.assert_array_equal(indices, expected_i)
    np.testing.assert_allclose(distances, expected_d, rtol=1e-5, atol=1e-5)


def test_eight_devices_agree_with_one():
    rng = np.random.default_rng(5)
    queries, keys = rng.normal(size=(70, 32)).astype(np.float32), rng.normal(size=(1001, 32)).astype(np.float32)
    eight = Mesh(np.array(jax.devices()), ("keys",))
    assert eight.size == 8
    d8, i8 = k_nearest(queries, keys, 5, key_chunk=128, query_block=32, mesh=eight)
    d1, i1 = k_nearest(queries, keys, 5, key_chunk=128, query_block=32, mesh=_one_device_mesh())
    np.testing.assert_array_equal(i8, i1)
    np.testing.assert_allclose(d8, d1, rtol=1e-6, atol=1e-6)  # the matmul's blocking may round differently


def test_memorization_of_copies_of_training_images():
    rng = np.random.default_rng(6)
    train = rng.normal(size=(500, 64))
    copies = train[rng.choice(500, size=100, replace=False)]
    assert memorization(copies, train, batch_size=96)["memorization_ratio"] == 1.0
    fresh = rng.normal(size=(100, 64))  # random directions in 64-D: far from every training point
    mixed = np.concatenate([copies[:30], fresh[30:]])
    result = memorization(mixed, train, batch_size=96)
    assert result["memorization_ratio"] == pytest.approx(0.3)


def test_memorization_streams_a_memmap_of_training_features(tmp_path):
    rng = np.random.default_rng(7)
    train = np.lib.format.open_memmap(tmp_path / "train.npy", "w+", np.float32, (300, 16))
    train[:] = rng.normal(size=(300, 16)) * 4.0
    train.flush()
    samples = np.concatenate([train[:10] * 0.5, rng.normal(size=(30, 16))])
    from_memmap = memorization(samples, np.load(tmp_path / "train.npy", mmap_mode="r"), batch_size=64)
    in_memory = memorization(samples, np.array(train))
    assert from_memmap["memorization_ratio"] == pytest.approx(10 / 40)
    for key in in_memory:
        assert from_memmap[key] == pytest.approx(in_memory[key], rel=1e-6)
