"""Improved precision and recall (Kynkäänniemi et al. 2019) as the ADM evaluator computes them.

Each feature set defines a manifold: the union of balls around its points whose radius is the distance
to the point's k-th nearest neighbour in the same set. Precision is the fraction of generated points
inside the real manifold (fidelity); recall is the fraction of real points inside the generated manifold
(coverage).

Like ADM, everything works on squared L2 distances (radii included), which decides ball membership
exactly as plain distances would, and evaluates them block by block so that memory stays at
``batch_size`` x ``batch_size`` whatever the set sizes.
"""

import numpy as np


def squared_distances(a: np.ndarray, b: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Pairwise squared L2 distances between the rows of ``a`` (M, D) and ``b`` (N, D), in ``dtype``.

    Expands ||a||^2 - 2 a.b + ||b||^2 so that the work is one matmul (float32 by default, as ADM does), and
    clamps the round-off negatives at 0. The absolute error is about the dtype's epsilon times the squared norms.
    """
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    d = a @ b.T
    d *= -2.0  # in place: a 10k x 10k block is 400 MB, and temporaries would double it
    d += np.einsum("ij,ij->i", a, a)[:, None]
    d += np.einsum("ij,ij->i", b, b)[None, :]
    return np.maximum(d, 0.0, out=d)


def k_smallest_squared_distances(queries: np.ndarray, refs: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    """The ``k`` smallest squared distances from each query to ``refs``, ascending: shape (len(queries), k).

    Keeps a running top-k per query across blocks of ``refs`` instead of ADM's full rows, so memory is
    bounded by one ``batch_size`` x ``batch_size`` block even for large reference sets.
    """
    if not 1 <= k <= len(refs):
        raise ValueError(f"k must be between 1 and the number of reference points {len(refs)}, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out = np.empty((len(queries), k), dtype=np.float32)
    for r0 in range(0, len(queries), batch_size):
        best = np.empty((min(batch_size, len(queries) - r0), 0), dtype=np.float32)
        for c0 in range(0, len(refs), batch_size):
            block = squared_distances(queries[r0 : r0 + batch_size], refs[c0 : c0 + batch_size])
            if block.shape[1] > k:
                block.partition(k - 1, axis=1)  # in place, so the block is never copied
            best = np.concatenate([best, block[:, :k]], axis=1)
            if best.shape[1] > k:
                best.partition(k - 1, axis=1)
                best = best[:, :k]
        out[r0 : r0 + batch_size] = np.sort(best, axis=1)
    return out


def manifold_radii(features: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point in the same set.

    The point itself is its own nearest neighbour at distance 0, so this is the (k+1)-th smallest
    distance, as in ADM; an exact duplicate of a point counts as one of its neighbours.
    """
    return k_smallest_squared_distances(features, features, k + 1, batch_size)[:, k]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 10000) -> dict[str, float]:
    """Precision and recall of ``fake`` features (N2, D) against ``real`` features (N1, D).

    A point is inside a manifold when its squared distance to some point of the other set is at most
    that point's squared radius (``<=``, as in ADM). Unlike ADM, whose distance block first runs in
    float16 and falls back to float32 only on overflow, distances here are always float32; only points
    within float16 round-off of a ball's boundary can be decided differently.
    """
    real = np.asarray(real, dtype=np.float32)
    fake = np.asarray(fake, dtype=np.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake features must have shapes (N1, D) and (N2, D), got {real.shape} and {fake.shape}"
        )
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"k={k} needs more than {k} points in each set, got {len(real)} real and {len(fake)} fake")

    real_radii = manifold_radii(real, k, batch_size)
    fake_radii = manifold_radii(fake, k, batch_size)
    real_covered = np.zeros(len(real), dtype=bool)
    fake_covered = np.zeros(len(fake), dtype=bool)
    for r0 in range(0, len(real), batch_size):
        rows = slice(r0, r0 + batch_size)
        for c0 in range(0, len(fake), batch_size):
            cols = slice(c0, c0 + batch_size)
            d = squared_distances(real[rows], fake[cols])
            real_covered[rows] |= np.any(d <= fake_radii[None, cols], axis=1)
            fake_covered[cols] |= np.any(d <= real_radii[rows, None], axis=0)
    return {"precision": float(fake_covered.mean()), "recall": float(real_covered.mean())}
