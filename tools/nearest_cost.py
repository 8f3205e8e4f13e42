"""The cost of the exact k-nearest-neighbour search behind the memorization measures: one JSON line.

    .venv/bin/python tools/nearest_cost.py --queries=5000 --keys=200000 --dim=512 [--key_chunk=32768 --query_block=2048]

Queries and keys are random unit vectors (the cost does not depend on their values); the keys are
written in chunks to an ``np.memmap`` in a temporary folder, as the 1.28M ImageNet training features
would be read, so this process's memory stays bounded too. The search runs twice: ``first_s`` includes
the one compilation, ``again_s`` does not (``compile_s`` is their difference, within the timing noise
when, as here, compiling takes a fraction of a second). ``pairs_per_s`` is query-key pairs per second
of the second run; ``device_memory_bytes`` is the module's bound per device.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

from diffcorrupt.xla_cpu_flags import add_cpu_flags

REPO = pathlib.Path(__file__).resolve().parent.parent


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cpu() -> str:
    """The CPU as /proc/cpuinfo names it, with its family and model (virtual machines often give only the vendor)."""
    fields: dict[str, str] = {}
    with open("/proc/cpuinfo") as info:
        for line in info:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=200000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--key_chunk", type=int, default=None, help="default: the module's KEY_CHUNK")
    parser.add_argument("--query_block", type=int, default=None, help="default: the module's QUERY_BLOCK")
    flags = parser.parse_args(argv)
    add_cpu_flags()
    import jax

    from diffcorrupt.evaluation import nearest_neighbours as nn

    key_chunk = flags.key_chunk or nn.KEY_CHUNK
    query_block = flags.query_block or nn.QUERY_BLOCK
    rng = np.random.default_rng(0)
    queries = _unit_rows(rng, flags.queries, flags.dim)
    with tempfile.TemporaryDirectory(prefix="nearest-cost-") as folder:
        keys = np.lib.format.open_memmap(f"{folder}/keys.npy", "w+", np.float32, (flags.keys, flags.dim))
        for r0 in range(0, flags.keys, 65536):
            keys[r0 : r0 + 65536] = _unit_rows(rng, min(65536, flags.keys - r0), flags.dim)
        keys.flush()
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            nn.k_nearest(queries, keys, flags.k, key_chunk=key_chunk, query_block=query_block)
            seconds.append(time.perf_counter() - start)
        del keys
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    devices = len(jax.local_devices())
    command = [".venv/bin/python", "tools/nearest_cost.py", *(sys.argv[1:] if argv is None else argv)]
    print(json.dumps({
        "queries": flags.queries, "keys": flags.keys, "dim": flags.dim, "k": flags.k, "key_chunk": key_chunk,
        "query_block": query_block, "devices": devices, "platform": jax.default_backend(),
        "first_s": round(seconds[0], 2), "again_s": round(seconds[1], 2),
        "compile_s": round(seconds[0] - seconds[1], 2),
        "pairs_per_s": float(f"{flags.queries * flags.keys / seconds[1]:.3g}"),
        "device_memory_bytes": nn.device_memory_bytes(flags.queries, flags.dim, flags.k, key_chunk, query_block,
                                                      devices),
        "cpu": _cpu(), "commit": commit.strip() or None, "command": shlex.join(command),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
