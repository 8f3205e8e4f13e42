"""TopP&R on sets whose supports are known: identical, disjoint, and one set with outliers the other lacks;
and, where the authors' ``top_pr`` package is installed, the same numbers as theirs."""

import numpy as np
import pytest

from diffcorrupt.evaluation import reference_memo
from diffcorrupt.evaluation import top_pr as top_pr_module
from diffcorrupt.evaluation.top_pr import balloon_bandwidth, cosine_kde, min_points, project, top_pr


def _cloud(n: int, dim: int = 8, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)) + shift


def test_identical_sets_cover_each_other():
    """Not exactly 1: each set's confidence band comes from its own bootstrap draws."""
    points = _cloud(600)
    scores = top_pr(points, points, random_projection=False)
    assert scores["top_precision"] > 0.9 and scores["top_recall"] > 0.9 and scores["top_f1"] > 0.9


def test_disjoint_sets_score_zero():
    scores = top_pr(_cloud(400), _cloud(400, seed=1, shift=50.0), random_projection=False)
    assert scores == {"top_precision": 0.0, "top_recall": 0.0, "top_f1": 0.0}


def test_a_generated_half_off_the_data_halves_precision_and_keeps_recall():
    real, near = _cloud(800), _cloud(400, seed=1)
    alone = top_pr(real, near, random_projection=False)
    scores = top_pr(real, np.concatenate([near, _cloud(400, seed=2, shift=50.0)]), random_projection=False)
    assert scores["top_precision"] == pytest.approx(alone["top_precision"] / 2, abs=0.05)
    assert scores["top_recall"] > 0.9 and alone["top_recall"] > 0.9


def test_blocks_change_nothing(monkeypatch):
    real, fake = _cloud(500), _cloud(500, seed=1, shift=0.3)
    whole = top_pr(real, fake, random_projection=False)
    monkeypatch.setattr(top_pr_module, "BLOCK", 37)
    monkeypatch.setattr(reference_memo, "_MEMO", {})  # the real side computed again, in blocks of 37
    assert top_pr(real, fake, random_projection=False) == whole


def test_kde_and_bandwidth_by_hand():
    points = np.array([[0.0, 0, 0, 0], [1, 0, 0, 0], [3, 0, 0, 0], [7, 0, 0, 0]])
    # point 0: the later points lie at 1, 3, 7 (k-th nearest, k = 2: 3); point 1: at 2 and 6 (k = 2: 6)
    assert balloon_bandwidth(points, 2) == 3.0  # the lower median of [3, 6]
    h = 2.0
    expected = (np.pi / (4 * h)) ** 4 / 4 * (np.cos(0.0) + np.cos(np.pi / 2 * 1 / h))
    assert cosine_kde(points, points[:1], h)[0, 0] == pytest.approx(expected)


def test_projection_and_size_limits():
    assert project(np.ones((3, 32))).shape == (3, 32) and project(np.ones((3, 2048))).shape == (3, 32)
    assert min_points(2048) == 162 and min_points(8) == 42 and min_points(64, random_projection=False) == 322
    with pytest.raises(ValueError, match="more than 161 points"):
        top_pr(_cloud(100, dim=64), _cloud(100, dim=64))
    with pytest.raises(ValueError, match="low-dimensional path"):
        top_pr(_cloud(100, dim=3), _cloud(100, dim=3))


def test_the_authors_package_agrees():
    """Their package on the same (already low-dimensional) features, their global numpy generator seeded
    as ours, gives the very same three numbers."""
    reference = pytest.importorskip("top_pr", reason="the authors' top-pr package is not installed (test-only peer)")
    real, fake = _cloud(500, dim=6), _cloud(500, dim=6, seed=1, shift=0.4)
    np.random.seed(42)
    theirs = reference.compute_top_pr(real_features=real, fake_features=fake, alpha=0.1, kernel="cosine",
                                      random_proj=False, f1_score=True)
    ours = top_pr(real, fake, random_projection=False)
    assert ours["top_precision"] == pytest.approx(theirs["fidelity"], abs=1e-12)
    assert ours["top_recall"] == pytest.approx(theirs["diversity"], abs=1e-12)
    assert ours["top_f1"] == pytest.approx(theirs["Top_F1"], abs=1e-12)


def test_the_real_side_is_computed_once_per_reference(monkeypatch):
    monkeypatch.setattr(reference_memo, "_MEMO", {})
    calls = []
    monkeypatch.setattr(top_pr_module, "balloon_bandwidth",
                        lambda points, k: calls.append(len(points)) or balloon_bandwidth(points, k))
    real = _cloud(300)
    first = [top_pr(real, _cloud(200, seed=s), random_projection=False) for s in (1, 2)]
    assert calls == [300, 200, 200]  # the reference's bandwidth once, each generated set's once
    monkeypatch.setattr(reference_memo, "_MEMO", {})
    assert [top_pr(real, _cloud(200, seed=s), random_projection=False) for s in (1, 2)] == first
