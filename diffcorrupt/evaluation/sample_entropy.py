"""Sample entropy in a VQ latent space: the paper's measure of diversity (its Theorem 1 says slight
condition corruption raises the entropy of the learned distribution).

Each latent vector x of the generated set is assigned softly to the codebook,
p_k(x) = softmax_k(-||x - c_k||^2 / tau), and the entropy is that of the set's code usage,
H = -sum_k pbar_k log pbar_k with pbar the mean of p(x) over every latent vector of every sample
(nats). A set that uses many codes evenly scores high, one that collapses onto few codes low: the
most it can be is log K. The paper gives the softmax but not tau nor how p is aggregated; averaging
p before the entropy is what makes H a property of the set (the entropy of each p(x) alone measures
how ambiguous one vector's code is, not diversity). ``TAU`` is the default; the metrics JSON records
the tau used, since entropies at different tau are not comparable.

The evaluator's feature networks have no codebook, so ``feature_entropy`` makes one the way a VQ
layer is made: k-means (``CODES`` codes, ``KMEANS_STEPS`` Lloyd steps from distinct reference points,
distances as one matrix product: scipy's ``kmeans2`` took 295 s on 10k x 2048 features) of the
L2-normalised reference features, with tau the
reference's own mean squared distance to its nearest code (one cell's width, so that a vector
leans towards neighbouring cells as much as real data does). It also reports the reference's
entropy under the same codebook: a set of samples as diverse as the data scores about that.
"""

from __future__ import annotations

import numpy as np
import scipy.special

from diffcorrupt.evaluation.manifold import squared_distances
from diffcorrupt.evaluation.reference_memo import from_reference

TAU = 1.0
CODES = 256
POINTS_PER_CODE = 20  # fewer reference features than this per code would leave codes empty or noisy
KMEANS_STEPS = 20


def code_probabilities(latents: np.ndarray, codebook: np.ndarray, tau: float = TAU,
                       batch_size: int = 8192) -> np.ndarray:
    """The mean soft assignment pbar (K,) of ``latents`` (..., D) to ``codebook`` (K, D), in blocks of
    ``batch_size`` vectors so that memory stays at batch_size x K."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    codebook = np.asarray(codebook, np.float64)
    vectors = np.asarray(latents, np.float64).reshape(-1, codebook.shape[-1])
    if not len(vectors):
        raise ValueError("no latent vectors to measure")
    total = np.zeros(len(codebook))
    for start in range(0, len(vectors), batch_size):
        distances = squared_distances(vectors[start:start + batch_size], codebook, np.float64)
        total += scipy.special.softmax(-distances / tau, axis=1).sum(axis=0)
    return total / len(vectors)


def sample_entropy(latents: np.ndarray, codebook: np.ndarray, tau: float = TAU) -> dict[str, float]:
    """The metrics JSON's entry: ``sample_entropy`` (nats), with the tau and codebook size it used."""
    usage = code_probabilities(latents, codebook, tau)
    return {"sample_entropy": float(scipy.special.entr(usage).sum()), "sample_entropy_tau": float(tau),
            "sample_entropy_codes": len(usage)}


def _normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0)


def feature_codebook(real: np.ndarray, codes: int = CODES, seed: int = 0) -> tuple[np.ndarray, float]:
    """A k-means codebook of the L2-normalised ``real`` features (N, D) and its tau (the mean squared
    distance of a real feature to its code); at most one code per ``POINTS_PER_CODE`` features."""
    real = _normalised(real)
    count = min(codes, len(real) // POINTS_PER_CODE)
    if count < 2:
        raise ValueError(f"{len(real)} reference features are too few for a codebook; sample entropy needs "
                         f"{2 * POINTS_PER_CODE}")
    codebook = real[np.random.default_rng(seed).choice(len(real), count, replace=False)]
    for _ in range(KMEANS_STEPS):
        assignment = _nearest(real, codebook)
        sums = np.zeros_like(codebook)
        np.add.at(sums, assignment, real)
        sizes = np.bincount(assignment, minlength=count)
        codebook = np.where(sizes[:, None] > 0, sums / np.maximum(sizes, 1)[:, None], codebook)  # an empty code stays
    assignment = _nearest(real, codebook)
    return codebook, float(np.mean(np.sum((real - codebook[assignment]) ** 2, axis=1)))


def _nearest(points: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    return np.argmin(squared_distances(points, codebook, np.float64), axis=1)


def feature_entropy(samples: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Sample entropy of ``samples`` (N, D) in a feature space whose real points are ``real``."""
    def codebook_and_real_entropy():
        codebook, tau = feature_codebook(real)
        return codebook, tau, sample_entropy(_normalised(real), codebook, tau)["sample_entropy"]

    codebook, tau, real_entropy = from_reference("sample_entropy", real, codebook_and_real_entropy)
    return {**sample_entropy(_normalised(samples), codebook, tau), "sample_entropy_real": real_entropy}
