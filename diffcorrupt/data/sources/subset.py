"""Subsets of a source: the reproducible small training sets of the memorization regime, and the
class subsets (ImageNet-100) that personalization trains on.

A subset is named by a spec, so that a run's config says exactly which examples it trained on and
a held-out reference can be named the same way:

  ``[a:b]``          examples a..b-1 of the split, in index order;
  ``balanced[a:b]``  positions a..b-1 of the split's class-balanced order, which deals the classes
                     round-robin, each class's examples in index order (a class that runs out drops
                     out of the round). ``balanced[0:500]`` of Fashion-MNIST holds the first 50
                     examples of each class, ``balanced[0:2000]`` contains it, and
                     ``balanced[5000:10000]`` shares no example with either: a held-out set.
  ``classes:LIST``   every example of the listed classes, in index order, with its label unchanged
                     (a model pre-trained on all classes keeps its class table): LIST is a JSON file
                     of class ids or names (ImageNet-100's WordNet ids) or ids inline, ``classes:0,3,7``.

Examples are renumbered 0..n-1 inside a subset, so corruption, shuffling and flips key on the
subset's own indices: eta = 5% of a 500-example subset corrupts 25 of its labels, as the paper's
definition of eta asks.
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np

from diffcorrupt.data.sources.base import ClassSource, Element, Source, TextSource
from diffcorrupt.errors import ConfigError

_SPEC = re.compile(r"^(balanced)?\[(\d+):(\d+)\]$")
EXAMPLE = "balanced[0:500]"
CLASSES = "classes:"


def parse_subset(spec: str, what: str = "config key 'data.subset'") -> tuple[bool, int, int] | str:
    """(balanced, start, stop) of a range spec, or the class list of a ``classes:`` spec; a
    ``ConfigError`` naming ``what`` shows the forms when it does not parse."""
    if spec.startswith(CLASSES) and spec[len(CLASSES):].strip():
        return spec[len(CLASSES):].strip()
    match = _SPEC.match(spec.replace(" ", ""))
    if not match or int(match[2]) >= int(match[3]):
        raise ConfigError(f"{what} is {spec!r}; use '[a:b]' (examples a..b-1), 'balanced[a:b]' (positions a..b-1 "
                          f"of the class-balanced order) with a < b, e.g. '{EXAMPLE}', or 'classes:FILE.json'")
    return bool(match[1]), int(match[2]), int(match[3])


def class_list(text: str, source: ClassSource, spec: str) -> np.ndarray:
    """The class ids a ``classes:`` spec lists: a JSON file of ids or names, or ids inline."""
    where = f"config key 'data.subset' ({spec!r})"
    if text.endswith(".json"):
        path = pathlib.Path(text)
        if not path.is_file():
            raise ConfigError(f"{where} names '{text}', which does not exist; write the class list there (a JSON "
                              "list of class ids or names) or fix the path")
        try:
            items = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{where}: '{text}' is not valid JSON ({err}); write a list of class ids or names") from None
        where = f"class list '{text}'"
    else:
        try:
            items = [int(item) for item in text.split(",")]
        except ValueError:
            raise ConfigError(f"{where} lists '{text}'; write class ids like 'classes:0,3,7' or a .json path") from None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where} holds no list of classes; write a JSON list of class ids or names")
    return np.unique([source.class_id(item, where) for item in items])


def balanced_order(labels: np.ndarray) -> np.ndarray:
    """The indices of ``labels`` dealt round-robin over the classes, each class in index order."""
    labels = np.asarray(labels, np.int64)
    by_class = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    rank = np.empty(len(labels), np.int64)
    rank[by_class] = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.lexsort((labels, rank))


def subset_indices(source: Source, spec: str) -> np.ndarray:
    """The source indices a subset spec selects, in the subset's order."""
    parsed = parse_subset(spec)
    if isinstance(parsed, str):
        if not isinstance(source, ClassSource):
            raise ConfigError(f"config key 'data.subset' is {spec!r}, but the dataset has captions, not classes; "
                              "use a range such as '[0:1000]'")
        return np.flatnonzero(np.isin(source.labels(), class_list(parsed, source, spec)))
    balanced, start, stop = parsed
    if balanced and not isinstance(source, ClassSource):
        raise ConfigError(f"config key 'data.subset' is {spec!r}, but the dataset has captions, not classes; "
                          f"use a plain range such as '[{start}:{stop}]'")
    if stop > len(source):
        raise ConfigError(f"config key 'data.subset' is {spec!r}, but the dataset has {len(source)} examples; "
                          f"end the range at {len(source)} or less")
    order = balanced_order(source.labels()) if balanced else np.arange(len(source))
    return order[start:stop]


def make_subset(source: Source, spec: str) -> Source:
    """``source`` restricted to the examples ``spec`` names (``source`` itself for '')."""
    if not spec:
        return source
    indices = subset_indices(source, spec)
    return ClassSubset(source, indices) if isinstance(source, ClassSource) else TextSubset(source, indices)


class _Subset:
    """The shared part: renumbered random access, and the wrapped source's other attributes (class
    names, latent metadata, the embedded-fallback flag) passed through."""

    def __init__(self, source: Source, indices: np.ndarray):
        self.source = source
        self.indices = np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Element:
        return self.source[int(self.indices[index])]

    def __getattr__(self, name: str):
        if name in ("source", "indices"):  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)


class ClassSubset(_Subset, ClassSource):
    def labels(self) -> np.ndarray:
        return self.source.labels()[self.indices]

    def default_groups(self) -> list[list[int]] | None:
        return self.source.default_groups()


class TextSubset(_Subset, TextSource):
    def caption(self, index: int) -> str:
        return self.source.caption(int(self.indices[index]))
