"""Every number of one sample set in one feature network, against a reference.

Names follow the literature: in Inception features ``fid``, ``sfid`` and ``inception_score``; in a
trained classifier's features ``fd`` (the same Frechet distance, in another space, so not
comparable with published FIDs) and ``accuracy`` (how often the sample shows its condition). Both
give ``precision``/``recall`` (ADM's k-NN manifolds, k = 3) and, when training-set features are
given, the paper's ``memorization_ratio`` and ``top5_distance``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffcorrupt.evaluation.frechet import frechet_distance
from diffcorrupt.evaluation.inception_score import inception_score
from diffcorrupt.evaluation.manifold import precision_recall
from diffcorrupt.evaluation.memorization import memorization
from diffcorrupt.evaluation.reference import FeatureNet, FeatureStats, stats_of

NEIGHBOURS = 3


def score(net: FeatureNet, images: np.ndarray, conditions: np.ndarray | None, reference: FeatureStats,
          train_reference: FeatureStats | None) -> dict[str, Any]:
    features = net(images)
    stats = stats_of(features, {})
    distance = frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma)
    out: dict[str, Any] = {"fid" if net.name == "inception" else "fd": distance}
    if stats.spatial_mu is not None and reference.spatial_mu is not None:
        out["sfid"] = frechet_distance(stats.spatial_mu, stats.spatial_sigma, reference.spatial_mu, reference.spatial_sigma)
    if net.name == "inception" and "logits" in features:
        out["inception_score"], out["inception_score_std"] = inception_score(features["logits"])
    out.update(precision_recall(reference.features, stats.features, k=NEIGHBOURS))
    if train_reference is not None:
        out.update(memorization(stats.features, train_reference.features))
    if net.name == "classifier" and conditions is not None:
        out.update(net.accuracy(features["logits"], conditions))
    return out
