"""The grain input pipeline: topology independence, workers, iterator state, shuffling, corruption,
augmentation, preprocessing, captions, and the host batch -> global jax.Array step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from PIL import Image

from diffcorrupt.config.schema import base_config
from diffcorrupt.data.corruption.manifest import compute_manifest
from diffcorrupt.data.global_batch import to_global_batch
from diffcorrupt.data.pipeline import corrupted_source, make_dataset, make_iterator
from diffcorrupt.data.preprocess import Preprocess, center_crop_resize, convert_channels
from diffcorrupt.data.sources.base import ClassSource
from diffcorrupt.parallel.mesh import make_mesh

ROW_FIELDS = ("index", "epoch", "label", "clean_label", "corrupted", "flipped")


def small_config(name="synthetic", num_examples=64, batch_size=16, ratio=0.2, mode="fixed", **data):
    config = base_config()
    config.data.name = name
    config.data.num_examples = num_examples if name in ("synthetic", "captioned_shapes") else 0
    config.data.image_size = 8
    config.data.channels = 1
    config.data.num_threads = 2
    config.data.prefetch = 8
    config.data.corruption.ratio = ratio
    config.data.corruption.mode = mode
    config.train.batch_size = batch_size
    for key, value in data.items():
        config.data[key] = value
    return config


def rows(batch) -> list[tuple]:
    """One hashable tuple per element: the conditioning fields plus the image bytes."""
    n = len(batch["index"])
    out = []
    for j in range(n):
        fields = tuple(int(batch[k][j]) for k in ROW_FIELDS)
        out.append(fields + (np.asarray(batch["image"][j]).tobytes(),))
    return out


def assert_batches_equal(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.dtype == y.dtype, key
        assert x.shape == y.shape, key
        if x.dtype.kind in "biuf":
            assert x.tobytes() == y.tobytes(), f"field {key!r} differs"
        else:
            assert np.array_equal(x, y), f"field {key!r} differs"


@pytest.fixture
def open_iterators():
    """Collects iterators and closes those that can be closed (worker processes) at teardown."""
    iterators = []
    yield iterators
    for it in iterators:
        close = getattr(it, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------- topology independence


class _FashionSubset(ClassSource):
    """The first n Fashion-MNIST test images: real (asymmetric) images, so flips show in the pixels."""

    num_classes = 10
    class_names = [str(c) for c in range(10)]

    def __init__(self, n):
        from diffcorrupt.data.sources.fashion_mnist import FashionMnistSource

        full = FashionMnistSource("test")
        self._elements = [full[i] for i in range(n)]

    def __len__(self):
        return len(self._elements)

    def __getitem__(self, index):
        return self._elements[index]


@pytest.mark.parametrize("dataset", ["synthetic", "fashion_subset"])
@pytest.mark.parametrize("mode", ["fixed", "random"])
def test_global_batches_do_not_depend_on_process_count(mode, dataset):
    # 64 examples, global batch 16: 12 steps are three epochs, so 'random' redraws twice.
    config = small_config(num_examples=64, batch_size=16, ratio=0.2, mode=mode)
    source = None
    if dataset == "fashion_subset":
        config.data.image_size = 28
        source = corrupted_source(config, _FashionSubset(64))
    num_steps = 12
    reference = make_dataset(config, process_index=0, process_count=1, source=source)
    expected = [rows(reference[k]) for k in range(num_steps)]
    for step_rows in expected:
        assert len(step_rows) == 16
        assert len(set(step_rows)) == 16
    assert {r[1] for step_rows in expected for r in step_rows} == {0, 1, 2}
    assert any(r[4] for step_rows in expected for r in step_rows), "no corrupted example served"
    if mode == "random":
        per_epoch = {}
        for step_rows in expected:
            for index, epoch, label, *_ in step_rows:
                per_epoch.setdefault(epoch, {})[index] = label
        assert per_epoch[0] != per_epoch[1], "random mode served the same labels in epochs 0 and 1"

    for process_count in (2, 4, 8):
        datasets = [
            make_dataset(config, process_index=p, process_count=process_count, source=source)
            for p in range(process_count)
        ]
        for k in range(num_steps):
            union = []
            for p, ds in enumerate(datasets):
                batch = ds[k]
                assert len(batch["index"]) == 16 // process_count
                union += rows(batch)
            assert union == expected[k], f"global step {k} differs with {process_count} processes"


def test_process_p_holds_the_pth_block_of_the_global_batch():
    # The rows its devices hold of the global array, so every example keeps its row (and noise).
    config = small_config(num_examples=64, batch_size=16)
    whole = make_dataset(config)[1]
    for p in range(4):
        part = make_dataset(config, process_index=p, process_count=4)[1]
        for key in whole:
            assert np.array_equal(part[key], whole[key][4 * p:4 * (p + 1)])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_dataset_from_a_later_batch_serves_the_same_batches(num_workers, open_iterators):
    # A resumed run reads on from the batch of its step, whatever trained the steps before.
    config = small_config(num_examples=64, batch_size=16, ratio=0.25, mode="random", num_workers=num_workers)
    for process_count in (1, 2):
        full = make_dataset(config, process_index=process_count - 1, process_count=process_count)
        later = make_iterator(config, process_index=process_count - 1, process_count=process_count, first_batch=5)
        open_iterators.append(later)
        for k in range(5, 10):  # across the epoch boundary at batch 8
            assert rows(next(later)) == rows(full[k])


def test_batch_not_divisible_by_process_count_is_a_config_error():
    from diffcorrupt.errors import ConfigError

    with pytest.raises(ConfigError, match="divisible"):
        make_dataset(small_config(batch_size=16), process_index=0, process_count=3)


# --------------------------------------------------------------------------- workers and iterator state


def test_workers_yield_the_same_batches_as_the_main_process(open_iterators):
    config = small_config(name="fashion_mnist", batch_size=8, ratio=0.2)
    config.data.image_size = 28
    plain = make_iterator(config)
    open_iterators.append(plain)
    config.data.num_workers = 2
    workers = make_iterator(config)
    open_iterators.append(workers)
    for _ in range(6):
        assert_batches_equal(next(plain), next(workers))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterator_state_restores_the_same_batches(num_workers, open_iterators):
    # 64 examples, batch 16: four steps an epoch; save after 3 (mid-epoch), replay 5 (across epochs).
    config = small_config(num_examples=64, batch_size=16, ratio=0.25, mode="random", num_workers=num_workers)
    first = make_iterator(config)
    open_iterators.append(first)
    for _ in range(3):
        next(first)
    state = first.get_state()
    state = json.loads(json.dumps(state))  # checkpoints store it as JSON
    expected = [next(first) for _ in range(5)]
    assert {int(e) for b in expected for e in b["epoch"]} == {0, 1}

    for advance in (0, 2):  # a fresh iterator, and one already past where the state points
        restored = make_iterator(config)
        open_iterators.append(restored)
        for _ in range(advance):
            next(restored)
        restored.set_state(state)
        for want in expected:
            assert_batches_equal(want, next(restored))


def test_workers_without_absl_flags():
    """make_iterator with worker processes, in a program that never parses absl flags.

    Every diffcorrupt job parses its flags with argparse (diffcorrupt/jobs.py), so this is how
    ``diffcorrupt bench data --num_workers=2`` and any config with data.num_workers > 0 run.
    """
    program = textwrap.dedent(
        """
        from diffcorrupt.config.schema import base_config
        from diffcorrupt.data.pipeline import make_iterator
        config = base_config()
        config.data.name = "synthetic"
        config.data.num_examples = 32
        config.data.image_size = 8
        config.data.num_workers = 2
        config.train.batch_size = 8
        it = make_iterator(config)
        batch = next(it)
        assert batch["image"].shape == (8, 8, 8, 1)
        it.close()
        print("OK")
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0 and "OK" in result.stdout, (
        "make_iterator with num_workers > 0 fails when absl flags are unparsed:\n" + result.stderr[-2000:]
    )


# --------------------------------------------------------------------------- shuffling


def _index_stream(config, num_batches):
    ds = make_dataset(config)
    batches = [ds[k] for k in range(num_batches)]
    return np.concatenate([b["index"] for b in batches]), np.concatenate([b["epoch"] for b in batches])


def test_each_epoch_is_a_permutation_and_epochs_differ():
    config = small_config(num_examples=64, batch_size=16)
    indices, epochs = _index_stream(config, 12)
    per_epoch = indices.reshape(3, 64)
    assert np.array_equal(epochs, np.repeat(np.arange(3), 64))
    for order in per_epoch:
        assert np.array_equal(np.sort(order), np.arange(64))
    assert not np.array_equal(per_epoch[0], per_epoch[1])
    assert not np.array_equal(per_epoch[1], per_epoch[2])
    assert not np.array_equal(per_epoch[0], np.arange(64)), "shuffle on, but epoch 0 is in index order"


def test_epochs_when_the_batch_straddles_the_epoch_boundary():
    # 40 examples, batch 16: batches cross epoch boundaries; the epoch comes from the position.
    config = small_config(num_examples=40, batch_size=16)
    indices, epochs = _index_stream(config, 10)  # 160 positions = 4 epochs
    assert np.array_equal(epochs, np.arange(160) // 40)
    for order in indices.reshape(4, 40):
        assert np.array_equal(np.sort(order), np.arange(40))


def test_shuffle_off_serves_index_order():
    config = small_config(num_examples=32, batch_size=16, shuffle=False)
    indices, epochs = _index_stream(config, 4)
    assert np.array_equal(indices, np.tile(np.arange(32), 2))
    assert np.array_equal(epochs, np.repeat([0, 1], 32))


def test_shuffle_depends_on_the_seed():
    a = small_config(num_examples=64, batch_size=16)
    b = small_config(num_examples=64, batch_size=16)
    b.seed = 1
    assert not np.array_equal(_index_stream(a, 4)[0], _index_stream(b, 4)[0])


def test_finite_num_epochs_ends():
    config = small_config(num_examples=32, batch_size=16, num_epochs=2)
    batches = list(make_iterator(config))
    assert len(batches) == 4


@pytest.mark.parametrize("num_examples", [30, 40, 42])
def test_finite_num_epochs_gives_every_process_the_same_global_steps(num_examples):
    # One epoch of 30 examples at global batch 16 is one full global batch (14 left over). Every
    # process must then serve exactly one batch; a process serving a second one holds part of a
    # global batch that other processes never serve (multi-host training would hang or diverge).
    config = small_config(num_examples=num_examples, batch_size=16, num_epochs=1)
    global_steps = len(make_dataset(config))
    assert global_steps == num_examples // 16
    for process_count in (2, 4, 8):
        datasets = [make_dataset(config, process_index=p, process_count=process_count) for p in range(process_count)]
        lengths = [len(ds) for ds in datasets]
        assert lengths == [global_steps] * process_count, (
            f"{process_count} processes serve {lengths} batches of one {num_examples}-example epoch; "
            f"a single process serves {global_steps}"
        )


# --------------------------------------------------------------------------- corruption as served


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_fixed_labels_agree_with_the_manifest(kind):
    config = small_config(name="fashion_mnist", batch_size=64, ratio=0.3, mode="fixed")
    config.data.corruption.kind = kind
    config.data.image_size = 28
    view = corrupted_source(config)
    summary, corrupted_indices = compute_manifest(view.source, view.corruption)
    corrupted_set = set(corrupted_indices.tolist())
    labels = view.source.labels()
    ds = make_dataset(config)
    served = 0
    for k in (0, 1, 500, 937, 938, 2000):  # epoch 0 and later epochs (937.5 steps an epoch)
        batch = ds[k]
        index = np.asarray(batch["index"])
        assert np.array_equal(batch["clean_label"], labels[index])
        observed, corrupted = view.corruption.observe(index, labels[index])
        assert np.array_equal(batch["label"], observed)
        assert np.array_equal(batch["corrupted"], corrupted)
        assert np.array_equal(batch["corrupted"], [int(i) in corrupted_set for i in index])
        assert np.array_equal(batch["corrupted"], batch["label"] != batch["clean_label"])
        served += int(np.sum(batch["corrupted"]))
    assert served > 0
    assert summary["num_corrupted"] == len(corrupted_set) > 0


def test_fixed_mode_serves_the_same_label_every_epoch():
    config = small_config(num_examples=64, batch_size=16, ratio=0.5, mode="fixed")
    ds = make_dataset(config)
    seen: dict[int, tuple[int, bool]] = {}
    for k in range(12):
        batch = ds[k]
        for index, label, flag in zip(batch["index"], batch["label"], batch["corrupted"]):
            key = int(index)
            if key in seen:
                assert seen[key] == (int(label), bool(flag))
            seen[key] = (int(label), bool(flag))
    assert len(seen) == 64


def test_random_labels_agree_with_observe_for_their_epoch():
    config = small_config(num_examples=64, batch_size=16, ratio=0.4, mode="random")
    view = corrupted_source(config)
    labels = view.source.labels()
    ds = make_dataset(config)
    for k in range(12):
        batch = ds[k]
        (epoch,) = set(np.asarray(batch["epoch"]).tolist())
        observed, corrupted = view.corruption.observe(batch["index"], labels[batch["index"]], epoch)
        assert np.array_equal(batch["label"], observed)
        assert np.array_equal(batch["corrupted"], corrupted)


def test_captions_batch_as_strings_and_swaps_reach_the_batch():
    config = small_config(name="captioned_shapes", num_examples=64, batch_size=16, ratio=0.25)
    config.data.channels = 3
    config.data.corruption.kind = "swap"
    view = corrupted_source(config)
    ds = make_dataset(config)
    total = 0
    for k in range(4):  # one full epoch
        batch = ds[k]
        captions, clean = np.asarray(batch["caption"]), np.asarray(batch["clean_caption"])
        assert captions.dtype.kind == "U" and clean.dtype.kind == "U"
        assert captions.shape == clean.shape == (16,)
        assert all(isinstance(c, str) and c for c in captions.tolist())
        assert np.array_equal(captions != clean, np.asarray(batch["corrupted"]))
        for index, caption, clean_caption, flag in zip(batch["index"], captions, clean, batch["corrupted"]):
            assert clean_caption == view.source.caption(int(index))
            partner = view.corruption.partner_one(int(index), 0)
            assert (partner is not None) == bool(flag)
            if partner is not None:
                assert caption == view.source.caption(partner)
        total += int(np.sum(batch["corrupted"]))
    assert total == view.corruption.num_corrupted == 16


def test_no_corruption_serves_clean_conditions():
    config = small_config(num_examples=64, batch_size=16, ratio=0.0)
    batch = make_dataset(config)[0]
    assert not np.any(batch["corrupted"])
    assert np.array_equal(batch["label"], batch["clean_label"])


# --------------------------------------------------------------------------- flip augmentation


def _fmnist_config(random_flip=True, seed=0):
    config = small_config(name="fashion_mnist", batch_size=32, random_flip=random_flip)
    config.data.image_size = 28
    config.seed = seed
    return config


def test_flip_is_keyed_by_seed_index_epoch_and_mirrors_the_image():
    config = _fmnist_config()
    view = corrupted_source(config)
    preprocess = Preprocess(28, 1, True, config.seed)
    ds = make_dataset(config)
    flips = []
    for k in (0, 1875, 1876):  # epochs 0, 1 (60000 / 32 = 1875 steps an epoch)
        batch = ds[k]
        for j, (index, epoch) in enumerate(zip(batch["index"], batch["epoch"])):
            flipped = preprocess.flips(int(index), int(epoch))
            assert bool(batch["flipped"][j]) == flipped
            raw = view.source[int(index)]["image"].astype(np.float32) / 127.5 - 1.0
            want = raw[:, ::-1] if flipped else raw
            np.testing.assert_array_equal(batch["image"][j], want)
            if flipped:
                assert not np.array_equal(batch["image"][j], raw), "an asymmetric image should change when mirrored"
            flips.append(flipped)
    assert 0 < sum(flips) < len(flips)


def test_flip_changes_with_the_epoch_and_the_seed():
    a = Preprocess(32, 1, True, 0)
    b = Preprocess(32, 1, True, 1)
    indices = range(200)
    epoch0 = [a.flips(i, 0) for i in indices]
    assert epoch0 != [a.flips(i, 1) for i in indices]
    assert epoch0 != [b.flips(i, 0) for i in indices]
    assert 60 < sum(epoch0) < 140


def test_no_random_flip_flips_nothing():
    config = _fmnist_config(random_flip=False)
    view = corrupted_source(config)
    batch = make_dataset(config)[0]
    assert not np.any(batch["flipped"])
    for j, index in enumerate(batch["index"]):
        raw = view.source[int(index)]["image"].astype(np.float32) / 127.5 - 1.0
        np.testing.assert_array_equal(batch["image"][j], raw)
    assert not any(Preprocess(32, 1, False, 0).flips(i, e) for i in range(50) for e in range(3))


# --------------------------------------------------------------------------- preprocessing


def test_preprocess_output_is_float32_in_range_with_the_configured_shape():
    rng = np.random.default_rng(0)
    for channels, shape in ((1, (40, 50, 3)), (3, (28, 28, 1)), (3, (70, 33, 3)), (1, (16, 16, 1))):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        image[0, 0] = 0
        image[-1, -1] = 255
        out = Preprocess(16, channels, True, 0)({"image": image, "label": 0, "index": 3}, 2)
        assert out["image"].dtype == np.float32
        assert out["image"].shape == (16, 16, channels)
        assert out["image"].min() >= -1.0 and out["image"].max() <= 1.0
        assert out["epoch"] == 2 and out["label"] == 0 and out["index"] == 3
    extremes = Preprocess(2, 1, False, 0)({"image": np.array([[[0], [255]], [[255], [0]]], np.uint8), "index": 0}, 0)
    np.testing.assert_array_equal(extremes["image"][..., 0], [[-1.0, 1.0], [1.0, -1.0]])


@pytest.mark.parametrize("shape", [(100, 60, 3), (60, 100, 3), (100, 60, 1), (300, 200, 3), (31, 17, 3)])
def test_center_crop_resize_gives_a_square_of_the_target_size(shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = center_crop_resize(image, 32)
    assert out.dtype == np.uint8
    assert out.shape == (32, 32, shape[2])


def test_center_crop_resize_keeps_a_constant_image_constant():
    for shape in ((100, 60, 3), (300, 200, 1)):
        out = center_crop_resize(np.full(shape, 77, np.uint8), 32)
        assert np.all(out == 77)


def test_center_crop_keeps_the_centre_and_drops_the_long_sides():
    # 60 high, 100 wide: 20 bright columns either side of a dark 60-column centre.
    image = np.zeros((60, 100, 3), np.uint8)
    image[:, :20] = 255
    image[:, 80:] = 255
    out = center_crop_resize(image, 32)
    assert out[:, 2:30].max() < 20, "the centre of a wide image should survive the crop"
    tall = np.transpose(image, (1, 0, 2)).copy()  # 100 high, 60 wide: bands at top and bottom
    out = center_crop_resize(tall, 32)
    assert out[2:30, :].max() < 20


def test_center_crop_resize_at_the_target_size_is_the_identity():
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(center_crop_resize(image, 32), image)


def test_convert_channels():
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (9, 7, 1), dtype=np.uint8)
    rgb = convert_channels(grey, 3)
    assert rgb.shape == (9, 7, 3) and rgb.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(rgb[..., c], grey[..., 0])
    assert np.array_equal(convert_channels(rgb, 1), grey), "grey -> RGB -> grey must round-trip"

    colour = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    luma = convert_channels(colour, 1)
    assert luma.shape == (9, 7, 1) and luma.dtype == np.uint8
    pil = np.asarray(Image.fromarray(colour).convert("L"))
    assert np.abs(luma[..., 0].astype(int) - pil.astype(int)).max() <= 1
    assert convert_channels(colour, 3) is colour


# --------------------------------------------------------------------------- global batches


@pytest.mark.parametrize("mesh_axes", [{"data": -1}, {"data": 2, "fsdp": 4}, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_to_global_batch_shards_numeric_fields_over_the_mesh(mesh_axes):
    assert jax.device_count() == 8
    config = small_config(name="captioned_shapes", num_examples=64, batch_size=16, ratio=0.25)
    config.data.channels = 3
    config.data.corruption.kind = "swap"
    for axis, size in mesh_axes.items():
        config.mesh[axis] = size
    mesh = make_mesh(config.mesh)
    local = make_dataset(config)[0]
    out = to_global_batch(local, mesh)
    assert set(out) == set(local)
    data_size, fsdp_size, _ = mesh.devices.shape
    num_blocks = data_size * fsdp_size
    rows_per_block = 16 // num_blocks
    # The device at mesh position (d, f, t) holds batch block d * fsdp + f (tensor ranks share it).
    block_of = {mesh.devices[d, f, t]: d * fsdp_size + f for d, f, t in np.ndindex(mesh.devices.shape)}
    for key, value in local.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            assert isinstance(out[key], np.ndarray) and not isinstance(out[key], jax.Array)
            assert np.array_equal(out[key], value)
            continue
        array = out[key]
        assert isinstance(array, jax.Array), key
        assert array.shape == value.shape
        assert isinstance(array.sharding, jax.sharding.NamedSharding)
        assert array.sharding.mesh.shape == mesh.shape
        assert tuple(array.sharding.spec)[0] == ("data", "fsdp")
        assert all(s is None for s in tuple(array.sharding.spec)[1:])
        assert {shard.device for shard in array.addressable_shards} == set(jax.devices())
        np.testing.assert_array_equal(np.asarray(array), value)
        for shard in array.addressable_shards:
            block = block_of[shard.device]
            assert shard.data.shape == (rows_per_block,) + value.shape[1:]
            np.testing.assert_array_equal(
                np.asarray(shard.data), value[block * rows_per_block:(block + 1) * rows_per_block]
            )
    assert {"caption", "clean_caption"} <= set(out)
