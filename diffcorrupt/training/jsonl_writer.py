"""A clu ``MetricWriter`` that appends scalars to ``metrics.jsonl``: one JSON object per step, for
tools and the report job to read without TensorBoard.

A run killed after its last checkpoint logged steps that its resumption trains and logs again;
opened at the resumed step, the writer first drops those records (and a line the kill cut short),
so every step appears once.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

from clu.metric_writers import interface


class JsonlWriter(interface.MetricWriter):
    def __init__(self, path: str | pathlib.Path, resume_step: int = 0):
        path = pathlib.Path(path)
        if path.exists():
            lines = path.read_text().splitlines(keepends=True)
            kept = [line for line in lines if line.endswith("\n") and _step(line) <= resume_step]
            if len(kept) < len(lines):
                temporary = path.with_name(path.name + ".tmp")
                temporary.write_text("".join(kept))
                temporary.replace(path)
        self._file = open(path, "a", buffering=1)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(record) + "\n")

    def write_summaries(self, step, values, metadata=None) -> None:
        pass

    def write_images(self, step, images) -> None:
        pass

    def write_videos(self, step, videos) -> None:
        pass

    def write_audios(self, step, audios, *, sample_rate) -> None:
        pass

    def write_texts(self, step, texts) -> None:
        pass

    def write_histograms(self, step, arrays, num_buckets=None) -> None:
        pass

    def write_hparams(self, hparams) -> None:
        self._file.write(json.dumps({"hparams": {k: str(v) for k, v in hparams.items()}}) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _step(line: str) -> float:
    """The step of a record (0 for the hparams line); infinite for a line that does not parse."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return float("inf")
