"""A line in the log whenever a long stage has been silent for a while, so that nobody watching a
job on a small machine mistakes a compile, a classifier's training or a slow batch for a hang.

The stages log their own progress where they have some to give (steps, shards, batches); this only
fills the silences between those lines, and says how long the stage has been running.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Iterator

from absl import logging as absl_logging


class _LastRecord(logging.Filter):
    """Notes when the last record went out (added last, it sees only those the other filters pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.at = time.monotonic()

    def filter(self, record: logging.LogRecord) -> bool:
        self.at = time.monotonic()
        return True


@contextlib.contextmanager
def heartbeat(label: str, every_s: float = 10.0) -> Iterator[None]:
    """While the block runs, logs ``<label>: still working (N s)`` after each ``every_s`` without a line."""
    logger = absl_logging.get_absl_logger()
    last = _LastRecord()
    logger.addFilter(last)
    began, done = time.monotonic(), threading.Event()

    def beat() -> None:
        while not done.wait(min(0.5, every_s / 4)):
            if time.monotonic() - last.at >= every_s:
                absl_logging.info("%s: still working (%.0f s so far)", label, time.monotonic() - began)

    thread = threading.Thread(target=beat, name=f"heartbeat {label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        logger.removeFilter(last)
