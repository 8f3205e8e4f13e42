"""Caption corruption: CaptionSwap, CorruptedSource over CaptionedShapesSource and the manifest."""

import math
from fractions import Fraction

import numpy as np
import pytest

from diffcorrupt.config.schema import base_config
from diffcorrupt.data.corruption.build import build_corruption
from diffcorrupt.data.corruption.caption_swap import CaptionSwap
from diffcorrupt.data.corruption.corrupted_source import CorruptedSource
from diffcorrupt.data.corruption.manifest import compute_manifest
from diffcorrupt.data.sources.captioned_shapes import CaptionedShapesSource
from diffcorrupt.errors import ConfigError

SIZES = (1, 2, 3, 7, 100, 1001, 12345)
RATIOS = (0.0, 0.025, 0.075, 0.2, 0.5, 0.99)


def swap(n, ratio, seed=0, mode="fixed"):
    return CaptionSwap(num_examples=n, ratio=ratio, seed=seed, mode=mode)


def expected_count(n, ratio):
    k = math.floor(ratio * n)
    assert k == math.floor(Fraction(repr(ratio)) * n)  # no binary rounding surprise for these pairs
    return k - k % 2


def swap_config(**values):
    cfg = base_config().data.corruption
    cfg.kind = "swap"
    for key, value in values.items():
        cfg[key] = value
    return cfg


@pytest.fixture(scope="module")
def shapes():
    return CaptionedShapesSource(400, resolution=16)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("ratio", RATIOS)
def test_count_is_floor_rounded_down_to_even(n, ratio):
    corruption = swap(n, ratio, seed=5)
    expected = expected_count(n, ratio)
    assert corruption.num_corrupted == expected
    assert corruption.num_corrupted % 2 == 0
    partners = corruption.partners(np.arange(n))
    assert int(np.sum(partners >= 0)) == expected
    describe = corruption.describe()
    assert describe["num_corrupted"] == expected
    assert describe["num_pairs"] == expected // 2
    assert describe["kind"] == "swap"


@pytest.mark.parametrize("n,ratio,expected", [(100, 0.58, 58), (100, 0.57, 56), (100, 0.29, 28), (50_000, 0.145, 7250)])
def test_count_uses_the_decimal_ratio(n, ratio, expected):
    """0.58 * 100 is 57.99999999999999 in binary floating point; the user asked for 58 (29 pairs)."""
    corruption = swap(n, ratio)
    assert corruption.num_corrupted == expected
    assert int(np.sum(corruption.partners(np.arange(n)) >= 0)) == expected


def test_odd_floor_is_rounded_down():
    # floor(0.5 * 7) = 3 -> 2; floor(0.99 * 100) = 99 -> 98
    assert swap(7, 0.5).num_corrupted == 2
    assert swap(100, 0.99).num_corrupted == 98
    assert swap(100, 0.2).num_corrupted == 20
    assert swap(3, 0.5).num_corrupted == 0


@pytest.mark.parametrize("n", (2, 3, 100, 1001, 12345))
@pytest.mark.parametrize("ratio", (0.075, 0.5, 0.99))
def test_partner_relation_is_symmetric_and_never_self(n, ratio):
    corruption = swap(n, ratio, seed=3)
    indices = np.arange(n)
    partners = corruption.partners(indices)
    swapped = partners >= 0
    assert np.all(partners[swapped] != indices[swapped])
    assert np.all(partners[swapped] < n)
    # partner(partner(i)) == i, and partners are themselves swapped
    assert np.array_equal(partners[partners[swapped]], indices[swapped])
    # each swapped example belongs to exactly one pair
    assert len(np.unique(partners[swapped])) == int(swapped.sum())
    assert np.all(partners[~swapped] == -1)


@pytest.mark.parametrize("mode", ("fixed", "random"))
def test_scalar_and_vector_paths_agree(mode):
    n = 1500
    corruption = swap(n, 0.3, seed=8, mode=mode)
    for epoch in (0, 1, 4):
        partners = corruption.partners(np.arange(n), epoch)
        for i in range(n):
            one = corruption.partner_one(i, epoch)
            assert (one if one is not None else -1) == partners[i], (i, epoch)
            if one is not None:
                assert corruption.partner_one(one, epoch) == i
        # a subset in any order gives the same answers as the whole range
        sample = np.random.default_rng(epoch).permutation(n)[:300]
        assert np.array_equal(corruption.partners(sample, epoch), partners[sample])


def test_zero_ratio_swaps_nothing():
    corruption = swap(50, 0.0)
    assert corruption.num_corrupted == 0
    assert all(corruption.partner_one(i) is None for i in range(50))
    assert np.all(corruption.partners(np.arange(50)) == -1)


def test_build_corruption_for_text_source(shapes):
    corruption = build_corruption(swap_config(ratio=0.1, seed=4, mode="random"), shapes)
    assert isinstance(corruption, CaptionSwap)
    assert corruption.num_corrupted == 40
    assert corruption.seed == 4 and corruption.mode == "random"
    for kind in ("symmetric", "asymmetric"):
        with pytest.raises(ConfigError, match="data.corruption.kind"):
            build_corruption(swap_config(kind=kind, ratio=0.1), shapes)


def test_corrupted_source_shows_partner_caption_and_keeps_clean_caption(shapes):
    corruption = swap(len(shapes), 0.2, seed=1)
    view = CorruptedSource(shapes, corruption)
    assert view.condition == "text"
    assert len(view) == len(shapes)
    n_corrupted = 0
    for i in range(len(shapes)):
        element = view[i]
        clean = shapes.caption(i)
        partner = corruption.partner_one(i)
        assert element["index"] == i
        assert element["clean_caption"] == clean
        assert element["corrupted"] == (partner is not None)
        if partner is None:
            assert element["caption"] == clean
        else:
            n_corrupted += 1
            assert element["caption"] == shapes.caption(partner)
            # the partner shows this example's caption
            assert view[partner]["caption"] == clean
        # the image and attributes stay those of example i
        assert element["image"].shape == (16, 16, 3)
        assert np.array_equal(element["attributes"], shapes[i]["attributes"])
    assert n_corrupted == corruption.num_corrupted == 80


def test_swapped_captions_are_mostly_different_text(shapes):
    corruption = swap(len(shapes), 0.5, seed=2)
    view = CorruptedSource(shapes, corruption)
    swapped = [view[i] for i in range(len(shapes)) if view[i]["corrupted"]]
    changed = sum(e["caption"] != e["clean_caption"] for e in swapped)
    assert changed > 0.9 * len(swapped)


def test_fixed_mode_same_every_epoch(shapes):
    corruption = swap(len(shapes), 0.3, seed=6, mode="fixed")
    view = CorruptedSource(shapes, corruption)
    p0 = corruption.partners(np.arange(len(shapes)), 0)
    for epoch in (1, 9):
        assert np.array_equal(corruption.partners(np.arange(len(shapes)), epoch), p0)
    assert [view.read(i, 3)["caption"] for i in range(50)] == [view.read(i, 0)["caption"] for i in range(50)]


def test_random_mode_differs_by_epoch(shapes):
    n = len(shapes)
    corruption = swap(n, 0.3, seed=6, mode="random")
    view = CorruptedSource(shapes, corruption)
    sets = []
    for epoch in range(3):
        partners = corruption.partners(np.arange(n), epoch)
        assert int(np.sum(partners >= 0)) == corruption.num_corrupted == 120
        sets.append(frozenset(np.flatnonzero(partners >= 0).tolist()))
        reads = [view.read(i, epoch) for i in range(n)]
        assert [i for i, e in enumerate(reads) if e["corrupted"]] == sorted(sets[-1])
    assert len(set(sets)) == 3
    # deterministic for the same (seed, epoch), independent of call history
    fresh = swap(n, 0.3, seed=6, mode="random")
    assert np.array_equal(fresh.partners(np.arange(n), 2), corruption.partners(np.arange(n), 2))


def test_seeds_give_different_pairs():
    n = 1000
    pairs = [tuple(swap(n, 0.1, seed=s).partners(np.arange(n)).tolist()) for s in range(4)]
    assert len(set(pairs)) == 4
    assert tuple(swap(n, 0.1, seed=2).partners(np.arange(n)).tolist()) == pairs[2]


def test_manifest_agrees_with_corrupted_source(shapes):
    corruption = swap(len(shapes), 0.15, seed=9)
    summary, indices = compute_manifest(shapes, corruption)
    view = CorruptedSource(shapes, corruption)
    read = [i for i in range(len(shapes)) if view[i]["corrupted"]]
    assert indices.tolist() == read
    assert summary["num_corrupted"] == len(read) == corruption.num_corrupted == 60
    assert summary["num_pairs"] == 30
    assert summary["actual_ratio"] == 60 / len(shapes)
    assert summary["epoch"] is None
    assert 0 < len(summary["example_swaps"]) <= 5
    for example in summary["example_swaps"]:
        i, p = example["index"], example["partner"]
        assert i < p
        assert corruption.partner_one(i) == p
        assert example["caption"] == shapes.caption(i)
        assert example["shown_caption"] == shapes.caption(p) == view[i]["caption"]


def test_manifest_random_mode_epoch(shapes):
    corruption = swap(len(shapes), 0.15, seed=9, mode="random")
    summary, indices = compute_manifest(shapes, corruption, epoch=2)
    assert summary["epoch"] == 2
    assert indices.tolist() == np.flatnonzero(corruption.partners(np.arange(len(shapes)), 2) >= 0).tolist()
