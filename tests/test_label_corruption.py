"""Class-label corruption: LabelFlip, build_corruption, CorruptedSource and the manifest."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from diffcorrupt.config.schema import base_config
from diffcorrupt.data.corruption.build import build_corruption, parse_groups
from diffcorrupt.data.corruption.corrupted_source import CorruptedSource
from diffcorrupt.data.corruption.label_flip import LabelFlip
from diffcorrupt.data.corruption.manifest import compute_manifest
from diffcorrupt.data.sources.fashion_mnist import CLASS_NAMES, GROUPS, FashionMnistSource
from diffcorrupt.data.sources.synthetic import SyntheticSource
from diffcorrupt.errors import ConfigError

SIZES = (1, 7, 100, 1000, 12345)
RATIOS = (0.0, 0.025, 0.075, 0.2, 0.5, 0.99)


def corrupted_count(ratio, n):
    """floor(ratio * n) with the ratio read as the decimal it is written as (0.29 * 100 = 29, not 28)."""
    return math.floor(Fraction(repr(float(ratio))) * n)


def corruption_config(**values):
    cfg = base_config().data.corruption
    for key, value in values.items():
        cfg[key] = value
    return cfg


def observe_all(corruption, source, epoch=0):
    labels = source.labels()
    observed, corrupted = corruption.observe(np.arange(len(source)), labels, epoch)
    return labels, observed, corrupted


@pytest.fixture(scope="module")
def fmnist():
    # /usr/share/datasets/fashion-mnist when installed, else the embedded 10k set; both have 10k 'test'.
    return FashionMnistSource("test")


# ---------------------------------------------------------------- symmetric: counts and consistency


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("ratio", RATIOS)
def test_symmetric_exact_count(n, ratio):
    source = SyntheticSource(n)
    corruption = build_corruption(corruption_config(kind="symmetric", ratio=ratio, seed=3), source)
    labels, observed, corrupted = observe_all(corruption, source)
    expected = math.floor(ratio * n)
    assert expected == corrupted_count(ratio, n)  # no binary rounding surprise for these pairs
    assert corruption.num_corrupted == expected
    assert int(corrupted.sum()) == expected
    assert corruption.describe()["num_corrupted"] == expected
    # corrupted examples change label, the others keep theirs
    assert np.all(observed[corrupted] != labels[corrupted])
    assert np.array_equal(observed[~corrupted], labels[~corrupted])
    assert np.all((observed >= 0) & (observed < source.num_classes))


@pytest.mark.parametrize("n,ratio", [(100, 0.29), (100, 0.57), (50_000, 0.145), (10_000, 0.285)])
def test_count_is_the_decimal_floor_of_ratio_times_n(n, ratio):
    """ratio * N in binary floating point can fall just below an integer (0.29 * 100 = 28.999...).

    The configs document e.g. 'floor(0.075 * 60000) = 4500', i.e. the fraction of the decimal ratio the
    user wrote; a ratio that is an exact multiple of 1/N should corrupt exactly ratio * N examples.
    """
    corruption = LabelFlip(num_examples=n, num_classes=10, ratio=ratio, seed=0, mode="fixed", prior=np.full(10, 0.1))
    assert corruption.num_corrupted == corrupted_count(ratio, n)
    observed, corrupted = corruption.observe(np.arange(n), np.arange(n) % 10)
    assert corrupted.sum() == corrupted_count(ratio, n)


@pytest.mark.parametrize("kind,mode", [("symmetric", "fixed"), ("symmetric", "random"), ("asymmetric", "fixed")])
def test_observe_one_agrees_with_observe(kind, mode):
    n = 3000
    source = SyntheticSource(n)
    cfg = corruption_config(kind=kind, ratio=0.3, seed=11, mode=mode, groups="0,1,2;5,7")
    corruption = build_corruption(cfg, source)
    labels = source.labels()
    sample = np.random.default_rng(0).choice(n, 400, replace=False)
    for epoch in (0, 1, 5):
        observed, corrupted = corruption.observe(sample, labels[sample], epoch)
        for k, i in enumerate(sample.tolist()):
            label, flag = corruption.observe_one(i, int(labels[i]), epoch)
            assert (label, flag) == (int(observed[k]), bool(corrupted[k])), (i, epoch)
        # the vectorised form gives the same answer on a subset as on the whole dataset
        full_observed, full_corrupted = corruption.observe(np.arange(n), labels, epoch)
        assert np.array_equal(full_observed[sample], observed)
        assert np.array_equal(full_corrupted[sample], corrupted)


def test_observe_one_zero_ratio_keeps_everything():
    corruption = LabelFlip(num_examples=10, num_classes=3, ratio=0.0, seed=0, mode="fixed", prior=np.full(3, 1 / 3))
    assert all(corruption.observe_one(i, i % 3) == (i % 3, False) for i in range(10))


def test_never_flipped_to_own_class_and_only_corrupted_change():
    n = 20_000
    source = SyntheticSource(n)
    corruption = build_corruption(corruption_config(kind="symmetric", ratio=0.5, seed=1), source)
    for epoch in (0, 3):
        labels, observed, corrupted = observe_all(corruption, source, epoch)
        assert np.array_equal(corrupted, observed != labels)
        assert int(corrupted.sum()) == n // 2
        # every other class is reachable from every class
        pairs = set(zip(labels[corrupted].tolist(), observed[corrupted].tolist()))
        assert pairs == {(a, b) for a in range(10) for b in range(10) if a != b}


def test_corrupted_source_reads_match_observe():
    n = 300
    source = SyntheticSource(n)
    corruption = build_corruption(corruption_config(kind="symmetric", ratio=0.2, seed=4), source)
    view = CorruptedSource(source, corruption)
    labels, observed, corrupted = observe_all(corruption, source)
    assert len(view) == n
    for i in range(n):
        element = view[i]
        assert element["index"] == i
        assert element["clean_label"] == labels[i]
        assert element["label"] == observed[i]
        assert element["corrupted"] == corrupted[i]
        assert element["image"].shape == (32, 32, 1)
    # the source itself is untouched
    assert np.array_equal(source.labels(), labels)


# ---------------------------------------------------------------- new-label distribution


def _check_conditional_distribution(true, new, prior, allowed_of):
    """For each true class y, new labels follow prior restricted to allowed_of(y), renormalised."""
    critical = {1: 20.0, 2: 25.0, 3: 28.0, 4: 31.0, 5: 33.0, 6: 36.0, 7: 38.0, 8: 40.0, 9: 42.0}  # ~p < 1e-4
    for y in np.unique(true):
        allowed = np.array(allowed_of(int(y)))
        got = new[true == y]
        m = len(got)
        assert set(np.unique(got).tolist()) <= set(allowed.tolist())
        p = prior[allowed] / prior[allowed].sum()
        counts = np.array([np.sum(got == c) for c in allowed])
        expected = m * p
        # every cell within 5 standard errors ...
        se = np.sqrt(m * p * (1 - p))
        assert np.all(np.abs(counts - expected) <= 5 * se + 1), (y, counts, expected)
        # ... and Pearson's chi-square under a generous critical value
        if len(allowed) > 1:
            chi2 = float(np.sum((counts - expected) ** 2 / expected))
            assert chi2 < critical[len(allowed) - 1], (y, chi2, counts, expected)


def test_new_labels_follow_skewed_prior_without_true_class():
    rng = np.random.default_rng(2024)
    k = 5
    prior = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
    n = 200_000
    labels = rng.choice(k, size=n, p=prior).astype(np.int64)
    corruption = LabelFlip(num_examples=n, num_classes=k, ratio=0.5, seed=9, mode="fixed", prior=prior, labels=labels)
    observed, corrupted = corruption.observe(np.arange(n), labels)
    assert corrupted.sum() == n // 2
    true, new = labels[corrupted], observed[corrupted]
    assert np.all(true != new)
    _check_conditional_distribution(true, new, prior, lambda y: [c for c in range(k) if c != y])
    # a uniform draw would look very different: class 0 takes most of the flips away from class 1
    from_1 = new[true == 1]
    assert np.mean(from_1 == 0) > 0.6


def test_empirical_prior_from_build_corruption():
    """build_corruption's 'empirical' prior is the label frequency of the source."""

    class Skewed(SyntheticSource):
        def __init__(self, n):
            super().__init__(n, num_classes=4)
            self._labels = np.random.default_rng(7).choice(4, size=n, p=[0.6, 0.25, 0.1, 0.05]).astype(np.int64)

        def __getitem__(self, index):
            return {"image": self._image, "label": int(self._labels[index])}

        def labels(self):
            return self._labels

    source = Skewed(120_000)
    corruption = build_corruption(corruption_config(kind="symmetric", ratio=0.6, seed=5, prior="empirical"), source)
    labels, observed, corrupted = observe_all(corruption, source)
    prior = np.bincount(labels, minlength=4) / len(labels)
    _check_conditional_distribution(labels[corrupted], observed[corrupted], prior, lambda y: [c for c in range(4) if c != y])

    uniform = build_corruption(corruption_config(kind="symmetric", ratio=0.6, seed=5, prior="uniform"), source)
    labels, observed, corrupted = observe_all(uniform, source)
    _check_conditional_distribution(labels[corrupted], observed[corrupted], np.full(4, 0.25), lambda y: [c for c in range(4) if c != y])


def test_zero_prior_class_is_never_drawn():
    k = 4
    prior = np.array([0.5, 0.5, 0.0, 0.0])
    n = 5000
    labels = np.arange(n) % k
    corruption = LabelFlip(num_examples=n, num_classes=k, ratio=0.9, seed=1, mode="fixed", prior=prior)
    observed, corrupted = corruption.observe(np.arange(n), labels)
    assert np.all(observed[corrupted] != labels[corrupted])
    # class 0 can only go to 1 and class 1 only to 0; classes 2, 3 go to 0 or 1
    assert np.all(observed[corrupted & (labels == 0)] == 1)
    assert np.all(observed[corrupted & (labels == 1)] == 0)
    assert set(observed[corrupted].tolist()) <= {0, 1}


def _check_aggregate_distribution(true, new, prior, allowed_of, num_classes):
    """Pooled over all corrupted examples: the count of each new label c is the sum over examples
    of P(c | y_i) = prior[c] / prior[allowed(y_i)].sum(); every cell within 5 standard errors."""
    expected = np.zeros(num_classes)
    variance = np.zeros(num_classes)
    for y in np.unique(true):
        allowed = np.asarray(allowed_of(int(y)))
        p = np.zeros(num_classes)
        p[allowed] = prior[allowed] / prior[allowed].sum()
        m = int(np.sum(true == y))
        expected += m * p
        variance += m * p * (1 - p)
    counts = np.bincount(new, minlength=num_classes)
    bad = np.flatnonzero(np.abs(counts - expected) > 5 * np.sqrt(variance) + 2)
    assert len(bad) == 0, (bad[:10], counts[bad[:10]], expected[bad[:10]])


def test_many_classes_zipf_prior():
    """1000 classes (ImageNet-sized) with a Zipf prior: paths agree, never own class, prior followed."""
    k = 1000
    prior = 1.0 / np.arange(1, k + 1)
    prior /= prior.sum()
    n = 150_000
    labels = np.random.default_rng(3).choice(k, size=n, p=prior).astype(np.int64)
    corruption = LabelFlip(num_examples=n, num_classes=k, ratio=0.6, seed=12, mode="fixed", prior=prior)
    observed, corrupted = corruption.observe(np.arange(n), labels)
    assert corrupted.sum() == corrupted_count(0.6, n)
    assert np.all(observed[corrupted] != labels[corrupted])
    assert np.all((observed >= 0) & (observed < k))
    for i in range(0, n, 397):
        assert corruption.observe_one(i, int(labels[i])) == (int(observed[i]), bool(corrupted[i]))
    _check_aggregate_distribution(
        labels[corrupted], observed[corrupted], prior, lambda y: [c for c in range(k) if c != y], k
    )
    # from the most frequent class, the second one takes its prior share
    from_0 = observed[corrupted & (labels == 0)]
    p1 = prior[1] / (1 - prior[0])
    assert abs(np.mean(from_0 == 1) - p1) < 5 * np.sqrt(p1 * (1 - p1) / len(from_0))


def test_many_groups_stay_within_their_group():
    """Asymmetric with many groups of different sizes (the shared draw table is offset per group)."""
    k = 600
    rng = np.random.default_rng(4)
    order = rng.permutation(k)
    sizes = rng.integers(2, 25, size=60)
    groups, start = [], 0
    for size in sizes:
        if start + size > 500:
            break
        groups.append(sorted(order[start:start + size].tolist()))
        start += size
    prior = rng.gamma(0.5, size=k)
    prior /= prior.sum()
    n = 120_000
    labels = rng.integers(0, k, size=n)
    corruption = LabelFlip(
        num_examples=n, num_classes=k, ratio=0.7, seed=2, mode="fixed", prior=prior, groups=groups, labels=labels
    )
    observed, corrupted = corruption.observe(np.arange(n), labels)
    group_of = np.full(k, -1)
    for g, group in enumerate(groups):
        group_of[group] = g
    eligible = group_of[labels] >= 0
    assert corruption.num_eligible == eligible.sum()
    assert corrupted.sum() == corrupted_count(0.7, int(eligible.sum()))
    assert not np.any(corrupted & ~eligible)
    assert np.all(observed[corrupted] != labels[corrupted])
    assert np.array_equal(group_of[observed[corrupted]], group_of[labels[corrupted]])
    for i in range(0, n, 293):
        assert corruption.observe_one(i, int(labels[i])) == (int(observed[i]), bool(corrupted[i]))
    _check_aggregate_distribution(
        labels[corrupted], observed[corrupted], prior,
        lambda y: [c for c in groups[group_of[y]] if c != y], k,
    )


def test_dominant_class_prior():
    """The true class holds almost all the prior mass: the rest is still drawn in proportion."""
    prior = np.array([1 - 4.5e-6, 1.0e-6, 2.0e-6, 1.5e-6])
    n = 40_000
    labels = np.zeros(n, np.int64)
    corruption = LabelFlip(num_examples=n, num_classes=4, ratio=0.9, seed=5, mode="fixed", prior=prior)
    observed, corrupted = corruption.observe(np.arange(n), labels)
    assert np.all(observed[corrupted] != 0)
    _check_conditional_distribution(labels[corrupted], observed[corrupted], prior, lambda y: [1, 2, 3])
    for i in range(0, n, 101):
        assert corruption.observe_one(i, 0) == (int(observed[i]), bool(corrupted[i]))


def test_class_that_could_not_flip_under_prior_still_flips_elsewhere():
    """prior [1, 0, 0]: class 0 has nowhere to go under the prior; it must still change class."""
    prior = np.array([1.0, 0.0, 0.0])
    n = 3000
    labels = np.arange(n) % 3
    corruption = LabelFlip(num_examples=n, num_classes=3, ratio=0.9, seed=5, mode="fixed", prior=prior)
    observed, corrupted = corruption.observe(np.arange(n), labels)
    assert corrupted.sum() == 2700
    assert np.all(observed[corrupted] != labels[corrupted])
    assert np.all((observed >= 0) & (observed < 3))
    assert set(observed[corrupted & (labels == 0)].tolist()) <= {1, 2}
    for i in range(0, n, 7):
        assert corruption.observe_one(i, int(labels[i])) == (int(observed[i]), bool(corrupted[i]))


# ---------------------------------------------------------------- asymmetric


def _eligible_classes(groups):
    return {c for g in groups for c in g}


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.9])
def test_asymmetric_fashion_mnist_default_groups(fmnist, ratio):
    cfg = corruption_config(kind="asymmetric", ratio=ratio, seed=2, groups="")
    corruption = build_corruption(cfg, fmnist)
    assert corruption.groups == GROUPS
    labels, observed, corrupted = observe_all(corruption, fmnist)
    eligible = np.isin(labels, sorted(_eligible_classes(GROUPS)))
    assert corruption.num_eligible == int(eligible.sum())
    expected = math.floor(ratio * int(eligible.sum()))
    assert corruption.num_corrupted == expected
    assert int(corrupted.sum()) == expected
    # only classes in groups flip (Trouser, Dress, Bag never), and only within their group
    assert not np.any(corrupted & ~eligible)
    assert np.array_equal(observed[~corrupted], labels[~corrupted])
    group_of = {c: g for g, group in enumerate(GROUPS) for c in group}
    for a, b in zip(labels[corrupted].tolist(), observed[corrupted].tolist()):
        assert a != b and group_of[a] == group_of[b]
    describe = corruption.describe()
    assert describe["kind"] == "asymmetric" and describe["groups"] == GROUPS


def test_asymmetric_new_labels_follow_prior_within_group(fmnist):
    cfg = corruption_config(kind="asymmetric", ratio=0.9, seed=8, groups="")
    corruption = build_corruption(cfg, fmnist)
    labels, observed, corrupted = observe_all(corruption, fmnist)
    prior = np.bincount(labels, minlength=10) / len(labels)
    group_of = {c: g for g, group in enumerate(GROUPS) for c in group}
    _check_conditional_distribution(
        labels[corrupted], observed[corrupted], prior, lambda y: [c for c in GROUPS[group_of[y]] if c != y]
    )


@pytest.mark.parametrize("ratio", [0.05, 0.5])
def test_asymmetric_inline_groups(ratio):
    source = SyntheticSource(5000)
    groups = parse_groups("0,1;2,3", source)
    assert groups == [[0, 1], [2, 3]]
    corruption = build_corruption(corruption_config(kind="asymmetric", ratio=ratio, seed=6, groups="0,1;2,3"), source)
    labels, observed, corrupted = observe_all(corruption, source)
    eligible = np.isin(labels, [0, 1, 2, 3])
    assert corruption.num_eligible == eligible.sum()
    assert corrupted.sum() == math.floor(ratio * eligible.sum())
    assert not np.any(corrupted & ~eligible)
    # two-class groups: a flip is a swap of the pair's label
    swap = {0: 1, 1: 0, 2: 3, 3: 2}
    assert all(swap[a] == b for a, b in zip(labels[corrupted].tolist(), observed[corrupted].tolist()))
    # the scalar path agrees
    for i in range(0, 5000, 7):
        assert corruption.observe_one(i, int(labels[i])) == (int(observed[i]), bool(corrupted[i]))


def test_asymmetric_json_groups_with_class_names(fmnist, tmp_path):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps([["T-shirt/top", "Shirt", "Pullover"], ["Sneaker", 5]]))
    groups = parse_groups(str(path), fmnist)
    assert groups == [[0, 2, 6], [5, 7]]
    corruption = build_corruption(corruption_config(kind="asymmetric", ratio=0.25, seed=1, groups=str(path)), fmnist)
    labels, observed, corrupted = observe_all(corruption, fmnist)
    eligible = np.isin(labels, [0, 2, 6, 5, 7])
    assert corrupted.sum() == math.floor(0.25 * eligible.sum())
    assert not np.any(corrupted & ~eligible)
    group_of = {0: 0, 2: 0, 6: 0, 5: 1, 7: 1}
    assert all(group_of[a] == group_of[b] and a != b for a, b in zip(labels[corrupted], observed[corrupted]))


def test_asymmetric_direct_construction_without_build():
    labels = np.repeat(np.arange(4), 250)
    corruption = LabelFlip(
        num_examples=1000, num_classes=4, ratio=0.5, seed=0, mode="fixed",
        prior=np.full(4, 0.25), groups=[[1, 3]], labels=labels,
    )
    observed, corrupted = corruption.observe(np.arange(1000), labels)
    assert corruption.num_eligible == 500
    assert corrupted.sum() == 250
    assert set(labels[corrupted].tolist()) <= {1, 3}
    assert corruption.observe_one(0, 0) == (0, False)


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("0;1,2", "at least two"),  # a one-class group
        ("0,0;1,2", "at least two"),  # one class twice is still one class
        ("0,1;1,2", "two groups"),  # a class in two groups
        ("0,10", "outside"),  # id out of range
        ("-1,2", "outside"),
        ("a,b", "class ids"),  # not numbers
        ("0,1;", "class ids"),  # empty group
    ],
)
def test_bad_inline_groups(fmnist, spec, fragment):
    with pytest.raises(ConfigError) as err:
        parse_groups(spec, fmnist)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        build_corruption(corruption_config(kind="asymmetric", ratio=0.1, groups=spec), fmnist)


def test_bad_json_groups(fmnist, tmp_path):
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([["T-shirt/top", "Jumper"]]))
    with pytest.raises(ConfigError, match="Jumper"):
        parse_groups(str(unknown), fmnist)

    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match="does not exist"):
        parse_groups(str(missing), fmnist)

    broken = tmp_path / "broken.json"
    broken.write_text("[[0, 1]")
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_groups(str(broken), fmnist)

    single = tmp_path / "single.json"
    single.write_text(json.dumps([["Bag"], ["Sneaker", "Sandal"]]))
    with pytest.raises(ConfigError, match="at least two"):
        parse_groups(str(single), fmnist)

    overlap = tmp_path / "overlap.json"
    overlap.write_text(json.dumps([["Bag", "Sandal"], ["Sneaker", 5]]))
    with pytest.raises(ConfigError, match="two groups"):
        parse_groups(str(overlap), fmnist)

    out_of_range = tmp_path / "range.json"
    out_of_range.write_text(json.dumps([[0, 12]]))
    with pytest.raises(ConfigError, match=r"class 12, which this dataset does not have; .* ids in \[0, 10\)"):
        parse_groups(str(out_of_range), fmnist)


def test_default_groups_missing_is_config_error():
    with pytest.raises(ConfigError, match="data.corruption.groups"):
        build_corruption(corruption_config(kind="asymmetric", ratio=0.1, groups=""), SyntheticSource(100))


def test_kind_swap_on_class_source_is_config_error():
    with pytest.raises(ConfigError, match="data.corruption.kind"):
        build_corruption(corruption_config(kind="swap", ratio=0.1), SyntheticSource(100))


def test_fashion_mnist_class_names_match_groups(fmnist):
    assert fmnist.class_names == CLASS_NAMES
    assert fmnist.num_classes == 10 and len(fmnist) == 10_000
    assert fmnist.default_groups() == GROUPS


# ---------------------------------------------------------------- modes and seeds


def test_fixed_mode_same_every_epoch():
    source = SyntheticSource(2000)
    corruption = build_corruption(corruption_config(kind="symmetric", ratio=0.2, seed=1, mode="fixed"), source)
    _, observed0, corrupted0 = observe_all(corruption, source, 0)
    for epoch in (1, 2, 17):
        _, observed, corrupted = observe_all(corruption, source, epoch)
        assert np.array_equal(corrupted, corrupted0)
        assert np.array_equal(observed, observed0)
    labels = source.labels()
    assert all(corruption.observe_one(i, int(labels[i]), 9) == corruption.observe_one(i, int(labels[i]), 0) for i in range(200))


def test_fixed_mode_asymmetric_same_every_epoch(fmnist):
    corruption = build_corruption(corruption_config(kind="asymmetric", ratio=0.2, seed=1, mode="fixed"), fmnist)
    _, observed0, corrupted0 = observe_all(corruption, fmnist, 0)
    _, observed5, corrupted5 = observe_all(corruption, fmnist, 5)
    assert np.array_equal(corrupted0, corrupted5) and np.array_equal(observed0, observed5)


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_random_mode_differs_by_epoch_with_same_count(kind):
    n = 5000
    source = SyntheticSource(n)
    cfg = corruption_config(kind=kind, ratio=0.2, seed=1, mode="random", groups="0,1,2;3,4")
    corruption = build_corruption(cfg, source)
    sets, counts = [], []
    for epoch in range(4):
        _, _, corrupted = observe_all(corruption, source, epoch)
        sets.append(frozenset(np.flatnonzero(corrupted).tolist()))
        counts.append(len(sets[-1]))
    assert len(set(counts)) == 1 and counts[0] == corruption.num_corrupted > 0
    assert len(set(sets)) == len(sets)
    # the epochs' corrupted sets are roughly independent draws, not shifted copies
    overlap = len(sets[0] & sets[1]) / counts[0]
    assert overlap < 0.5


def test_random_mode_new_labels_change_with_epoch():
    n = 4000
    source = SyntheticSource(n)
    corruption = build_corruption(corruption_config(kind="symmetric", ratio=0.99, seed=1, mode="random"), source)
    _, observed0, corrupted0 = observe_all(corruption, source, 0)
    _, observed1, corrupted1 = observe_all(corruption, source, 1)
    both = corrupted0 & corrupted1
    assert both.sum() > 0.9 * n
    # with 9 possible new labels, an independent redraw keeps about 1/9 of them
    assert np.mean(observed0[both] == observed1[both]) < 0.3


def test_random_mode_deterministic_for_same_seed_and_epoch():
    source = SyntheticSource(3000)
    cfg = corruption_config(kind="symmetric", ratio=0.3, seed=21, mode="random")
    a = build_corruption(cfg, source)
    b = build_corruption(cfg, source)
    for epoch in (0, 7):
        # b has never seen any other epoch: the result must not depend on call history
        _, observed_a, corrupted_a = observe_all(a, source, epoch)
        _, observed_b, corrupted_b = observe_all(b, source, epoch)
        assert np.array_equal(corrupted_a, corrupted_b)
        assert np.array_equal(observed_a, observed_b)
    _, observed_again, corrupted_again = observe_all(a, source, 0)
    _, observed_b0, corrupted_b0 = observe_all(b, source, 0)
    assert np.array_equal(corrupted_again, corrupted_b0) and np.array_equal(observed_again, observed_b0)


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_seeds(kind):
    source = SyntheticSource(4000)

    def corrupted_set(seed):
        cfg = corruption_config(kind=kind, ratio=0.1, seed=seed, groups="0,1;2,3,4")
        _, observed, corrupted = observe_all(build_corruption(cfg, source), source)
        return frozenset(np.flatnonzero(corrupted).tolist()), observed

    sets = [corrupted_set(seed)[0] for seed in range(5)]
    assert len(set(sets)) == 5
    same_a, observed_a = corrupted_set(3)
    same_b, observed_b = corrupted_set(3)
    assert same_a == same_b and np.array_equal(observed_a, observed_b)
    assert same_a == sets[3]


def test_corruption_seed_independent_of_top_level_seed():
    source = SyntheticSource(1000)
    config = base_config()
    config.data.corruption.ratio = 0.1
    a = observe_all(build_corruption(config.data.corruption, source), source)
    config.seed = 99
    b = observe_all(build_corruption(config.data.corruption, source), source)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------- manifest


@pytest.mark.parametrize(
    "kind,mode,epoch", [("symmetric", "fixed", 0), ("symmetric", "random", 3), ("asymmetric", "fixed", 0)]
)
def test_manifest_agrees_with_corrupted_source(kind, mode, epoch):
    n = 600
    source = SyntheticSource(n)
    corruption = build_corruption(corruption_config(kind=kind, ratio=0.15, seed=2, mode=mode, groups="0,1,2;6,7"), source)
    summary, indices = compute_manifest(source, corruption, epoch)
    view = CorruptedSource(source, corruption)
    flips = np.zeros((10, 10), np.int64)
    read_corrupted = []
    for i in range(n):
        element = view.read(i, epoch)
        if element["corrupted"]:
            read_corrupted.append(i)
            flips[element["clean_label"], element["label"]] += 1
        else:
            assert element["label"] == element["clean_label"]
    assert indices.tolist() == read_corrupted  # sorted, same set
    assert np.array_equal(np.asarray(summary["flip_matrix"]), flips)
    matrix = np.asarray(summary["flip_matrix"])
    assert np.all(np.diag(matrix) == 0)
    assert matrix.sum() == summary["num_corrupted"] == len(indices) == corruption.num_corrupted
    assert summary["actual_ratio"] == len(indices) / n
    assert summary["num_examples"] == n
    assert summary["kind"] == kind
    assert summary["epoch"] == (epoch if mode == "random" else None)
    assert summary["class_names"] == source.class_names


def test_manifest_on_fashion_mnist(fmnist):
    corruption = build_corruption(corruption_config(kind="symmetric", ratio=0.075, seed=0), fmnist)
    summary, indices = compute_manifest(fmnist, corruption)
    matrix = np.asarray(summary["flip_matrix"])
    assert summary["num_corrupted"] == math.floor(0.075 * len(fmnist)) == len(indices) == matrix.sum()
    assert np.all(np.diag(matrix) == 0)
    assert np.all(np.diff(indices) > 0)
    # row sums are the corrupted count of each true class
    labels = fmnist.labels()
    assert np.array_equal(matrix.sum(axis=1), np.bincount(labels[indices], minlength=10))


def test_manifest_zero_ratio():
    source = SyntheticSource(50)
    corruption = build_corruption(corruption_config(ratio=0.0), source)
    summary, indices = compute_manifest(source, corruption)
    assert summary["num_corrupted"] == 0 and len(indices) == 0
    assert np.asarray(summary["flip_matrix"]).sum() == 0
