"""Config files are code: ``configs/<name>.py[:<preset>]`` plus ``--config.<key>=<value>`` overrides.

This does what absl's ``config_flags`` does, but turns every mistake (a missing file, an unknown
preset, a misspelt key, a value of the wrong type) into one sentence instead of a traceback, and
needs no global flag registry, so several jobs can be driven from one Python process (tests, demo).
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import json
import pathlib
from typing import Callable, Iterable, Mapping

import ml_collections

from diffcorrupt.errors import ConfigError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value for every leaf."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flat_keys(value, name + "."))
        else:
            out[name] = value
    return out


def suggest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close candidate exists, else ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``path.py[:preset]`` and applies ``key=value`` overrides, in order."""
    path_text, _, preset = spec.partition(":")
    path = pathlib.Path(path_text)
    if not path.is_file():
        raise ConfigError(
            f"config file '{path_text}' does not exist; pass --config=configs/<name>.py[:<preset>], "
            "e.g. --config=configs/fmnist.py:tiny"
        )
    module_spec = importlib.util.spec_from_file_location(f"diffcorrupt_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file '{path_text}' defines no get_config(arg) function; add one")
    config = module.get_config(preset or None)
    for override in overrides:
        apply_override(config, override)
    return config


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
    """Applies one ``key=value``, parsing the value as the type the key already has."""
    key, sep, text = override.partition("=")
    if not sep:
        raise ConfigError(f"override '{override}' has no value; write --config.{key}=<value>")
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise _unknown(config, key)
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise _unknown(config, key)
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"config key '{key}' is a group, not a value; override one of its keys instead")
    try:
        node[leaf] = _parse(text, current)
    except (TypeError, ValueError, SyntaxError) as err:
        raise ConfigError(
            f"config key '{key}' takes a {type(current).__name__}, and '{text}' is not one ({err})"
        ) from None


def _unknown(config: ml_collections.ConfigDict, key: str) -> ConfigError:
    return ConfigError(
        f"unknown config key '{key}'{suggest(key, flat_keys(config))}; "
        "check its spelling against the preset's keys"
    )


def _parse(text: str, current: object) -> object:
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ValueError("expected true or false")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    if current is None:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    value = ast.literal_eval(text)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, type(current)):
        raise TypeError(f"got {type(value).__name__}")
    return value


def select_preset(
    arg: str | None,
    presets: Mapping[str, Callable[[ml_collections.ConfigDict], None]],
    base: ml_collections.ConfigDict,
    where: str,
) -> ml_collections.ConfigDict:
    """Applies the named preset (``default`` when none) to ``base`` and returns it."""
    name = arg or "default"
    if name not in presets:
        raise ConfigError(
            f"unknown preset '{name}' for {where}{suggest(name, presets)}; choose one of "
            + ", ".join(sorted(presets))
        )
    presets[name](base)
    return base


def config_hash(config: ml_collections.ConfigDict) -> str:
    """A short stable hash of the values that differ from the schema's defaults, recorded beside
    results so that they can be traced back. Keys at their default are left out because a key added
    to the schema reproduces the old behaviour at its default: runs, samples and their folders made
    before it keep their hash."""
    from diffcorrupt.config.schema import base_config

    defaults, values = json_leaves(base_config()), json_leaves(config)
    changed = {key: value for key, value in values.items() if key not in defaults or defaults[key] != value}
    blob = json.dumps(changed, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def json_leaves(config: ml_collections.ConfigDict) -> dict[str, object]:
    """Dotted key -> value as JSON would give it back (tuples as lists), so that a config read back
    from a checkpoint compares equal to the one that wrote it."""
    return flat_keys(ml_collections.ConfigDict(json.loads(json.dumps(config.to_dict(), default=str))))
