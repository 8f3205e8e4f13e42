"""A text-conditional run through sample and evaluate: captions from a file, stored with the
samples, and scored attribute by attribute by the captioned-shapes classifier."""

import pathlib
import types

import numpy as np
import pytest

from diffcorrupt import evaluate as evaluate_job
from diffcorrupt import sample
from diffcorrupt.config.loading import load_config
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation import classifier_training
from diffcorrupt.sampling.shards import read_shards
from diffcorrupt.training.loop import train

CAPTIONS = ["one small red circle on the left", "three large blue squares at the top"]


def test_captions_from_a_file_are_sampled_stored_and_scored(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCORRUPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(classifier_training, "DEFAULT_STEPS", {"captioned_shapes": 20})
    workdir = tmp_path / "run"
    train(load_config("configs/shapes.py:tiny", ["model.name=DiT-T/8", "data.image_size=16", "train.batch_size=8",
                                                  "train.num_steps=2", "checkpoint.every_steps=2"]), str(workdir))
    (tmp_path / "captions.txt").write_text("\n".join(CAPTIONS) + "\n\n")
    flags = dict(workdir=str(workdir), step=None, num_samples=6, sampler="dpm", steps=3, cfg_scale="2", eta=None,
                 seed=0, batch_size=4, captions=None, out=str(tmp_path / "samples"), mesh="-1,1,1", autoencoder=None)
    with pytest.raises(UserError, match="text-conditional; pass --captions"):
        sample.sample_run(types.SimpleNamespace(**flags))
    flags["captions"] = str(tmp_path / "captions.txt")
    folder = sample.sample_run(types.SimpleNamespace(**flags))[0]["samples"]
    shards = read_shards(pathlib.Path(folder))
    assert list(shards["captions"]) == [CAPTIONS[j % 2] for j in range(6)] and "arr_1" not in shards
    assert shards["arr_0"].shape == (6, 16, 16, 3)
    metrics = evaluate_job.evaluate(folder, reference_count=64)["networks"]["classifier"]["metrics"]
    for attribute in ("count", "size", "colour", "shape", "position"):
        assert 0.0 <= metrics[f"accuracy_{attribute}"] <= 1.0
    assert np.isfinite(metrics["fd"])
