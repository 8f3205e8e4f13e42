"""``diffcorrupt corruption``: the manifest of what the configured corruption does to the dataset.

Writes ``<out>/corruption.json`` (the summary, the dataset and the full config) and, with
``--save_indices``, ``<out>/corrupted_indices.npy``; prints the summary as one JSON line. A folder
that already holds the manifest of another config is left untouched.
"""

from __future__ import annotations

import json
import pathlib
import sys

import ml_collections
import numpy as np

from diffcorrupt import jobs
from diffcorrupt.config.loading import config_hash
from diffcorrupt.config.validate import validate
from diffcorrupt.data.corruption.manifest import compute_manifest
from diffcorrupt.data.pipeline import corrupted_source
from diffcorrupt.errors import UserError
from diffcorrupt.flag_types import non_negative_int
from diffcorrupt.output_paths import output_folder

MANIFEST = "corruption.json"
INDICES = "corrupted_indices.npy"


def build_manifest(config: ml_collections.ConfigDict, epoch: int = 0) -> tuple[dict, np.ndarray]:
    """(summary, corrupted indices) of the configured dataset and corruption."""
    view = corrupted_source(config)
    summary, indices = compute_manifest(view.source, view.corruption, epoch)
    summary["prior"] = config.data.corruption.prior if view.condition == "class" else None
    summary["dataset"] = {
        "name": config.data.name,
        "split": config.data.split,
        "embedded_fallback": bool(getattr(view.source, "embedded", False)),
    }
    summary["config_hash"] = config_hash(config)
    return summary, indices


def manifest_key(config: ml_collections.ConfigDict, epoch: int) -> tuple[str, int | None]:
    """What a manifest folder is keyed by: the config, and the epoch where the mode makes it matter."""
    return config_hash(config), epoch if config.data.corruption.mode == "random" else None


def check_out(out: pathlib.Path, key: tuple[str, int | None]) -> None:
    """Refuses, before any work, a folder that holds the manifest of another config or epoch."""
    path = output_folder(out, "--out") / MANIFEST
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text()).get("summary", {})
    except (json.JSONDecodeError, OSError):
        previous = {"config_hash": "unreadable"}
    if (previous.get("config_hash"), previous.get("epoch")) != key:
        raise UserError(
            f"'{path}' holds the manifest of another config or epoch (config {previous.get('config_hash')}, "
            f"epoch {previous.get('epoch')}); choose another --out or remove it"
        )


def write_manifest(out: pathlib.Path, config: ml_collections.ConfigDict, summary: dict,
                   indices: np.ndarray | None) -> None:
    """Writes the manifest files (the JSON last, atomically), after ``check_out``."""
    check_out(out, (summary["config_hash"], summary["epoch"]))
    try:
        out.mkdir(parents=True, exist_ok=True)
        if indices is not None:
            np.save(out / INDICES, indices)
        tmp = out / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"summary": summary, "config": config.to_dict()}, indent=1))
        tmp.replace(out / MANIFEST)
    except OSError as err:
        raise UserError(f"cannot write the manifest to '{out}' ({err.strerror or err}); choose a writable --out") from None


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("corruption", __doc__.splitlines()[0])
    parser.add_argument("--out", default="", help="folder for corruption.json (and the indices)")
    parser.add_argument("--save_indices", action="store_true", help=f"also write {INDICES}")
    parser.add_argument("--epoch", type=non_negative_int, default=0, help="epoch to describe when the mode is random")
    flags, config = parser.parse_with_config(argv)
    validate(config)
    if flags.out:
        check_out(pathlib.Path(flags.out), manifest_key(config, flags.epoch))
    summary, indices = build_manifest(config, flags.epoch)
    if flags.out:
        write_manifest(pathlib.Path(flags.out), config, summary, indices if flags.save_indices else None)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.run("corruption", main))
