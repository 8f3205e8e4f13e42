"""argparse types for sizes and counts: zero and negative values are refused by the flag's name.

A plain ``type=int`` lets ``--steps=0`` through, where it used to mean "the default" and ran 50
steps, and ``--batch_size=-8`` reach JAX as a shape error after the output folder was written.
Each type raises ``argparse.ArgumentTypeError``, which the job's parser turns into its one sentence
("argument --steps: 0 is not ...").
"""

from __future__ import annotations

import argparse
import math


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """A count or a size: 1 or more."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a count; give 1 or more")
    return value


def positive_ints(text: str) -> tuple[int, ...]:
    """Counts as a comma-separated list (``--steps=1,2,4,8``), each 1 or more."""
    return tuple(positive_int(part) for part in text.split(","))


def non_negative_int(text: str) -> int:
    """A seed, a step or an epoch: 0 or more."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


def positive_float(text: str) -> float:
    """A rate or a scale: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number above 0")
    return value
