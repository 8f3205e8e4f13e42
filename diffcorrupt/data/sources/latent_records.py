"""Pre-encoded latents in ArrayRecord shards: the format, a shard writer, and the source.

A folder holds ``meta.json`` and shards ``latents-<k>.array_record`` listed there in index order.
Each record is a msgpack map (flax.serialization) ``{"index", "latent", "label" | "caption"}``;
``latent`` is either a latent (H, W, C) or, with ``"kind": "moments"``, the KL posterior mean and
log-variance concatenated on the channel axis (H, W, 2C). Record k of the concatenated shards is
example k of the original dataset, and carries that index: corruption keys on it, so pre-encoding
never bakes a corruption into the data.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Iterable

import numpy as np
from flax import serialization

from diffcorrupt.data.sources.base import ClassSource, Element, TextSource
from diffcorrupt.errors import DataError

FORMAT = "diffcorrupt-latents"
VERSION = 1
META_FILE = "meta.json"


def write_shard(path: pathlib.Path, records: Iterable[dict[str, Any]]) -> int:
    """Writes one shard; returns how many records it holds."""
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(path), "group_size:1")
    count = 0
    try:
        for record in records:
            writer.write(serialization.msgpack_serialize(record))
            count += 1
    finally:
        writer.close()
    return count


def write_meta(directory: pathlib.Path, *, shards: list[str], num_examples: int, latent_shape: tuple[int, ...],
               condition: str, kind: str = "latent", num_classes: int = 0, class_names: list[str] | None = None,
               scale_factor: float = 1.0, **extra: Any) -> None:
    """Writes ``meta.json`` last, so a folder without it is known to be incomplete."""
    meta = {
        "format": FORMAT, "version": VERSION, "shards": shards, "num_examples": num_examples,
        "latent_shape": list(latent_shape), "condition": condition, "kind": kind,
        "num_classes": num_classes, "class_names": class_names or [], "scale_factor": scale_factor, **extra,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=1))


def read_meta(data_dir: str) -> dict[str, Any]:
    path = pathlib.Path(data_dir) / META_FILE
    if not path.is_file():
        raise DataError(
            f"no {META_FILE} in data.data_dir '{data_dir}'; point it at a folder written by the latent "
            "pre-encoding tool (an unfinished encoding has no meta.json yet: rerun it to finish)"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"'{path}' is not valid JSON ({err}); rerun the pre-encoding tool") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(f"'{path}' is not a {FORMAT} v{VERSION} folder; re-encode it with this version")
    return meta


class _LatentReader:
    def __init__(self, data_dir: str):
        from grain.sources import ArrayRecordDataSource

        self.meta = read_meta(data_dir)
        paths = [pathlib.Path(data_dir) / shard for shard in self.meta["shards"]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"latent shard '{missing[0]}' listed in meta.json is missing; rerun the pre-encoding tool")
        self._records = ArrayRecordDataSource([str(p) for p in paths])
        if len(self._records) != self.meta["num_examples"]:
            raise DataError(
                f"latent shards in '{data_dir}' hold {len(self._records)} records, meta.json says "
                f"{self.meta['num_examples']}; rerun the pre-encoding tool"
            )

    def __len__(self) -> int:
        return len(self._records)

    def _record(self, index: int) -> dict[str, Any]:
        record = serialization.msgpack_restore(self._records[index])
        if int(record["index"]) != index:
            raise DataError(f"latent record {index} carries index {record['index']}; the shards are out of order, re-encode")
        return record


class LatentClassSource(_LatentReader, ClassSource):
    def __init__(self, data_dir: str):
        super().__init__(data_dir)
        self.num_classes = int(self.meta["num_classes"])
        self.class_names = self.meta["class_names"] or [str(c) for c in range(self.num_classes)]

    def __getitem__(self, index: int) -> Element:
        record = self._record(index)
        return {**_latents(record), "label": int(record["label"])}


class LatentTextSource(_LatentReader, TextSource):
    def __getitem__(self, index: int) -> Element:
        record = self._record(index)
        return {**_latents(record), "caption": str(record["caption"])}


def _latents(record: dict[str, Any]) -> Element:
    """The latent, and the mirrored image's where the encoding stored it."""
    latents = {"latent": np.asarray(record["latent"])}
    if "latent_flipped" in record:
        latents["latent_flipped"] = np.asarray(record["latent_flipped"])
    return latents


def make_latent_source(data_dir: str) -> LatentClassSource | LatentTextSource:
    condition = read_meta(data_dir)["condition"]
    return LatentClassSource(data_dir) if condition == "class" else LatentTextSource(data_dir)
