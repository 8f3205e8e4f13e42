"""Canny control maps and the edge F1 that measures whether samples follow them: edges where the
image has them and at the paper's thresholds only, grey and colour alike, and an F1 that a sample
of its own control scores 1 and a sample that ignores its control (another image, a blank) fails."""

import numpy as np
import pytest

from diffcorrupt.data.edges import canny_edges
from diffcorrupt.data.sources.fashion_mnist import FashionMnistSource
from diffcorrupt.evaluation.edge_fidelity import control_fidelity, edge_f1, partners


def square(contrast: int, size: int = 32) -> np.ndarray:
    image = np.zeros((size, size, 1), np.uint8)
    image[8:24, 8:24] = contrast
    return image


@pytest.fixture(scope="module")
def fashion():
    source = FashionMnistSource("test")
    return np.stack([source[i]["image"] for i in range(100)])


@pytest.fixture(scope="module")
def fashion_labels():
    return FashionMnistSource("test").labels()[:100]


def test_edges_trace_the_boundary_at_the_paper_thresholds_only():
    edges = canny_edges(square(255))
    rows, cols = np.nonzero(edges)
    assert edges.any() and rows.min() >= 6 and rows.max() <= 25 and cols.min() >= 6 and cols.max() <= 25
    assert not edges[11:21, 11:21].any() and not edges[:5].any()  # nothing inside the square or far outside it
    assert not canny_edges(square(20)).any()  # a faint square stays under the low threshold of 100
    assert canny_edges(square(20), 5, 10).any()


def test_grey_and_colour_give_the_same_edges(fashion):
    for image in fashion[:10]:
        np.testing.assert_array_equal(canny_edges(image), canny_edges(np.repeat(image, 3, axis=-1)))
        np.testing.assert_array_equal(canny_edges(image), canny_edges(image[..., 0]))


def test_a_scaled_image_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="uint8 image") as err:
        canny_edges(square(255).astype(np.float32) / 127.5 - 1)
    assert "\n" not in str(err.value)


def test_f1_rewards_following_the_control_and_fails_ignoring_it(fashion):
    controls = np.stack([canny_edges(image) for image in fashion])
    np.testing.assert_array_equal(edge_f1(fashion, controls), 1.0)
    shifted = np.roll(fashion, 1, axis=2)  # one pixel off: inside the tolerance, outside none
    assert edge_f1(shifted, controls).mean() > 0.95 > 0.5 > edge_f1(shifted, controls, tolerance=0).mean()
    others = np.roll(fashion, 1, axis=0)  # a model that draws good images but ignores its control
    assert edge_f1(others, controls).mean() < 0.65
    np.testing.assert_array_equal(edge_f1(np.zeros_like(fashion), controls), 0.0)
    empty = np.zeros_like(controls[:2])
    np.testing.assert_array_equal(edge_f1(np.zeros_like(fashion[:2]), empty), 1.0)


def test_f1_needs_one_control_of_the_sample_size_per_sample(fashion):
    controls = np.stack([canny_edges(image) for image in fashion[:3]])
    with pytest.raises(ValueError, match="one control per sample"):
        edge_f1(fashion[:2], controls)
    with pytest.raises(ValueError, match="draw samples at the control's resolution"):
        edge_f1(np.zeros((3, 16, 16, 1), np.uint8), controls)


def test_control_fidelity_tells_following_the_control_from_drawing_the_class(fashion, fashion_labels):
    controls = np.stack([canny_edges(image) for image in fashion])[..., None].astype(np.uint8) * 255
    follows = control_fidelity(fashion, controls, fashion_labels)
    assert follows["edge_f1"] == 1.0 and follows["num_samples"] == 100
    assert 0.4 < follows["edge_f1_other"] < 0.8  # chance is far above zero: a class shares its outlines
    # A model that draws a garment of the right class but not the one its control outlines:
    other = partners(100, fashion_labels)
    ignores = control_fidelity(fashion[other], controls, fashion_labels)
    assert ignores["edge_f1"] < follows["edge_f1_other"] + 0.05 and ignores["edge_f1"] < 0.8


def test_partners_are_other_samples_of_the_same_class():
    labels = np.array([0, 1, 0, 2, 1, 0])
    np.testing.assert_array_equal(partners(6, labels), [2, 4, 5, 4, 1, 0])  # class 2 has no other: the next
    np.testing.assert_array_equal(partners(3, None), [1, 2, 0])
