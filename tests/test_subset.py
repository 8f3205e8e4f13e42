"""Index-range subsets (``data.subset``): class balance, nesting, held-out disjointness, the
renumbering that corruption keys on, held-out references and the instrument that ignores them."""

from __future__ import annotations

import numpy as np
import pytest

from diffcorrupt.config.loading import load_config
from diffcorrupt.config.validate import validate
from diffcorrupt.data.pipeline import corrupted_source, make_dataset
from diffcorrupt.data.sources.captioned_shapes import CaptionedShapesSource
from diffcorrupt.data.sources.fashion_mnist import FashionMnistSource
from diffcorrupt.data.sources.registry import make_source
from diffcorrupt.data.sources.subset import balanced_order, make_subset, subset_indices
from diffcorrupt.errors import ConfigError
from diffcorrupt.evaluation import classifier_training, reference


def _config(*overrides: str):
    return load_config("configs/fmnist.py:tiny", ["data.split=test", *overrides])


def test_balanced_order_deals_the_classes_round_robin():
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 2])
    np.testing.assert_array_equal(balanced_order(labels), [0, 1, 3, 2, 4, 6, 5, 7, 8])


def test_balanced_subsets_are_class_balanced_nested_and_disjoint_from_later_ranges():
    source = FashionMnistSource("test")
    small, large = subset_indices(source, "balanced[0:500]"), subset_indices(source, "balanced[0:2000]")
    held_out = subset_indices(source, "balanced[5000:10000]")
    labels = source.labels()
    np.testing.assert_array_equal(np.bincount(labels[small]), [50] * 10)
    np.testing.assert_array_equal(np.bincount(labels[large]), [200] * 10)
    assert set(small) <= set(large) and not set(large) & set(held_out) and len(set(held_out)) == 5000
    # Each class's first examples, in index order: the subset is the split's own, not a random draw.
    for c in range(10):
        np.testing.assert_array_equal(np.sort(small[labels[small] == c]), np.flatnonzero(labels == c)[:50])


def test_a_plain_range_is_those_examples_renumbered():
    source = make_source(_config("data.subset=[100:110]").data)
    full = FashionMnistSource("test")
    assert len(source) == 10
    np.testing.assert_array_equal(source[0]["image"], full[100]["image"])
    np.testing.assert_array_equal(source.labels(), full.labels()[100:110])
    assert source.class_names == full.class_names and source.num_classes == 10


def test_corruption_counts_and_keys_on_the_subset():
    view = corrupted_source(_config("data.subset=balanced[0:500]", "data.corruption.ratio=0.05"))
    flags = [view.read(i, 0)["corrupted"] for i in range(len(view))]
    assert len(view) == 500 and sum(flags) == 25


def test_training_batches_come_from_the_subset_only():
    config = _config("data.subset=balanced[0:40]", "train.batch_size=8")
    source = make_source(config.data)
    dataset = make_dataset(config)
    seen = np.concatenate([dataset[k]["index"] for k in range(10)])  # two epochs of 40
    assert set(seen) == set(range(40))
    batch = dataset[0]
    for row, index in enumerate(batch["index"]):
        assert batch["clean_label"][row] == source.labels()[index]


def test_text_sources_take_plain_ranges_only():
    shapes = CaptionedShapesSource(20, 16)
    sub = make_subset(shapes, "[5:10]")
    assert len(sub) == 5 and sub.caption(0) == shapes.caption(5)
    with pytest.raises(ConfigError, match="captions, not classes"):
        make_subset(shapes, "balanced[0:10]")


@pytest.mark.parametrize("spec, message", [
    ("0:500", "use '\\[a:b\\]'"), ("balanced[500:100]", "a < b"), ("balanced[0:x]", "use"),
])
def test_a_bad_subset_spec_is_refused_at_validation(spec, message):
    with pytest.raises(ConfigError, match=message):
        validate(_config(f"data.subset={spec}"), check_data=False)


def test_a_range_past_the_end_names_the_size():
    with pytest.raises(ConfigError, match="has 10000 examples"):
        make_source(_config("data.subset=[0:20000]").data)


def test_a_held_out_reference_is_named_by_split_and_subset():
    data = _config("data.subset=balanced[0:500]").data
    _, own, load_own = reference._resolve("dataset", data, None)
    _, whole, load_whole = reference._resolve("dataset:test", data, None)
    _, held, load_held = reference._resolve("dataset:test:balanced[5000:10000]", data, None)
    assert (own["subset"], whole["subset"], held["subset"]) == ("balanced[0:500]", "", "balanced[5000:10000]")
    assert load_own()[2] == 500 and load_whole()[2] == 10000 and load_held()[2] == 5000
    with pytest.raises(ConfigError, match="the subset of --reference"):
        reference._resolve("dataset:test:5000:10000", data, None)


def test_the_classifier_is_trained_on_the_whole_split_whatever_the_run_trained_on():
    whole, sub = _config().data, _config("data.subset=balanced[0:500]").data
    assert classifier_training.classifier_dir(whole) == classifier_training.classifier_dir(sub)


def test_a_class_subset_keeps_every_example_of_its_classes_with_their_labels(tmp_path):
    full = FashionMnistSource("test")
    names = tmp_path / "classes.json"
    names.write_text('["Sneaker", 0]')
    source = make_source(_config(f"data.subset=classes:{names}").data)
    wanted = np.flatnonzero(np.isin(full.labels(), [0, 7]))
    assert len(source) == len(wanted) == 2000
    np.testing.assert_array_equal(source.labels(), full.labels()[wanted])  # the labels are not renumbered
    np.testing.assert_array_equal(source[1]["image"], full[wanted[1]]["image"])
    np.testing.assert_array_equal(subset_indices(full, "classes:7,0"), wanted)
    (tmp_path / "bad.json").write_text('["Llama"]')
    with pytest.raises(ConfigError, match="names class 'Llama', which this dataset does not have"):
        subset_indices(full, f"classes:{tmp_path / 'bad.json'}")
    with pytest.raises(ConfigError, match=r"names '.*missing.json', which does not exist"):
        subset_indices(full, f"classes:{tmp_path / 'missing.json'}")
    with pytest.raises(ConfigError, match="names class 10, which this dataset does not have"):
        subset_indices(full, "classes:3,10")
    with pytest.raises(ConfigError, match="or 'classes:FILE.json'"):
        validate(_config("data.subset=classes:"), check_data=False)
