"""Caption corruption by swapping: K = floor(ratio * N) rounded down to even examples are paired
and exchange captions.

Pairs are neighbours in a keyed permutation of [0, N): the example at position p < K swaps with
the one at position p XOR 1, found with the permutation's inverse. The relation is symmetric by
construction (i's partner's partner is i), O(1) per index, and never pairs an example with itself.
"""

from __future__ import annotations

import numpy as np

from diffcorrupt.data.corruption.counts import corrupted_count
from diffcorrupt.data.keyed_random import derive_key, keyed_bits
from diffcorrupt.data.permutation import KeyedPermutation


class CaptionSwap:
    def __init__(self, *, num_examples: int, ratio: float, seed: int, mode: str):
        self.num_examples = int(num_examples)
        self.ratio = float(ratio)
        self.seed = int(seed)
        self.mode = mode
        corrupted = corrupted_count(self.ratio, self.num_examples)
        self.num_corrupted = corrupted - corrupted % 2
        self._perm_key = derive_key(seed, "caption_swap/permutation")
        self._perms: dict[int, KeyedPermutation] = {}

    def _perm(self, epoch: int) -> KeyedPermutation:
        epoch = epoch if self.mode == "random" else 0
        if epoch not in self._perms:
            self._perms[epoch] = KeyedPermutation(self.num_examples, keyed_bits(self._perm_key, epoch))
        return self._perms[epoch]

    def partner_one(self, index: int, epoch: int = 0) -> int | None:
        """The example whose caption ``index`` shows, or None when it keeps its own."""
        if self.num_corrupted == 0:
            return None
        perm = self._perm(epoch)
        position = perm(index)
        return perm.inverse(position ^ 1) if position < self.num_corrupted else None

    def partners(self, indices: np.ndarray, epoch: int = 0) -> np.ndarray:
        """Vectorised ``partner_one``, with -1 for examples that keep their caption."""
        indices = np.asarray(indices, np.int64)
        out = np.full(len(indices), -1, np.int64)
        if self.num_corrupted == 0:
            return out
        perm = self._perm(epoch)
        position = perm(indices)
        swapped = position < self.num_corrupted
        out[swapped] = perm.inverse(position[swapped] ^ 1)
        return out

    def describe(self) -> dict:
        return {
            "kind": "swap",
            "mode": self.mode,
            "seed": self.seed,
            "target_ratio": self.ratio,
            "num_examples": self.num_examples,
            "num_corrupted": self.num_corrupted,
            "num_pairs": self.num_corrupted // 2,
        }
