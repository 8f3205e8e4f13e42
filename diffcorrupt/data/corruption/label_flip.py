"""Class-label corruption: symmetric (to any other class) and asymmetric (within a class group).

Example i is corrupted iff it is eligible (its class is in a group; every class is, for symmetric)
and its position under a keyed permutation of [0, N) is below a threshold T. For symmetric
corruption T = K = floor(ratio * N), so exactly K examples flip. For asymmetric corruption T is the
position of the K-th eligible example (K = floor(ratio * eligible)), found once by one vectorised
pass over the labels, so again exactly K flip. The new label is an inverse-CDF draw, keyed by
(seed, i, epoch), from the class prior restricted to the example's group with its own class left
out. Everything per index is O(1); the mode `random` keys the permutation and draws by epoch.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from diffcorrupt.data.keyed_random import derive_key, keyed_bits, keyed_uniform
from diffcorrupt.data.permutation import KeyedPermutation


class LabelFlip:
    def __init__(
        self,
        *,
        num_examples: int,
        num_classes: int,
        ratio: float,
        seed: int,
        mode: str,
        prior: np.ndarray,
        groups: list[list[int]] | None = None,
        labels: np.ndarray | None = None,
    ):
        self.num_examples = int(num_examples)
        self.num_classes = int(num_classes)
        self.ratio = float(ratio)
        self.seed = int(seed)
        self.mode = mode
        self.symmetric = groups is None
        groups = [list(range(num_classes))] if groups is None else groups
        self.groups = groups
        self._perm_key = derive_key(seed, "label_flip/permutation")
        self._draw_key = derive_key(seed, "label_flip/new_label")
        self._group_of = np.full(num_classes, -1, np.int64)
        self._candidates: list[np.ndarray] = [np.empty(0, np.int64)] * num_classes
        self._cdf: list[list[float]] = [[]] * num_classes
        for g, group in enumerate(groups):
            self._group_of[group] = g
            for y in group:
                candidates = np.array([c for c in group if c != y], np.int64)
                weights = np.asarray(prior, np.float64)[candidates]
                if weights.sum() <= 0:  # the prior gives the whole group no mass: fall back to uniform
                    weights = np.ones_like(weights)
                self._candidates[y] = candidates
                self._cdf[y] = (np.cumsum(weights) / weights.sum()).tolist()
        if self.symmetric:
            self._eligible_index = None
            self.num_eligible = self.num_examples
        else:
            self._eligible_index = np.flatnonzero(self._group_of[np.asarray(labels)] >= 0)
            self.num_eligible = len(self._eligible_index)
        self.num_corrupted = math.floor(self.ratio * self.num_eligible)
        self._per_epoch: dict[int, tuple[KeyedPermutation, int]] = {}

    def _epoch(self, epoch: int) -> tuple[KeyedPermutation, int]:
        """The permutation and threshold in force for an epoch (one for all epochs when fixed)."""
        epoch = epoch if self.mode == "random" else 0
        if epoch not in self._per_epoch:
            perm = KeyedPermutation(self.num_examples, keyed_bits(self._perm_key, epoch))
            if self.symmetric or self.num_corrupted == 0:
                threshold = self.num_corrupted
            else:
                positions = perm(self._eligible_index)
                threshold = int(np.partition(positions, self.num_corrupted - 1)[self.num_corrupted - 1]) + 1
            self._per_epoch[epoch] = (perm, threshold)
        return self._per_epoch[epoch]

    def observe_one(self, index: int, label: int, epoch: int = 0) -> tuple[int, bool]:
        """(observed label, corrupted?) of one example."""
        if self.num_corrupted == 0 or self._group_of[label] < 0:
            return label, False
        perm, threshold = self._epoch(epoch)
        if perm(index) >= threshold:
            return label, False
        u = keyed_uniform(self._draw_key, index, epoch if self.mode == "random" else 0)
        cdf = self._cdf[label]
        return int(self._candidates[label][min(bisect.bisect_right(cdf, u), len(cdf) - 1)]), True

    def observe(self, indices: np.ndarray, labels: np.ndarray, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised ``observe_one``: (observed labels, corrupted mask)."""
        indices = np.asarray(indices, np.int64)
        labels = np.asarray(labels, np.int64)
        observed = labels.copy()
        if self.num_corrupted == 0:
            return observed, np.zeros(len(labels), bool)
        perm, threshold = self._epoch(epoch)
        corrupted = (self._group_of[labels] >= 0) & (perm(indices) < threshold)
        u = keyed_uniform(self._draw_key, indices, epoch if self.mode == "random" else 0)
        for y in np.unique(labels[corrupted]):
            rows = corrupted & (labels == y)
            j = np.searchsorted(self._cdf[y], u[rows], side="right")
            observed[rows] = self._candidates[y][np.minimum(j, len(self._cdf[y]) - 1)]
        return observed, corrupted

    def describe(self) -> dict:
        return {
            "kind": "symmetric" if self.symmetric else "asymmetric",
            "mode": self.mode,
            "seed": self.seed,
            "target_ratio": self.ratio,
            "num_examples": self.num_examples,
            "num_eligible": self.num_eligible,
            "num_corrupted": self.num_corrupted,
            "groups": None if self.symmetric else self.groups,
        }
