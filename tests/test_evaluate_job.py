"""The evaluate and report jobs end to end on tiny runs: samples -> metrics JSON with provenance ->
tables and plots, skipping what is done; and every input layout and bad input."""

import json
import pathlib
import types

import numpy as np
import pytest
from PIL import Image

from diffcorrupt import evaluate as evaluate_job
from diffcorrupt import jobs, sample
from diffcorrupt.config.loading import load_config
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation import classifier_training
from diffcorrupt.evaluation.sample_files import read_samples
from diffcorrupt.report.batch import run_batch
from diffcorrupt.training.loop import train

from autoencoder_files import save_random_vq
from clip_files import tiny_clip_npz

TINY = ["model.name=DiT-T/8", "data.image_size=16", "train.batch_size=16", "train.num_steps=2",
        "checkpoint.every_steps=1", "checkpoint.keep=2", "train.ema_decay=0.5"]
DATA = load_config("configs/fmnist.py:tiny", ["data.image_size=16"]).data
SAMPLING = {"cfg_scale": "1,2", "num_samples": 24, "sampler": "ddim", "steps": (3,), "eta": None, "seed": 0,
            "batch_size": 8, "captions": None}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[pathlib.Path]:
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for name, extra in (("clean", []), ("eta20", ["data.corruption.ratio=0.2"])):
        train(load_config("configs/fmnist.py:tiny", TINY + extra), str(root / name))
        paths.append(root / name)
    return paths


@pytest.fixture(autouse=True)
def quick_classifier(tmp_path_factory, monkeypatch):
    """A classifier trained for a few steps in a private cache: the metrics are real, just poor."""
    monkeypatch.setenv("DIFFCORRUPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setattr(classifier_training, "DEFAULT_STEPS", {"fashion_mnist": 30, "captioned_shapes": 30})


def _samples(workdir, out, **kw):
    flags = dict(workdir=str(workdir), step=None, out=str(out), mesh="-1,1,1", autoencoder=None, controls=None,
                 **{**SAMPLING, "steps": SAMPLING["steps"][0]})
    flags.update(kw)
    return sample.sample_run(types.SimpleNamespace(**flags))


def test_evaluate_writes_every_number_with_provenance(runs, tmp_path):
    folder = _samples(runs[0], tmp_path, cfg_scale="2")[0]["samples"]
    result = evaluate_job.evaluate(folder, reference_count=300)
    written = json.loads((pathlib.Path(folder) / "metrics.json").read_text())
    assert written == json.loads(json.dumps(result))
    metrics = written["networks"]["classifier"]["metrics"]
    for key in ("fd", "precision", "recall", "accuracy", "memorization_ratio", "top5_distance", "rmd_top1pct",
                "rmd_mean", "sample_entropy", "sample_entropy_real"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["accuracy"] <= 1 and metrics["fd"] > 0
    assert metrics["rmd_top1pct"] >= metrics["rmd_mean"]
    assert 0 <= metrics["sample_entropy"] <= np.log(metrics["sample_entropy_codes"]) + 1e-9
    with np.load(pathlib.Path(folder) / written["networks"]["classifier"]["rmd_file"]) as rmd:
        assert rmd["classifier"].shape == (24,) and np.isclose(rmd["classifier"].mean(), metrics["rmd_mean"])
    assert {"rmd", "sample_entropy", "top_pr"} <= set(written["protocol"])
    assert "needs 162 samples" in metrics["top_pr_note"]  # 24 samples: too few for its bandwidth estimate
    provenance = written["provenance"]
    assert (provenance["step"], provenance["sampler"], provenance["steps"], provenance["cfg_scale"]) == (2, "ddim", 3, 2.0)
    assert written["num_samples"] == 24 and len(written["networks"]["classifier"]["weights_sha256"]) == 64
    assert written["reference"] == {"spec": "dataset", "count": 300}
    assert written["clip_note"].startswith("CLIP metrics not computed: no CLIP weights at ")  # none in this cache
    pixels = written["networks"]["pixels"]  # copies, against the training images the run saw
    assert pixels["training_images"] == 300 and 0 <= pixels["metrics"]["copy_ratio"] <= 1
    assert Image.open(pathlib.Path(folder) / pixels["neighbours_file"]).size == (4 * 16, 8 * 16)
    assert "pixels" in written["protocol"]


def test_clip_is_measured_where_its_weights_are(runs, tmp_path):
    """With CLIP weights every metric is computed in CLIP's space too, and the CLIP score against
    'a photo of a <class>.' captions; the class names may come from a file."""
    weights = str(tiny_clip_npz(tmp_path / "clip"))
    folder = _samples(runs[0], tmp_path / "s", cfg_scale="2")[0]["samples"]
    sha = save_random_vq(tmp_path / "vq")
    result = evaluate_job.evaluate(folder, reference_count=300, clip_weights=weights, vq_autoencoder=str(tmp_path / "vq"))
    assert set(result["networks"]) == {"classifier", "clip", "vq", "pixels"} and "clip_note" not in result
    vq = result["networks"]["vq"]
    assert vq["weights_sha256"] == sha and 0 < vq["metrics"]["sample_entropy"] <= np.log(vq["metrics"]["sample_entropy_codes"])
    clip = result["networks"]["clip"]["metrics"]
    for key in ("fd", "precision", "recall", "memorization_ratio", "top5_distance", "rmd_top1pct", "sample_entropy"):
        assert np.isfinite(clip[key]), key
    assert 0 <= clip["clip_score"] <= 100 and "fid" not in clip and "accuracy" not in clip
    assert "a photo of a {}." in result["protocol"]["clip_score"]
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"thing {i}" for i in range(10)))
    renamed = evaluate_job.evaluate(folder, reference_count=300, clip_weights=weights, features="clip",
                                    class_names=str(names), out=tmp_path / "renamed.json")["networks"]["clip"]["metrics"]
    assert renamed["clip_score"] != clip["clip_score"] and renamed["fd"] == clip["fd"]
    with pytest.raises(UserError, match="nowhere.npz do not exist"):
        evaluate_job.evaluate(folder, features="clip", clip_weights=str(tmp_path / "nowhere.npz"))
    with pytest.raises(UserError, match="--vq_autoencoder"):
        evaluate_job.evaluate(folder, features="classifier", vq_autoencoder=str(tmp_path / "clip"))


def test_same_images_in_every_layout_score_the_same(runs, tmp_path):
    folder = pathlib.Path(_samples(runs[0], tmp_path / "s", cfg_scale="1")[0]["samples"])
    shards = read_samples(folder)
    np.savez(tmp_path / "adm.npz", arr_0=shards.images, arr_1=shards.labels)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, image in enumerate(shards.images):
        Image.fromarray(image[..., 0]).save(pictures / f"{i:03d}.png")
    common = dict(reference_count=200, train_reference="none", data_config=DATA)
    scores = [evaluate_job.evaluate(path, out=tmp_path / f"{k}.json", **common)["networks"]["classifier"]["metrics"]
              for k, path in enumerate((folder, tmp_path / "adm.npz", pictures))]
    assert scores[0]["fd"] == pytest.approx(scores[1]["fd"]) == pytest.approx(scores[2]["fd"])
    assert scores[0]["accuracy"] == scores[1]["accuracy"] and "accuracy" not in scores[2]  # folders carry no labels
    assert scores[0]["rmd_top1pct"] == pytest.approx(scores[1]["rmd_top1pct"])
    assert scores[2]["rmd_top1pct"] != scores[0]["rmd_top1pct"]  # unlabelled: each sample at its nearest class


def test_too_small_a_reference_says_which_metric_it_skips(runs, tmp_path):
    folder = _samples(runs[0], tmp_path, cfg_scale="1", num_samples=16)[0]["samples"]
    metrics = evaluate_job.evaluate(folder, reference_count=30, train_reference="none")["networks"]["classifier"]["metrics"]
    assert "sample_entropy" not in metrics and "raise --reference_count" in metrics["sample_entropy_note"]
    assert np.isfinite(metrics["fd"])


def test_bad_inputs_get_one_sentence(runs, tmp_path, capsys):
    folder = pathlib.Path(_samples(runs[0], tmp_path / "s", cfg_scale="1", num_samples=16)[0]["samples"])
    settings = json.loads((folder / "settings.json").read_text())
    (folder / "settings.json").write_text(json.dumps({**settings, "num_samples": 40}))
    with pytest.raises(UserError, match="16 of the 40 samples"):
        evaluate_job.evaluate(folder)
    truncated = tmp_path / "cut.npz"
    np.savez(truncated, arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:60])
    assert jobs.run("evaluate", evaluate_job.main, [f"--samples={truncated}", "--reference=dataset"]) == 2
    assert "may be truncated" in capsys.readouterr().err
    np.savez(tmp_path / "floats.npz", arr_0=np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(UserError, match="uint8 NHWC"):
        evaluate_job.evaluate(tmp_path / "floats.npz", reference="dataset", data_config=DATA)
    with pytest.raises(UserError, match="name no run"):
        evaluate_job.evaluate(_adm(tmp_path))
    with pytest.raises(UserError, match="--features=inception"):
        evaluate_job.evaluate(_adm(tmp_path), reference=str(_adm(tmp_path)), features="classifier")


def _adm(tmp_path) -> pathlib.Path:
    path = tmp_path / "plain.npz"
    np.savez(path, arr_0=np.zeros((4, 8, 8, 3), np.uint8))
    return path


def test_report_batches_runs_checkpoints_and_scales_then_skips_done_work(runs, tmp_path):
    out = tmp_path / "report"
    summary = run_batch(runs, checkpoints="all", sample_flags=SAMPLING, features=None, inception_weights=None,
                        reference=None, reference_count=200, out=out)
    assert summary["rows"] == 2 * 2 * 2 * 2  # runs x checkpoints x scales x (classifier features, pixel copies)
    table = (out / "results.csv").read_text().splitlines()
    assert len(table) == 1 + 16 and "eta" in table[0] and "fd" in table[0] and "copy_ratio" in table[0]
    assert {line.split(",")[table[0].split(",").index("eta")] for line in table[1:]} == {"0.0", "0.2"}
    assert (out / "pixels_copy_ratio_vs_cfg.png").is_file()
    assert (out / "best.md").is_file() and (out / "summary.md").is_file()
    assert (out / "classifier_vs_cfg.png").is_file() and (out / "classifier_vs_eta.png").is_file()
    for plot in ("accuracy_vs_cfg", "rmd_top1pct_vs_cfg", "sample_entropy_vs_cfg", "rmd_density"):
        assert (out / f"classifier_{plot}.png").is_file(), plot
    assert "rmd_top1pct" in table[0] and "sample_entropy" in table[0]
    assert "CLIP metrics not computed: no CLIP weights" in (out / "summary.md").read_text()
    metrics = sorted(pathlib.Path(runs[0]).glob("eval/step_*/*/metrics.json"))
    assert len(metrics) == 4
    before = [p.stat().st_mtime_ns for p in metrics]
    again = run_batch(runs, checkpoints="all", sample_flags=SAMPLING, features=None, inception_weights=None,
                      reference=None, reference_count=200, out=out)
    assert again["rows"] == 16 and [p.stat().st_mtime_ns for p in metrics] == before
    more = run_batch(runs, checkpoints="all", sample_flags=SAMPLING, latest_cfg_scale="1.5,2.0", features=None,
                     inception_weights=None, reference=None, reference_count=200, out=out)
    assert more["rows"] == 16 + 2 * 2  # each run's latest checkpoint at 1.5 as well; 2.0 is the 2 sampled already
    added = set(pathlib.Path(runs[0]).glob("eval/step_*/*/metrics.json")) - set(metrics)
    latest = max(metrics, key=lambda p: int(p.parent.parent.name.removeprefix("step_"))).parent.parent
    assert [(p.parent.parent, p.parent.name) for p in added] == [(latest, "ddim3-cfg1.5-seed0")]
    with pytest.raises(UserError, match="no checkpoint of step 5"):
        run_batch(runs, checkpoints="5", sample_flags=SAMPLING, features=None, inception_weights=None,
                  reference=None, reference_count=200, out=out)


class _PixelNet:
    """A feature network of the first 8 pixels, which sees whatever images it is given."""

    name, weights_hash = "pixels", "none"

    def __call__(self, images):
        return {"pool": images.reshape(len(images), -1)[:, :8].astype(np.float32)}


def test_a_dataset_reference_is_featurised_a_chunk_at_a_time(tmp_path, monkeypatch):
    from diffcorrupt.evaluation import reference

    stats = []
    for chunk in (10_000, 7):
        monkeypatch.setenv("DIFFCORRUPT_CACHE", str(tmp_path / str(chunk)))
        monkeypatch.setattr(reference, "REFERENCE_CHUNK", chunk)
        stats.append(reference.reference_stats("dataset", _PixelNet(), data_config=DATA, count=50))
    np.testing.assert_array_equal(stats[0].features, stats[1].features)
    np.testing.assert_array_equal(stats[0].labels, stats[1].labels)
    assert stats[1].features.shape == (50, 8) and stats[1].meta["count"] == 50
