"""Turns ``config.data.corruption`` and a source into the corruption that applies to it."""

from __future__ import annotations

import json
import pathlib

import ml_collections
import numpy as np

from diffcorrupt.data.corruption.caption_swap import CaptionSwap
from diffcorrupt.data.corruption.label_flip import LabelFlip
from diffcorrupt.data.sources.base import ClassSource, Source
from diffcorrupt.errors import ConfigError

Corruption = LabelFlip | CaptionSwap


def build_corruption(corruption_config: ml_collections.ConfigDict, source: Source) -> Corruption:
    cfg = corruption_config
    if source.condition == "text":
        if cfg.kind != "swap":
            raise ConfigError(f"config key 'data.corruption.kind' is '{cfg.kind}', but captions take 'swap'")
        return CaptionSwap(num_examples=len(source), ratio=cfg.ratio, seed=cfg.seed, mode=cfg.mode)
    if cfg.kind not in ("symmetric", "asymmetric"):
        raise ConfigError(
            f"config key 'data.corruption.kind' is '{cfg.kind}', but class labels take 'symmetric' or 'asymmetric'"
        )
    assert isinstance(source, ClassSource)
    if source.num_classes < 2 and cfg.ratio > 0:
        raise ConfigError(
            f"config key 'data.corruption.ratio' is {cfg.ratio}, but the dataset has {source.num_classes} class "
            "and a label can only flip to another class; set the ratio to 0 or use a dataset with more classes"
        )
    groups = parse_groups(cfg.groups, source) if cfg.kind == "asymmetric" else None
    # Labels are read (without images) only when the eligibility or the draw needs them.
    needs_labels = groups is not None or (cfg.ratio > 0 and cfg.prior == "empirical")
    labels = source.labels() if needs_labels else None
    if cfg.prior == "empirical" and labels is not None:
        prior = np.bincount(labels, minlength=source.num_classes) / len(labels)
    else:
        prior = np.full(source.num_classes, 1.0 / source.num_classes)
    return LabelFlip(
        num_examples=len(source),
        num_classes=source.num_classes,
        ratio=cfg.ratio,
        seed=cfg.seed,
        mode=cfg.mode,
        prior=prior,
        groups=groups,
        labels=labels,
    )


def parse_groups(spec: str, source: ClassSource) -> list[list[int]]:
    """'' (the source's default), inline ids 'a,b;c,d', or a JSON file of lists of ids or names."""
    if not spec:
        groups = source.default_groups()
        if groups is None:
            raise ConfigError(
                "config key 'data.corruption.groups' is empty and this dataset ships no default class groups; "
                "set it to class ids like '0,1,2;3,4' or to a JSON file of lists of class ids or names"
            )
    elif pathlib.Path(spec).suffix == ".json":
        path = pathlib.Path(spec)
        if not path.is_file():
            raise ConfigError(f"config key 'data.corruption.groups' names '{spec}', which does not exist; fix the path")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"groups file '{spec}' is not valid JSON ({err}); write a list of lists of class ids or names") from None
        groups = [[source.class_id(item, f"groups file '{spec}'") for item in group] for group in raw]
    else:
        try:
            groups = [[int(c) for c in part.split(",")] for part in spec.split(";")]
        except ValueError:
            raise ConfigError(
                f"config key 'data.corruption.groups' is '{spec}'; write class ids like '0,2,4;5,7,9' or a .json path"
            ) from None
    seen: set[int] = set()
    for group in groups:
        if len(set(group)) < 2:
            raise ConfigError(f"class group {group} in data.corruption.groups needs at least two distinct classes to flip between")
        for c in group:
            if not 0 <= c < source.num_classes:
                raise ConfigError(f"class {c} in data.corruption.groups is outside [0, {source.num_classes}); fix the group")
            if c in seen:
                raise ConfigError(f"class {c} appears in two groups of data.corruption.groups; put each class in one group")
            seen.add(c)
    return [sorted(set(group)) for group in groups]
