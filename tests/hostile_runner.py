"""Reads hostile files in a child process and reports, per file, what the reader did.

``python hostile_runner.py < jobs.json`` reads a list of {"id", "reader", "path", "sentinels"} and
prints one JSON line per job, flushed, with: the outcome ("UserError", "loaded", or the name of any
other exception), the message, the peak of the memory allocated while reading (tracemalloc, which
numpy reports its buffers to; it counts what was asked for, even pages never touched), the seconds
taken, the files that appeared in the sentinel folder, and whether the reader's allowed globals
changed. A child process because a failure here can be a segfault (a deep tuple hashed by C) or
gigabytes of memory; its address space is capped so that such a failure fails the test quickly.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

ADDRESS_SPACE = 6 << 30


def _readers() -> dict:
    from diffcorrupt.data.sources.folders import CaptionFolderSource, ImageFolderSource
    from diffcorrupt.evaluation.sample_files import read_samples
    from diffcorrupt.weights.torch_pickle import load_state_dict

    def every_item(source: object) -> None:
        for index in range(len(source)):
            source[index]

    return {
        "torch": load_state_dict,
        "samples": read_samples,
        "caption_folder": lambda path: every_item(CaptionFolderSource(str(path))),
        "image_folder": lambda path: every_item(ImageFolderSource(str(path))),
    }


def _allowed_fingerprint() -> list:
    """What the file's opcodes could reach in the reader: its allowed globals, as they are now."""
    from diffcorrupt.weights import torch_pickle

    def state(function: object) -> tuple:
        return (function, sorted(getattr(function, "__dict__", {})), getattr(function, "__defaults__", None),
                getattr(function, "__code__", None))

    return [(key, type(value), state(getattr(value, "_function", value))) for key, value in torch_pickle._ALLOWED.items()]


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    from diffcorrupt.errors import UserError

    readers, before = _readers(), _allowed_fingerprint()
    jobs = json.load(sys.stdin)
    tracemalloc.start()
    for job in jobs:
        os.environ["HOSTILE_SENTINELS"] = job["sentinels"]
        gc.collect()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        try:
            readers[job["reader"]](Path(job["path"]))
            outcome, message = "loaded", ""
        except UserError as error:
            outcome, message = "UserError", str(error)
        except BaseException as error:  # report anything else, whatever it is, and go on
            outcome, message = type(error).__name__, str(error)[:2000]
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - base
        print(json.dumps({"id": job["id"], "outcome": outcome, "message": message, "peak": peak, "seconds": seconds,
                          "sentinels": sorted(os.listdir(job["sentinels"])),
                          "tampered": _allowed_fingerprint() != before}), flush=True)


if __name__ == "__main__":
    main()
