"""Captioned-shapes caption -> attribute ids: the inverse of ``captioned_shapes.caption_of``.

The evaluator reads what a generated image was asked to show from its caption, so the parse must
agree with the template exactly. Rather than re-implement the grammar (and drift from it), the
inverse is a table built from ``caption_of`` itself over every attribute combination (720 of them).
"""

from __future__ import annotations

import functools
import itertools

from diffcorrupt.data.sources.captioned_shapes import COLOURS, COUNTS, POSITIONS, SHAPES, SIZES, caption_of
from diffcorrupt.errors import DataError

CARDINALITIES = (len(COUNTS), len(SIZES), len(COLOURS), len(SHAPES), len(POSITIONS))


@functools.cache
def _table() -> dict[str, tuple[int, ...]]:
    table = {}
    for attrs in itertools.product(*(range(n) for n in CARDINALITIES)):
        caption = caption_of(attrs)
        if caption in table:  # the template would be ambiguous; no parse could invert it
            raise AssertionError(f"caption_of gives '{caption}' for both {table[caption]} and {attrs}")
        table[caption] = attrs
    return table


def parse_caption(caption: str) -> tuple[int, ...]:
    """The attribute ids (count, size, colour, shape, position) that ``caption`` names; runs of
    whitespace count as one space. Raises ``DataError`` for anything ``caption_of`` cannot produce; the
    caption comes from a file, so the message shows it escaped (no newline or terminal escape of its
    own) and cut to 80 characters."""
    if not isinstance(caption, str):
        raise DataError(f"a caption of type {type(caption).__name__} is not a captioned_shapes caption; captions are "
                        f"text such as '{caption_of((1, 0, 0, 0, 0))}'")
    attrs = _table().get(" ".join(caption.split()))
    if attrs is None:
        shown = ascii(caption[:80]) + ("..." if len(caption) > 80 else "")
        raise DataError(
            f"caption {shown} is not a captioned_shapes caption; expect '<count> <size> <colour> <shape(s)> "
            f"<position>', e.g. '{caption_of((1, 0, 0, 0, 0))}'"
        )
    return attrs
