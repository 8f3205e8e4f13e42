"""A keyed pseudo-random permutation of [0, n) with O(1) forward and inverse evaluation.

Grain's ``index_shuffle`` permutes indices too, but has no inverse and takes one index at a time.
Corruption needs both directions (is example i among the first K of the permutation? who is the
swap partner at the neighbouring position?) and whole-dataset evaluation for manifests, so this is
a balanced Feistel network over the smallest even bit width covering n, with cycle walking to stay
inside [0, n). Four rounds of a 64-bit mixer make a pseudo-random permutation (Luby-Rackoff); the
expected number of walks is below 4, independent of n.
"""

from __future__ import annotations

import numpy as np

from diffcorrupt.data.keyed_random import MASK64, U64, as_u64, keyed_bits, mix64


class KeyedPermutation:
    """Bijection of [0, n) determined by ``key``; works on ints and on integer arrays."""

    def __init__(self, n: int, key: int, rounds: int = 4):
        if n <= 0:
            raise ValueError(f"a permutation needs n > 0, got {n}")
        self.n = int(n)
        bits = max(2, (self.n - 1).bit_length())
        bits += bits & 1
        self._half = bits // 2
        self._half_mask = (1 << self._half) - 1
        self._round_keys = [keyed_bits(key, r) for r in range(rounds)]

    def _round(self, value: U64, round_key: int) -> U64:
        return mix64(value ^ round_key) & self._half_mask

    def _encrypt(self, x: U64) -> U64:
        left, right = x >> self._half, x & self._half_mask
        for round_key in self._round_keys:
            left, right = right, left ^ self._round(right, round_key)
        return (left << self._half) | right

    def _decrypt(self, x: U64) -> U64:
        left, right = x >> self._half, x & self._half_mask
        for round_key in reversed(self._round_keys):
            left, right = right ^ self._round(left, round_key), left
        return (left << self._half) | right

    def _walk(self, step, index):
        if isinstance(index, np.ndarray):
            out = step(as_u64(index))
            outside = out >= self.n
            while outside.any():
                out[outside] = step(out[outside])
                outside = out >= self.n
            return out.astype(np.int64)
        out = step(int(index) & MASK64)
        while out >= self.n:
            out = step(out)
        return out

    def __call__(self, index: int | np.ndarray) -> int | np.ndarray:
        """Position of ``index`` in the permuted order."""
        return self._walk(self._encrypt, index)

    def inverse(self, position: int | np.ndarray) -> int | np.ndarray:
        """The index found at ``position`` of the permuted order."""
        return self._walk(self._decrypt, position)
