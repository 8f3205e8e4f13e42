"""Class-label corruption: symmetric (to any other class) and asymmetric (within a class group).

Example i is corrupted iff it is eligible (its class is in a group; every class is, for symmetric)
and its position under a keyed permutation of [0, N) is below a threshold T. For symmetric
corruption T = K = floor(ratio * N), so exactly K examples flip. For asymmetric corruption T is the
position of the K-th eligible example (K = floor(ratio * eligible)), found once by one vectorised
pass over the labels, so again exactly K flip. The new label is an inverse-CDF draw, keyed by
(seed, i, epoch), from the class prior restricted to the example's group with its own class left
out: a uniform u is scaled onto the group's cumulative prior with the true class's interval cut
out, so one table of O(classes) serves every class (no classes x classes table) and a whole batch
is one ``searchsorted``. Everything per index is O(1); the mode `random` keys the permutation and
the draws by epoch.
"""

from __future__ import annotations

import bisect

import numpy as np

from diffcorrupt.data.corruption.counts import corrupted_count
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
        self._build_draw_table(groups, np.asarray(prior, np.float64))
        if self.symmetric:
            self._eligible_index = None
            self.num_eligible = self.num_examples
        else:
            self._eligible_index = np.flatnonzero(self._group_of[np.asarray(labels)] >= 0)
            self.num_eligible = len(self._eligible_index)
        self.num_corrupted = corrupted_count(self.ratio, self.num_eligible)
        self._per_epoch: dict[int, tuple[KeyedPermutation, int]] = {}

    def _build_draw_table(self, groups: list[list[int]], prior: np.ndarray) -> None:
        """Per group, its members and their cumulative prior (offset by the group id, so all
        groups share one sorted table); per class, its weight, the mass before it, its group's
        size and start in the table, and its position in the group. Kept as Python lists for the
        per-element path and as arrays for the batched one, which compute the same floats."""
        members, cumulative = [], []
        per_class = np.zeros((5, self.num_classes))
        for g, group in enumerate(groups):
            weights = prior[group]
            if any(weights.sum() - w <= 0 for w in weights):  # a class could not flip: use uniform
                weights = np.ones(len(group))
            weights = weights / weights.sum()
            cum = np.cumsum(weights)
            for position, c in enumerate(group):
                before = cum[position - 1] if position else 0.0
                per_class[:, c] = (weights[position], before, len(group), len(members), position)
            self._group_of[group] = g
            members += group
            cumulative += (g + cum).tolist()
        self._members, self._members_array = members, np.asarray(members, np.int64)
        self._cumulative, self._cumulative_array = cumulative, np.asarray(cumulative)
        self._group_list = self._group_of.tolist()
        weight, before, size, start, position = per_class
        self._per_class_array = (weight, before, size.astype(np.int64), start.astype(np.int64), position.astype(np.int64))
        self._per_class = tuple(table.tolist() for table in self._per_class_array)

    def _effective(self, epoch: int) -> int:
        """The epoch that keys the draws: every epoch shares epoch 0's when the mode is fixed."""
        return epoch if self.mode == "random" else 0

    def _epoch(self, epoch: int) -> tuple[KeyedPermutation, int]:
        """The permutation and threshold in force for an epoch."""
        epoch = self._effective(epoch)
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
        if self.num_corrupted == 0 or self._group_list[label] < 0:
            return label, False
        perm, threshold = self._epoch(epoch)
        if perm(index) >= threshold:
            return label, False
        u = keyed_uniform(self._draw_key, index, self._effective(epoch))
        weight, before, size, start, position = (table[label] for table in self._per_class)
        v = u * (1.0 - weight)
        if v >= before:
            v += weight
        j = min(bisect.bisect_right(self._cumulative, self._group_list[label] + v) - start, size - 1)
        if j == position:  # only by rounding at an interval's edge: take the neighbour
            j = position - 1 if position == size - 1 else position + 1
        return self._members[start + j], True

    def observe(self, indices: np.ndarray, labels: np.ndarray, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised ``observe_one``: (observed labels, corrupted mask)."""
        indices = np.asarray(indices, np.int64)
        labels = np.asarray(labels, np.int64)
        observed = labels.copy()
        if self.num_corrupted == 0:
            return observed, np.zeros(len(labels), bool)
        perm, threshold = self._epoch(epoch)
        corrupted = (self._group_of[labels] >= 0) & (perm(indices) < threshold)
        rows = np.flatnonzero(corrupted)
        y = labels[rows]
        u = keyed_uniform(self._draw_key, indices[rows], self._effective(epoch))
        weight, before, size, start, position = (table[y] for table in self._per_class_array)
        v = u * (1.0 - weight)
        v = np.where(v >= before, v + weight, v)
        j = np.searchsorted(self._cumulative_array, self._group_of[y] + v, side="right") - start
        j = np.minimum(j, size - 1)
        j = np.where(j == position, np.where(position == size - 1, position - 1, position + 1), j)
        observed[rows] = self._members_array[start + j]
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
