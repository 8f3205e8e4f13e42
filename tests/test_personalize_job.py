"""Personalization as a mode of the train job: a control branch trained beside a pre-trained run's
frozen EMA weights, resumed bitwise after kill -9, the base never written to, sampled with the
control images of a dataset's examples and evaluated for control fidelity, and a base that does
not fit refused in one sentence."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from diffcorrupt.config.loading import load_config
from diffcorrupt.data.sources.fashion_mnist import FashionMnistSource
from diffcorrupt.evaluate import evaluate
from diffcorrupt.evaluation import classifier_training
from diffcorrupt.report.batch import rows_of
from diffcorrupt.report.tables import setting_label
from diffcorrupt.sampling.shards import read_shards
from diffcorrupt.config.validate import validate
from diffcorrupt.errors import ConfigError, UserError
from diffcorrupt.sampling.restore import saved_run_config
from diffcorrupt.training.loop import train
from train_runs import REPO, SMALL, env_with_devices, load_tool, resumed_after_kill_9, sample_run

# Clean personalization data and no CEP beside a base pre-trained at eta 10% with CEP-U (SMALL's):
# the report must label the run by its base's pre-training.
PERSONALIZE = ["--config.data.control=canny", "--config.data.corruption.ratio=0", "--config.model.cep.kind=none",
               "--config.model.label_drop=0", "--config.train.num_steps=20", "--config.checkpoint.every_steps=5",
               "--config.train.lr=1e-3", "--config.train.ema_decay=0"]  # 20 steps move a branch, not its EMA


def _run(workdir, *flags, devices=1):
    subprocess.run([sys.executable, "-m", "diffcorrupt", "train", *SMALL, f"--workdir={workdir}", *flags], cwd=REPO,
                   env=env_with_devices(devices), check=True, capture_output=True)


def _fingerprint(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("personalize") / "base"
    _run(workdir, "--config.train.num_steps=10")
    return workdir


@pytest.fixture(scope="module")
def personalized(base):
    workdir = base.parent / "personalized"
    _run(workdir, f"--config.personalize.base={base}", *PERSONALIZE)
    return workdir


def test_personalization_resumes_bitwise_after_kill_9_and_never_writes_to_its_base(base, tmp_path):
    before = _fingerprint(base)
    flags = [f"--config.personalize.base={base}", *PERSONALIZE]

    def command(workdir):
        return [sys.executable, "-m", "diffcorrupt", "train", *SMALL, f"--workdir={workdir}", *flags]

    state_a, batch_a = resumed_after_kill_9(command, tmp_path, flags)
    assert _fingerprint(base) == before  # read, never written

    # The state is the branch's alone: DiT-T's first 3 blocks, their projections and the hint embedder.
    assert {name for name in state_a.params if name.startswith("blocks_")} == {"blocks_0", "blocks_1", "blocks_2"}
    assert "final_layer" not in state_a.params and "hint_embedder" in state_a.params
    assert all(np.any(state_a.params[f"after_proj_{i}"]["kernel"]) for i in range(3))  # they left zero: it learns
    assert np.array_equal(batch_a["control"][..., 0] > 0, batch_a["control"][..., 0] == 1)
    assert saved_run_config(tmp_path / "straight").personalize.base_step == 10  # "the newest", pinned


def test_a_base_that_does_not_fit_is_refused_in_one_sentence(base, personalized, tmp_path):
    def config(*overrides):
        flags = [a[len("--config."):] for a in SMALL[1:] + PERSONALIZE] + list(overrides)
        return load_config(SMALL[0].split("=", 1)[1], flags)

    with pytest.raises(ConfigError, match="'model.name' is 'DiT-T/4' but the base .* 'DiT-T/8'"):
        train(config(f"personalize.base={base}", "model.name=DiT-T/4"), str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="'personalize.base' is set but 'data.control' is not"):
        validate(config(f"personalize.base={base}", "data.control="), check_data=False)
    with pytest.raises(ConfigError, match="T2I-Adapter adds features to a U-Net's encoder"):
        train(config(f"personalize.base={base}", "personalize.method=t2i-adapter"), str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="itself a personalized run; give the workdir of a diffusion run"):
        train(config(f"personalize.base={personalized}"), str(tmp_path / "c"))
    assert not list(tmp_path.glob("[abc]/checkpoints/[0-9]*"))  # nothing was trained


def test_a_personalized_run_is_sampled_with_its_controls_and_scored_for_following_them(personalized, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setattr(classifier_training, "DEFAULT_STEPS", {"fashion_mnist": 30})  # real metrics, just poor
    sample_run(personalized, tmp_path / "samples", "dataset:test:[0:32]")
    shards = read_shards(tmp_path / "samples" / "ddim5-cfg2-seed0")
    assert shards["arr_0"].shape == (40, 16, 16, 1) and shards["control"].shape == (40, 16, 16, 1)
    assert set(np.unique(shards["control"])) == {0, 255}
    labels = FashionMnistSource("test").labels()[:32]
    np.testing.assert_array_equal(shards["arr_1"], labels[np.arange(40) % 32])  # example j mod 32's own label
    result = evaluate(tmp_path / "samples" / "ddim5-cfg2-seed0", features="classifier", train_reference="none",
                      reference="dataset:test:[0:500]")
    control = result["control"]
    assert control["num_samples"] == 40 and 0 <= control["edge_f1"] <= 1 and 0 <= control["edge_f1_other"] <= 1
    assert "edge_f1" in result["protocol"]
    row, = rows_of(result, personalized, saved_run_config(personalized), tmp_path / "metrics.json")
    assert (row["personalized"], row["base"], row["corruption"], row["eta"]) == ("controlnet", "base", "symmetric", 0.1)
    assert setting_label(row) == "symmetric 10% + CEP-U 1 + controlnet" and row["edge_f1"] == control["edge_f1"]


def test_controls_are_asked_of_personalized_runs_and_of_no_others(base, personalized, tmp_path):
    with pytest.raises(UserError, match="was not personalized .* drop --controls"):
        sample_run(base, tmp_path / "a", "dataset:test")
    with pytest.raises(UserError, match="this run is personalized; pass --controls=dataset"):
        sample_run(personalized, tmp_path / "b", None)
    with pytest.raises(UserError, match="--controls=test: name the examples"):
        sample_run(personalized, tmp_path / "c", "test")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_control_reliance_compares_own_same_class_and_blank_controls_on_the_same_noise(base, personalized):
    reliance = load_tool("control_reliance").control_reliance
    result = reliance(personalized, "dataset:test:[0:40]", examples=40)
    assert result["examples"] == 40 and set(result["mse"]) == {"base", "own", "same_class", "blank"}
    assert all(np.isfinite(v) and v > 0 for v in result["mse"].values())
    assert result["mse"]["own"] != result["mse"]["base"]  # the trained branch reaches the output
    assert len(result["mse_by_t"]) == 4
    again = reliance(personalized, "dataset:test:[0:40]", examples=40)
    assert again["mse"] == result["mse"]  # one key: the same timesteps and noise every time
    with pytest.raises(UserError, match="was not personalized"):
        reliance(base, "dataset:test:[0:40]")
