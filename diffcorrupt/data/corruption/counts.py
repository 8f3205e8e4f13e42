"""How many examples a ratio corrupts: floor(ratio * n) in exact decimal arithmetic.

A user who asks for 0.57 of 100 examples means 57, but 0.57 * 100 is 56.99999999999999 in binary
floating point. The ratio is read as the decimal it prints as (its shortest repr), so the count is
what the user wrote, for every n.
"""

from __future__ import annotations

import math
from fractions import Fraction


def corrupted_count(ratio: float, n: int) -> int:
    return math.floor(Fraction(repr(float(ratio))) * int(n))
