"""Checkpoints: bitwise round trips (sync and async, typed PRNG keys), resuming on fewer devices, the
keep policy, falling back past a corrupt checkpoint or one without its config, the config
compatibility check, and storage failures as one-sentence errors."""

from __future__ import annotations

import asyncio
import errno
import logging
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from orbax.checkpoint._src.metadata.checkpoint import _MetadataStoreImpl  # where a failed metadata write starts
from orbax.checkpoint._src.futures import future as orbax_future  # the threads orbax writes in

from diffcorrupt.config.schema import base_config
from diffcorrupt.errors import ConfigError, UserError
from diffcorrupt.training.checkpoints import Checkpointer, check_compatible, storage_error

# A failed tensorstore read (the corrupt-checkpoint test) may later call back into orbax's closed
# event loop from a tensorstore thread; Python reports it as unraisable in whichever test runs then.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _mesh(num_devices: int) -> Mesh:
    return Mesh(np.array(jax.devices()[:num_devices]), ("d",))


def _state(mesh: Mesh) -> dict:
    """A train-state-like pytree: sharded and replicated arrays, a step, and a typed PRNG key."""
    rows = NamedSharding(mesh, P("d"))
    replicated = NamedSharding(mesh, P())
    return {
        "params": {
            "w": jax.device_put(jax.random.normal(jax.random.key(1), (16, 8)), rows),
            "b": jax.device_put(jnp.arange(8, dtype=jnp.bfloat16), replicated),
        },
        "opt": {"mu": jax.device_put(jnp.full((16, 8), 0.5), rows), "count": jax.device_put(jnp.int32(3), replicated)},
        "step": jax.device_put(jnp.int32(7), replicated),
        "rng": jax.device_put(jax.random.key(42), replicated),
    }


def _abstract(state: dict, mesh: Mesh) -> dict:
    """The restore target: shapes, dtypes and the shardings wanted on ``mesh`` (rows split if possible)."""
    def leaf(x):
        spec = P("d") if x.ndim and x.shape[0] % mesh.size == 0 and x.shape[0] > 8 else P()
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))
    return jax.tree.map(leaf, state)


def _bits(x: jax.Array) -> np.ndarray:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.atleast_1d(np.asarray(x)).view(np.uint8)


def _assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(_bits(x), _bits(y))


def _data_config():
    config = base_config()
    config.data.name = "synthetic"
    config.data.num_examples = 64
    config.data.image_size = 8
    config.data.num_threads = 2
    config.data.prefetch = 4
    config.train.batch_size = 8
    return config


@pytest.fixture(scope="module")
def config():
    return _data_config()


@pytest.mark.parametrize("async_save", [True, False])
def test_round_trip_is_bitwise_with_typed_key(tmp_path, config, async_save):
    mesh = _mesh(8)
    state = _state(mesh)
    ckpt = Checkpointer(tmp_path, every_steps=5, keep=3, async_save=async_save)
    assert not ckpt.should_save(3) and ckpt.should_save(5)
    assert not ckpt.save(3, state, config)
    assert ckpt.save(5, state, config)
    ckpt.wait()
    assert not ckpt.save(5, state, config, force=True)  # a final save right after a periodic one
    assert ckpt.save(6, state, config, force=True)
    ckpt.close()

    resumed = Checkpointer(tmp_path, every_steps=5, keep=3)
    assert resumed.latest_step() == 6 and resumed.all_steps() == [5, 6]
    restored, step = resumed.restore(_abstract(state, mesh))
    assert step == 6
    _assert_bitwise_equal(restored, state)
    assert jax.dtypes.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
    assert resumed.saved_config() == config.to_dict()
    resumed.close()


def test_no_checkpoint_restores_to_none(tmp_path):
    ckpt = Checkpointer(tmp_path, every_steps=1, keep=1)
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    assert ckpt.restore(_abstract(_state(_mesh(8)), _mesh(8))) is None
    with pytest.raises(UserError, match="no checkpoint"):
        ckpt.saved_config()
    ckpt.close()


@pytest.mark.parametrize("num_devices", [4, 1])
def test_restore_onto_fewer_devices(tmp_path, config, num_devices):
    state = _state(_mesh(8))
    ckpt = Checkpointer(tmp_path, every_steps=1, keep=1)
    ckpt.save(1, state, config)
    ckpt.close()

    target = _abstract(state, _mesh(num_devices))
    restored, _ = Checkpointer(tmp_path, every_steps=1, keep=1).restore(target)
    _assert_bitwise_equal(restored, state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
        assert got.sharding == want.sharding
        assert len(got.sharding.device_set) == num_devices
    assert restored["params"]["w"].sharding.spec == P("d")


def test_keep_policy(tmp_path, config):
    state = {"x": jnp.zeros(4)}
    ckpt = Checkpointer(tmp_path, every_steps=1, keep=2, keep_every=4)
    for step in range(1, 11):
        assert ckpt.save(step, state, config)
    ckpt.close()
    assert ckpt.all_steps() == [4, 8, 9, 10]
    on_disk = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert on_disk == [4, 8, 9, 10]


def _two_checkpoints(tmp_path, config) -> tuple[Mesh, dict]:
    """Steps 1 and 2 saved on 8 devices; (the mesh, the state of step 1)."""
    mesh = _mesh(8)
    old, new = _state(mesh), jax.tree.map(lambda x: x, _state(mesh))
    new["step"] = jnp.int32(8)
    ckpt = Checkpointer(tmp_path, every_steps=1, keep=3)
    ckpt.save(1, old, config)
    ckpt.save(2, new, config)
    ckpt.close()
    return mesh, old


def test_a_checkpoint_without_its_config_is_skipped_and_set_aside(tmp_path, config):
    # Resuming from it would skip the check that the run is still the same run.
    mesh, old = _two_checkpoints(tmp_path, config)
    shutil.rmtree(tmp_path / "checkpoints" / "2" / "config")
    restored, step = Checkpointer(tmp_path, every_steps=1, keep=3).restore(_abstract(old, mesh))
    assert step == 1
    _assert_bitwise_equal(restored, old)
    assert [p.name.split("-")[0] for p in (tmp_path / "checkpoints_unreadable").iterdir()] == ["2"]


def test_corrupt_newest_checkpoint_falls_back(tmp_path, config, caplog):
    mesh, old = _two_checkpoints(tmp_path, config)
    newest = tmp_path / "checkpoints" / "2" / "state"
    for blob in newest.rglob("*"):
        if blob.is_file() and blob.parent.name == "d":
            blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])  # a write cut off half-way

    with caplog.at_level(logging.WARNING):
        restored, step = Checkpointer(tmp_path, every_steps=1, keep=3).restore(_abstract(old, mesh))
    assert step == 1
    _assert_bitwise_equal(restored, old)
    assert any("step 2" in r.getMessage() and "does not read back" in r.getMessage() for r in caplog.records)
    # nothing is deleted: the unreadable step is set aside, out of the way of the resumed run
    aside = list((tmp_path / "checkpoints_unreadable").iterdir())
    assert [p.name.split("-")[0] for p in aside] == ["2"] and (aside[0] / "state").is_dir()
    assert not newest.exists()
    aside[0].rename(tmp_path / "checkpoints" / "2")  # put it back for the cases below

    (tmp_path / "checkpoints" / "2" / "config" / "metadata").write_text("{cut off")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert Checkpointer(tmp_path, every_steps=1, keep=3).saved_config(2) == config.to_dict()
    assert any("step 2" in r.getMessage() for r in caplog.records)

    (tmp_path / "checkpoints" / "1" / "state" / "_METADATA").write_text("not json")
    with pytest.raises(UserError, match="none of the 2 checkpoints") as raised:
        Checkpointer(tmp_path, every_steps=1, keep=3).restore(_abstract(old, mesh))
    assert "\n" not in str(raised.value)


def test_check_compatible(config):
    saved = config.to_dict()
    compatible = _data_config()
    compatible.train.num_steps = 10
    compatible.mesh.data, compatible.mesh.fsdp = 2, 4
    compatible.data.data_dir = "/elsewhere"
    compatible.data.num_workers = 3
    compatible.checkpoint.keep = 9
    compatible.sample.steps = 10
    check_compatible(saved, compatible)

    for key, value in [("model.name", "DiT-B/4"), ("data.corruption.ratio", 0.4), ("seed", 3), ("train.batch_size", 16),
                       ("train.lr", 3e-4), ("diffusion.schedule", "cosine"), ("data.shuffle", False)]:
        changed = _data_config()
        group, _, leaf = key.rpartition(".")
        (changed[group] if group else changed)[leaf] = value
        with pytest.raises(ConfigError, match=f"'{key}' is {value!r} but the checkpoint was saved with") as raised:
            check_compatible(saved, changed)
        assert "--allow_config_change" in str(raised.value)
        check_compatible(saved, changed, allow=True)


def test_unwritable_workdir_is_one_sentence(tmp_path):
    # Tests run as root, for whom chmod does not stop writes; a path under a regular file cannot
    # be created by anyone, which takes the same route (mkdir fails with an OSError).
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write checkpoints to") as raised:
        Checkpointer(blocker / "run", every_steps=1, keep=1)
    assert "\n" not in str(raised.value) and "Not a directory" in str(raised.value)
    with pytest.raises(ConfigError, match="checkpoint.keep=0"):
        Checkpointer(tmp_path, every_steps=1, keep=0)


class _DiskFull:
    """An orbax commit future that fails the way a full disk does, in the background thread."""

    def result(self, timeout=None):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_async_save_surfaces_from_wait(tmp_path, config, monkeypatch):
    state = {"x": jnp.arange(4.0)}
    ckpt = Checkpointer(tmp_path, every_steps=1, keep=1, async_save=True)
    ckpt.save(1, state, config)
    ckpt.wait()

    original = ocp.StandardCheckpointHandler.async_save

    async def failing(self, *args, **kwargs):
        return list(await original(self, *args, **kwargs) or []) + [_DiskFull()]

    monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", failing)
    assert ckpt.save(2, state, config)  # returns at once; the write fails behind it
    intact = "step 2 .*No space left on device.*earlier checkpoints there are intact"
    with pytest.raises(UserError, match=intact) as raised:
        ckpt.wait()
    assert "\n" not in str(raised.value)
    monkeypatch.undo()
    ckpt.close()
    assert ckpt.all_steps() == [1]
    target = {"x": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=NamedSharding(_mesh(1), P()))}
    restored, step = Checkpointer(tmp_path, every_steps=1, keep=1).restore(target)
    assert step == 1 and np.array_equal(restored["x"], state["x"])


def test_a_failed_save_is_raised_once_orbax_s_other_writers_have_ended(tmp_path, config, monkeypatch, caplog):
    """orbax stops waiting at the first write that fails while its other writers go on and fail a moment later:
    the run's sentence waits for them, so that what they log comes before it rather than after."""
    state = {"x": jnp.arange(4.0)}
    ckpt = Checkpointer(tmp_path, every_steps=1, keep=1, async_save=True)
    original = ocp.StandardCheckpointHandler.async_save

    async def slow_writer():
        await asyncio.sleep(1.0)
        raise OSError(errno.ENOSPC, "No space left on device", "the slower writer's file")

    async def failing(self, *args, **kwargs):
        slower = orbax_future.CommitFuture(slow_writer(), name="slower_writer")
        return list(await original(self, *args, **kwargs) or []) + [_DiskFull(), slower]

    monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", failing)
    assert ckpt.save(1, state, config)
    with caplog.at_level(logging.ERROR), pytest.raises(UserError, match="step 1 .*No space left on device"):
        ckpt.wait()
    assert any("the slower writer's file" in record.getMessage() for record in caplog.records)
    monkeypatch.undo()
    ckpt.close()


def _read_only_from(step: int):
    """orbax's metadata writer, failing for ``step``'s files as a disk turned read-only just after
    that save made its temporary directory does: in orbax's metadata thread, which fails both its
    finalize thread and its save thread."""
    original_write, original_update = _MetadataStoreImpl.write, _MetadataStoreImpl.update

    def refuse(path):
        if f"{step}.orbax-checkpoint-tmp" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    def write(self, file_path, metadata):
        refuse(file_path)
        return original_write(self, file_path, metadata)

    def update(self, file_path, **kwargs):
        refuse(file_path)
        return original_update(self, file_path, **kwargs)

    return write, update


@pytest.mark.parametrize("wait_first", [True, False])
def test_a_failed_save_is_one_sentence_once_however_orbax_raises_it_again(tmp_path, config, monkeypatch,
                                                                           wait_first):
    state = {"x": jnp.arange(4.0)}
    ckpt = Checkpointer(tmp_path, every_steps=1, keep=5, async_save=True)
    ckpt.save(1, state, config)
    ckpt.wait()
    write, update = _read_only_from(2)
    monkeypatch.setattr(_MetadataStoreImpl, "write", write)
    monkeypatch.setattr(_MetadataStoreImpl, "update", update)
    assert ckpt.save(2, state, config)
    failed = r"step 2 .*\(Read-only file system\).*earlier checkpoints there are intact"
    if wait_first:  # as the training loop meets it: the next save's wait, then close on the way out
        with pytest.raises(UserError, match=failed):
            ckpt.wait()
        ckpt.close()  # the save thread's copy of the same failure is not raised again
    else:
        with pytest.raises(UserError, match=failed):
            ckpt.close()
    monkeypatch.undo()
    assert Checkpointer(tmp_path, every_steps=1, keep=5).all_steps() == [1]


def test_storage_errors_translate_and_bugs_do_not():
    directory = pathlib.Path("/ckpt")
    tensorstore = ValueError(
        'RESOURCE_EXHAUSTED: Error writing "w/0.0" in OCDBT database: Failed to write 1282007 bytes to file 8: '
        "No space left on device [os_error_code='28']"
    )
    error = storage_error(tensorstore, 12, directory)
    assert isinstance(error, UserError)
    assert "step 12" in str(error) and "(No space left on device)" in str(error)
    assert "(Read-only file system)" in str(storage_error(OSError(errno.EROFS, "Read-only file system"), 3, directory))
    assert storage_error(TypeError("unsupported leaf type"), 3, directory) is None


def test_a_key_added_to_the_schema_since_the_save_counts_as_its_default(config):
    saved = config.to_dict()
    del saved["train"]["grad_clip"]  # as if saved before the key existed
    check_compatible(saved, config)  # the new config keeps the default: fine
    config.train.grad_clip = 1.0
    with pytest.raises(ConfigError, match="train.grad_clip"):
        check_compatible(saved, config)
