"""The per-dataset feature classifier: caption parsing, saving/loading, sharding invariance,
condition accuracy and the training cache."""

import gzip
import itertools
import pathlib

import jax
import numpy as np
import pytest

from diffcorrupt.config.schema import base_config
from diffcorrupt.data.sources.caption_parse import CARDINALITIES, parse_caption
from diffcorrupt.data.sources.captioned_shapes import ATTRIBUTES, CaptionedShapesSource, caption_of
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation import classifier_training
from diffcorrupt.evaluation.classifier_training import (
    META_FILE,
    WEIGHTS_FILE,
    ensure_classifier,
    load_classifier,
    train_classifier,
)


def _shapes_data(num_examples=64):
    data = base_config().data
    data.name, data.num_examples, data.channels, data.random_flip = "captioned_shapes", num_examples, 3, False
    return data


def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    return train_classifier(_shapes_data(), tmp_path_factory.mktemp("shapes"), steps=3, batch_size=16)


@pytest.fixture(scope="module")
def shapes(shapes_dir):
    return load_classifier(shapes_dir, batch_size=32)


def test_parse_caption_inverts_caption_of_for_every_combination():
    combos = list(itertools.product(*(range(n) for n in CARDINALITIES)))
    assert len(combos) == 720
    for attrs in combos:
        assert parse_caption(caption_of(attrs)) == attrs
    assert parse_caption("  two small red   circles on the left ") == (1, 0, 0, 0, 0)
    for bad in ("two small red circle on the left", "one small red circle", "seven small red circles on the left"):
        with pytest.raises(UserError, match=bad):
            parse_caption(bad)


def test_trained_classifier_saves_and_loads_to_identical_features(shapes_dir, shapes):
    meta = shapes.meta
    assert meta["heads"] == list(CARDINALITIES) and meta["head_names"] == list(ATTRIBUTES)
    assert set(meta["heldout"]) == {"accuracy"} | {f"accuracy_{a}" for a in ATTRIBUTES}
    assert (shapes.name, shapes.dataset) == ("classifier", "captioned_shapes-32px")
    images = np.stack([CaptionedShapesSource(20)[i]["image"] for i in range(20)])
    out = shapes(images)
    assert out["pool"].shape == (20, 128) and out["pool"].dtype == np.float32
    assert out["logits"].shape == (20, sum(CARDINALITIES))
    again = load_classifier(shapes_dir, batch_size=32)(images)  # the same batch: bit for bit (other batches: next test)
    np.testing.assert_array_equal(out["pool"], again["pool"])
    assert shapes.weights_hash == load_classifier(shapes_dir).weights_hash == meta["weights_sha256"]
    assert shapes.predict(out["logits"]).shape == (20, len(ATTRIBUTES))


def test_features_do_not_depend_on_batch_size_or_device_count(shapes_dir):
    images = np.random.default_rng(0).integers(0, 256, (37, 32, 32, 3), dtype=np.uint8)
    assert len(jax.devices()) == 8
    reference = load_classifier(shapes_dir, batch_size=32)(images)
    for batch_size, devices in ((8, None), (8, jax.devices()[:1])):
        out = load_classifier(shapes_dir, batch_size=batch_size, devices=devices)(images)
        for key in ("pool", "logits"):
            np.testing.assert_allclose(out[key], reference[key], rtol=1e-5, atol=1e-5)


def test_condition_accuracy_of_captions_counts_each_attribute(shapes):
    images = np.stack([CaptionedShapesSource(40)[i]["image"] for i in range(40)])
    predicted = shapes.predict(shapes(images)["logits"])
    # Captions that say exactly what the classifier sees, then wrong colours in 10 and wrong
    # shapes in 4 of them (overlapping in 2): accuracies the classifier's own output fixes.
    wanted = predicted.copy()
    wanted[:10, 2] = (wanted[:10, 2] + 1) % CARDINALITIES[2]
    wanted[8:12, 3] = (wanted[8:12, 3] + 1) % CARDINALITIES[3]
    captions = [caption_of(tuple(row)) for row in wanted]
    scores = shapes.condition_accuracy(images, captions)
    assert shapes.accuracy(shapes(images)["logits"], np.array(captions)) == scores
    assert scores == {
        "accuracy": 28 / 40, "accuracy_count": 1.0, "accuracy_size": 1.0,
        "accuracy_colour": 30 / 40, "accuracy_shape": 36 / 40, "accuracy_position": 1.0,
    }


def test_class_classifier_holds_out_a_slice_and_scores_labels(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "fmnist"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (100, 28, 28)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 100))
    data = base_config().data
    data.data_dir = str(folder)  # no test split there: the last 10% are held out
    classifier = load_classifier(train_classifier(data, tmp_path / "out", steps=2, batch_size=16))
    # 2 steps of 16 read only the first 32 of the 90 training examples.
    assert classifier.meta["num_train"] == 32 and classifier.meta["num_heldout"] == 10
    assert classifier.dataset == "fashion_mnist-32px"
    images = rng.integers(0, 256, (12, 32, 32, 1), dtype=np.uint8)
    labels = classifier.predict(classifier(images)["logits"])
    assert labels.shape == (12,)
    labels[:3] = (labels[:3] + 1) % 10
    assert classifier.condition_accuracy(images, labels) == {"accuracy": 9 / 12}
    with pytest.raises(UserError, match="uint8 images of shape"):
        classifier(images[..., 0])


def test_ensure_classifier_trains_once_and_atomically(tmp_path, monkeypatch):
    calls = []

    def quick(data_config, out_dir, **kwargs):
        calls.append(out_dir)
        return train_classifier(data_config, out_dir, steps=2, batch_size=16)

    monkeypatch.setattr(classifier_training, "train_classifier", quick)
    data = _shapes_data(32)
    first = ensure_classifier(data, tmp_path)
    assert first.parent == tmp_path / "classifiers" and first.name.startswith("captioned_shapes-32px-")
    mtime = (first / WEIGHTS_FILE).stat().st_mtime_ns
    assert ensure_classifier(data, tmp_path) == first
    assert len(calls) == 1 and (first / WEIGHTS_FILE).stat().st_mtime_ns == mtime
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no temporary left

    def interrupted(data_config, out_dir, **kwargs):
        (out_dir / WEIGHTS_FILE).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(classifier_training, "train_classifier", interrupted)
    other = _shapes_data(48)
    with pytest.raises(KeyboardInterrupt):
        ensure_classifier(other, tmp_path)
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]


def test_truncated_or_missing_classifier_is_a_user_error(shapes_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / META_FILE).write_bytes((shapes_dir / META_FILE).read_bytes())
    weights = (shapes_dir / WEIGHTS_FILE).read_bytes()
    (broken / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(UserError, match="truncated"):
        load_classifier(broken)
    (broken / WEIGHTS_FILE).unlink()
    with pytest.raises(UserError, match="cannot be read"):
        load_classifier(broken)
    with pytest.raises(UserError, match="cannot be read"):
        load_classifier(tmp_path / "nowhere")


def test_datasets_without_a_classifier_are_refused(tmp_path):
    data = _shapes_data()
    data.name = "synthetic"
    with pytest.raises(UserError, match="no feature classifier for the dataset 'synthetic'"):
        train_classifier(data, tmp_path, steps=1)
