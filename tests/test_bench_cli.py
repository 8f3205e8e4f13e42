"""The benchmarks print one JSON line with their figures."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def _bench(*args):
    """One benchmark, on 1 of the session's 8 simulated devices unless ``args`` pick a count: figures
    from 8 devices simulated on 2 cores measure nothing and take four times as long."""
    if not any(a.startswith("--devices=") for a in args) and args[0] != "model":
        args = (*args, "--devices=1")
    result = subprocess.run([sys.executable, "-m", "diffcorrupt", "bench", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_bench_model_reports_params_and_gmacs():
    result = _bench("model", "--model=DiT-S/2", "--input_shape=32,32,4", "--num_classes=1000")
    assert result["params"] == 32_963_360 and 6.0 < result["gmacs"] < 6.2


def test_bench_train_of_a_preset_reports_throughput():
    result = _bench("train", "--config=configs/fmnist.py:tiny", "--config.model.name=DiT-T/8",
                    "--config.data.image_size=16", "--steps=2")
    assert result["images_per_s"] > 0 and result["device_seconds_per_image"] > 0 and result["batch_size"] == 16
    assert result["model"] == "DiT-T/8" and result["input_shape"] == [16, 16, 1]


def test_bench_sample_reports_images_per_second():
    result = _bench("sample", "--model=DiT-T/8", "--input_shape=16,16,1", "--num_classes=10", "--batch_size=8",
                    "--sampler=ddim", "--steps=3", "--cfg_scale=2")
    assert result["images_per_s"] > 0 and result["batch_size"] == 8 and result["steps"] == 3
    assert result["forward_passes_per_s"] == pytest.approx(result["images_per_s"] * 3 * 2, rel=0.01)


def test_bench_inception_reports_images_per_second():
    result = _bench("inception", "--input_shape=16,16,3", "--batch_size=4", "--num_images=4")
    assert result["images_per_s"] > 0 and result["weights"] == "random"


def test_bench_clip_reports_images_and_captions_per_second():
    result = _bench("clip", "--input_shape=16,16,1", "--batch_size=2", "--num_images=2")
    assert result["images_per_s"] > 0 and result["captions_per_s"] > 0 and result["bench"] == "clip"


def test_bench_encode_reports_the_pre_encoding_speedup():
    result = _bench("encode", "--autoencoder=kl-f4-small", "--input_shape=16,16,3", "--batch_size=8", "--model=DiT-T/2",
                    "--num_classes=10", "--steps=2")
    assert result["latent_shape"] == [4, 4, 4] and result["encode_images_per_s"] > 0
    assert result["pre_encoding_speedup"] > 1.0


def test_bench_devices_limits_the_devices_measured_on():
    """The test session simulates 8 CPU devices; --devices=2 measures on 2 of them (a named model here,
    a preset above)."""
    train = _bench("train", "--model=DiT-T/8", "--input_shape=16,16,4", "--batch_size=8", "--num_classes=10",
                   "--steps=1", "--devices=2")
    assert train["num_devices"] == 2 and train["mesh"]["data"] == 2
    assert train["images_per_s"] > 0 and train["compile_s"] > 0
    sample = _bench("sample", "--model=DiT-T/8", "--input_shape=16,16,1", "--num_classes=10", "--batch_size=4",
                    "--sampler=ddim", "--steps=2", "--devices=2")
    assert sample["devices"] == 2


@pytest.mark.parametrize("args, message", [
    (("train", "--model=DiT-T/8", "--input_shape=16,16,4", "--batch_size=8", "--devices=0"), "argument --devices: 0 is not a count"),
    (("encode", "--autoencoder=kl-f4-small", "--input_shape=16,16,3", "--batch_size=3", "--devices=2"),
     "--batch_size=3 does not split over 2 devices"),
])
def test_bench_refuses_a_device_count_in_one_sentence(args, message):
    result = subprocess.run([sys.executable, "-m", "diffcorrupt", "bench", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""
