"""Control fidelity: do a sample's edges follow the edge map it was conditioned on?

A personalized model's image quality (FD, precision/recall) says nothing of whether it obeys its
control; a model that ignores the control can score well on both. The measure is the F1 of the
sample's Canny edges (the thresholds that drew the control) against the control's edges, each edge
pixel counted as matched when an edge of the other map lies within ``tolerance`` pixels (chessboard
distance): generated edges are rarely on the exact pixel, and one pixel is the usual slack of edge
benchmarks at these sizes. The per-image F1 is returned, so that reports can give its spread.
"""

from __future__ import annotations

import cv2
import numpy as np

from diffcorrupt.data.edges import PAPER_THRESHOLDS, canny_edges


def edge_f1(samples: np.ndarray, controls: np.ndarray, *, tolerance: int = 1,
            thresholds: tuple[int, int] = PAPER_THRESHOLDS) -> np.ndarray:
    """uint8 NHWC samples and bool NHW control edge maps -> float64 (N,) F1. Two empty maps agree
    (F1 1); one empty map against edges scores 0."""
    if len(samples) != len(controls):
        raise ValueError(f"edge F1 needs one control per sample: {len(samples)} samples, {len(controls)} controls")
    kernel = np.ones((2 * tolerance + 1,) * 2, np.uint8)
    scores = np.empty(len(samples))
    for i, (sample, control) in enumerate(zip(samples, controls)):
        drawn = canny_edges(sample, *thresholds)
        wanted = np.asarray(control, bool)
        if drawn.shape != wanted.shape:
            raise ValueError(f"sample {i} is {drawn.shape} but its control is {wanted.shape}; draw samples at the "
                             "control's resolution")
        scores[i] = _f1(drawn, wanted, kernel)
    return scores


def control_fidelity(samples: np.ndarray, controls: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """The mean edge F1 of samples against their own uint8 control edge maps (NHW1, 0 or 255), its
    spread, and the chance level it must be read against: the F1 against another sample's control
    of the same class (the next one; any other sample's without labels). A model that ignores its
    control but draws its class scores that much, which is far above zero: garments of one class
    share their outlines."""
    wanted = controls[..., 0] > 127
    own = edge_f1(samples, wanted)
    other = edge_f1(samples, wanted[partners(len(samples), labels)])
    return {"edge_f1": float(own.mean()), "edge_f1_std": float(own.std()), "edge_f1_other": float(other.mean()),
            "num_samples": len(own)}


def partners(count: int, labels: np.ndarray | None) -> np.ndarray:
    """For each sample, the next other sample (cyclically) of its class, or the next sample when
    the class has no other or there are no labels."""
    order = np.roll(np.arange(count), -1)
    if labels is None:
        return order
    labels = np.asarray(labels)
    for members in (np.flatnonzero(labels == label) for label in np.unique(labels)):
        if len(members) > 1:
            order[members] = np.roll(members, -1)
    return order


def _f1(drawn: np.ndarray, wanted: np.ndarray, kernel: np.ndarray) -> float:
    if not drawn.any() and not wanted.any():
        return 1.0
    if not drawn.any() or not wanted.any():
        return 0.0
    near_wanted = cv2.dilate(wanted.astype(np.uint8), kernel) > 0
    near_drawn = cv2.dilate(drawn.astype(np.uint8), kernel) > 0
    precision = (drawn & near_wanted).sum() / drawn.sum()
    recall = (wanted & near_drawn).sum() / wanted.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))
