"""The sample job: EMA weights without optimizer state, samples that depend only on (seed, j),
sharding over every device, resumable shards, and one sentence for bad input."""

import json
import pathlib
import types

import jax
import numpy as np
import pytest

from diffcorrupt import jobs, sample
from diffcorrupt.config.loading import load_config
from diffcorrupt.errors import UserError
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.sampling.generate import SampleSettings, conditions, make_generator
from diffcorrupt.sampling.restore import restore_ema
from diffcorrupt.sampling.shards import SETTINGS, read_shards
from diffcorrupt.training.loop import train

OVERRIDES = ["model.name=DiT-T/8", "data.image_size=16", "train.batch_size=16", "train.num_steps=3",
             "checkpoint.every_steps=3", "train.ema_decay=0.5", "sample.cfg_scale=2.0"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("run")
    train(load_config("configs/fmnist.py:tiny", OVERRIDES), str(path))
    return path


def _flags(workdir, out, **kw):
    values = dict(workdir=str(workdir), step=None, num_samples=20, sampler="ddim", steps=4, cfg_scale="2", eta=None,
                  seed=0, batch_size=8, captions=None, out=str(out), mesh="-1,1,1", autoencoder=None, controls=None)
    values.update(kw)
    return types.SimpleNamespace(**values)


def _mesh(devices: int):
    config = load_config("configs/fmnist.py:tiny").mesh
    return make_mesh(config, devices=jax.devices()[:devices])


def _generate(workdir, devices: int, batch: int, indices: np.ndarray, sampler: str = "ddpm") -> np.ndarray:
    mesh = _mesh(devices)
    restored = restore_ema(workdir, mesh)
    generate = make_generator(restored, SampleSettings(sampler, 4, 2.0, 0.0, seed=7), mesh, batch)
    out = []
    for first in range(0, len(indices), batch):
        chunk = indices[first:first + batch]
        out.append(generate(chunk, conditions(restored, chunk, None).model_input))
    return np.concatenate(out)


def test_restores_ema_weights_only(workdir):
    restored = restore_ema(workdir, _mesh(8))
    assert restored.step == 3 and restored.num_classes == 10 and restored.input_shape == (16, 16, 1)
    assert restored.config.model.name == "DiT-T/8"
    leaf = jax.tree.leaves(restored.params)[0]
    assert len(leaf.sharding.device_set) == 8  # restored straight onto the sampling mesh


def test_samples_do_not_depend_on_device_count_or_batch(workdir):
    indices = np.arange(16)
    one = _generate(workdir, devices=1, batch=8, indices=indices)
    eight = _generate(workdir, devices=8, batch=16, indices=indices)
    assert one.dtype == np.uint8 and one.shape == (16, 16, 16, 1)
    np.testing.assert_array_equal(one, eight)
    # and sample j is the same whichever other samples share its batch
    shuffled = np.asarray([5, 3, 9, 0, 14, 2, 11, 7])
    np.testing.assert_array_equal(_generate(workdir, devices=8, batch=8, indices=shuffled), eight[shuffled])
    assert len({one[i].tobytes() for i in range(16)}) == 16


def test_job_writes_adm_shards_and_resumes(workdir, tmp_path):
    records = sample.sample_run(_flags(workdir, tmp_path / "a", cfg_scale="1,2"))
    assert [r["cfg_scale"] for r in records] == [1.0, 2.0] and all(r["sampled_now"] == 20 for r in records)
    folder = pathlib.Path(records[1]["samples"])
    full = read_shards(folder)
    assert full["arr_0"].shape == (20, 16, 16, 1) and full["arr_0"].dtype == np.uint8
    np.testing.assert_array_equal(full["arr_1"], np.arange(20) % 10)  # class-balanced
    np.testing.assert_array_equal(full["index"], np.arange(20))
    settings = json.loads((folder / SETTINGS).read_text())
    assert settings["step"] == 3 and settings["cfg_scale"] == 2.0 and "round" in settings["quantisation"]
    assert (folder / "grid.png").is_file()
    assert not np.array_equal(read_shards(pathlib.Path(records[0]["samples"]))["arr_0"], full["arr_0"])

    # An interrupted run: a shard lost, another cut short, a temporary file left behind.
    other = tmp_path / "b"
    sample.sample_run(_flags(workdir, other, num_samples=12, batch_size=4))
    run_folder = other / folder.name
    shards = sorted(run_folder.glob("samples_*.npz"))
    shards[0].unlink()
    shards[1].write_bytes(shards[1].read_bytes()[:100])
    (run_folder / "samples_000000099.tmp").write_bytes(b"partial")
    resumed = sample.sample_run(_flags(workdir, other, batch_size=8))  # and more samples, another batch size
    assert resumed[0]["sampled_now"] == 20 - 12 + 8
    again = read_shards(run_folder)
    for key in ("arr_0", "arr_1", "index"):
        np.testing.assert_array_equal(again[key], full[key])
    assert sample.sample_run(_flags(workdir, other))[0]["sampled_now"] == 0


def test_bad_input_gets_one_sentence(workdir, tmp_path, capsys):
    folder = pathlib.Path(sample.sample_run(_flags(workdir, tmp_path, num_samples=4, batch_size=4))[0]["samples"])
    settings = json.loads((folder / SETTINGS).read_text())
    (folder / SETTINGS).write_text(json.dumps({**settings, "step": 99}))  # as if another checkpoint made them
    with pytest.raises(UserError, match="holds samples made with step=99, not 3"):
        sample.sample_run(_flags(workdir, tmp_path, num_samples=4, batch_size=4))
    assert len(list(folder.glob("samples_*.npz"))) == 1  # nothing overwritten
    with pytest.raises(UserError, match="no checkpoint of step 7"):
        sample.sample_run(_flags(workdir, tmp_path, step=7))
    with pytest.raises(UserError, match="use 1 to 1000"):
        sample.sample_run(_flags(workdir, tmp_path / "x", steps=5000))
    assert jobs.run("sample", sample.main, [f"--workdir={tmp_path}/missing"]) == 2
    assert "holds no checkpoints/ folder" in capsys.readouterr().err
