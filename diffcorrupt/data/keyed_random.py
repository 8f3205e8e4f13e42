"""Counter-based random numbers: every draw is a pure function of (key, counters).

Corruption, augmentation and procedural data must not depend on how many processes, workers or
restarts touched an example, so nothing here carries state. One code path serves Python ints (the
per-element path inside the input pipeline, where NumPy scalar overhead would dominate) and
``np.uint64`` arrays (whole-dataset manifests and vectorised checks); both give identical bits.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15

U64 = TypeVar("U64", int, np.ndarray)


def mix64(x: U64) -> U64:
    """SplitMix64's finalizer: a bijective avalanche of 64 bits."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def as_u64(value: int | np.ndarray) -> int | np.ndarray:
    """Brings an index (or an array of them) into the domain ``mix64`` works on."""
    if isinstance(value, np.ndarray):
        return value.astype(np.uint64)
    return int(value) & MASK64


def keyed_bits(key: int, *counters: int | np.ndarray) -> int | np.ndarray:
    """64 pseudo-random bits for (key, counters...); arrays broadcast like NumPy."""
    h = mix64((int(key) + _GOLDEN) & MASK64)
    for counter in counters:
        h = mix64(((h ^ as_u64(counter)) + _GOLDEN) & MASK64)
    return h


def keyed_uniform(key: int, *counters: int | np.ndarray) -> float | np.ndarray:
    """A uniform draw in [0, 1) with 53 bits of precision."""
    bits = keyed_bits(key, *counters)
    if isinstance(bits, np.ndarray):
        return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (bits >> 11) * 2.0**-53


def derive_key(seed: int, purpose: str) -> int:
    """A 64-bit key for one purpose of one seed, so that streams never collide across purposes."""
    h = int(seed) & MASK64
    for byte in purpose.encode():
        h = mix64((h ^ byte) + _GOLDEN & MASK64)
    return h
