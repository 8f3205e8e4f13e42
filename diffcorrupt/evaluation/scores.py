"""Every number of one sample set in one feature network, against a reference.

Names follow the literature: in Inception features ``fid``, ``sfid`` and ``inception_score``; in a
trained classifier's features ``fd`` (the same Frechet distance, in another space, so not
comparable with published FIDs) and ``accuracy`` (how often the sample shows its condition). Both
give ``precision``/``recall`` (ADM's k-NN manifolds, k = 3), TopP&R's ``top_precision``,
``top_recall`` and ``top_f1``, ``sample_entropy`` (with the reference's own beside it),
``rmd_top1pct`` and ``rmd_mean`` where the reference has classes, and, when training-set features
are given, the paper's ``memorization_ratio`` and ``top5_distance``. In CLIP's space also ``clip_score``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffcorrupt.evaluation.clip_score import clip_score
from diffcorrupt.evaluation.frechet import frechet_distance
from diffcorrupt.evaluation.inception_score import inception_score
from diffcorrupt.evaluation.manifold import precision_recall
from diffcorrupt.evaluation.memorization import memorization
from diffcorrupt.evaluation.reference import FeatureNet, FeatureStats, stats_of
from diffcorrupt.evaluation.rmd import rmd_scores
from diffcorrupt.evaluation.sample_entropy import POINTS_PER_CODE, feature_entropy
from diffcorrupt.evaluation.top_pr import min_points as top_pr_min_points
from diffcorrupt.evaluation.top_pr import top_pr

NEIGHBOURS = 3
ENTROPY_MIN_REFERENCE = 2 * POINTS_PER_CODE  # a codebook of two codes at the least


def score(net: FeatureNet, images: np.ndarray, conditions: np.ndarray | None, reference: FeatureStats,
          train_reference: FeatureStats | None,
          captions: tuple[list[str] | None, str | None] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metrics, and the per-sample distributions a plot needs (``rmd``, where it is computed).
    ``captions`` (CLIP only) are the texts the samples are scored against, or None and why not."""
    features = net(images)
    stats = stats_of(features, {})
    distance = frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma)
    out: dict[str, Any] = {"fid" if net.name == "inception" else "fd": distance}
    if stats.spatial_mu is not None and reference.spatial_mu is not None:
        out["sfid"] = frechet_distance(stats.spatial_mu, stats.spatial_sigma, reference.spatial_mu, reference.spatial_sigma)
    if net.name == "inception" and "logits" in features:
        out["inception_score"], out["inception_score_std"] = inception_score(features["logits"])
    out.update(precision_recall(reference.features, stats.features, k=NEIGHBOURS))
    if len(reference.features) >= ENTROPY_MIN_REFERENCE:
        out.update(feature_entropy(stats.features, reference.features))
    else:
        out["sample_entropy_note"] = (f"not computed: {len(reference.features)} reference images are too few for its "
                                      f"codebook (it needs {ENTROPY_MIN_REFERENCE}); raise --reference_count")
    fewest = top_pr_min_points(stats.features.shape[1])
    if min(len(reference.features), len(stats.features)) >= fewest:
        out.update(top_pr(reference.features, stats.features))
    else:
        out["top_pr_note"] = (f"not computed: its bandwidth estimate needs {fewest} samples and reference images, got "
                              f"{len(stats.features)} and {len(reference.features)}")
    distributions = {}
    if reference.labels is not None:
        labels = conditions if conditions is not None and np.asarray(conditions).dtype.kind in "iu" else None
        wanted = np.arange(max(reference.labels.max(), -1 if labels is None else labels.max()) + 1)
        missing = np.setdiff1d(wanted, reference.labels)
        if len(missing):
            out["rmd_note"] = (f"not computed: classes {missing.tolist()} have no reference images to fit their "
                               "Gaussian; raise --reference_count")
        else:
            rmd, distributions["rmd"] = rmd_scores(reference.features, reference.labels, stats.features, labels)
            out.update(rmd)
    if train_reference is not None:
        out.update(memorization(stats.features, train_reference.features))
    if net.name == "classifier" and conditions is not None:
        out.update(net.accuracy(features["logits"], conditions))
    if captions is not None:
        texts, note = captions
        if texts is None:
            out["clip_score_note"] = note
        else:
            out.update(clip_score(stats.features, net.text_embeddings(texts)))
    return out, distributions
