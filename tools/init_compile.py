"""The initialisation's compile on CPU, at INIT_COMPILER_OPTIONS and at XLA's default: one JSON line per model.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_ENABLE_COMPILATION_CACHE=false \\
        .venv/bin/python tools/init_compile.py

Each line: seconds of ``create_state`` (trace, compile, run; AdamW, seed 3) at each level, and whether
every leaf of the two states is bitwise the same. Exit 1 if any model's parameters differ.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from diffcorrupt.models.control_branch import make_control
from diffcorrupt.models.registry import make_model
from diffcorrupt.parallel import sharding
from diffcorrupt.training.state import create_state

CONTROL_SHAPE = (32, 32, 3)


def _both(model, shape: tuple[int, int, int], mesh: Mesh, control_shape=None) -> dict:
    cheap = sharding.INIT_COMPILER_OPTIONS
    seconds, leaves = [], []
    for options in (cheap, None):
        sharding.INIT_COMPILER_OPTIONS = options
        start = time.perf_counter()
        state, _ = create_state(model, optax.adamw(1e-3), shape, 3, mesh, sharding.DEFAULT_RULES, control_shape)
        leaves.append(jax.tree.leaves(jax.block_until_ready(state)))
        seconds.append(round(time.perf_counter() - start, 2))
    sharding.INIT_COMPILER_OPTIONS = cheap
    same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(*leaves, strict=True))
    return {"options_s": seconds[0], "default_s": seconds[1], "same_bits": same, "options": cheap}


def main() -> int:
    one = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    dit = make_model("DiT-T/2", input_shape=(8, 8, 4), num_classes=10)
    unet = make_model("LDM-small", input_shape=(8, 8, 4), num_classes=10)
    cases = [
        ("DiT-T/2 classes", lambda: _both(dit, (8, 8, 4), one)),
        ("DiT-T/4 captions", lambda: _both(make_model("DiT-T/4", input_shape=(16, 16, 1), num_classes=0), (16, 16, 1), one)),
        ("DiT-T/2 learned sigma, guidance input", lambda: _both(
            make_model("DiT-T/2", input_shape=(8, 8, 4), num_classes=10, learned_sigma=True, guidance_dim=16), (8, 8, 4), one)),
        ("LDM-small classes", lambda: _both(unet, (8, 8, 4), one)),
        ("LDM-small captions", lambda: _both(make_model("LDM-small", input_shape=(8, 8, 4), num_classes=0), (8, 8, 4), one)),
        ("ControlNet on DiT-T/2", lambda: _both(make_control("controlnet", dit, 8, copies=2), (8, 8, 4), one, CONTROL_SHAPE)),
        ("ControlNet on LDM-small", lambda: _both(make_control("controlnet", unet, 8), (8, 8, 4), one, CONTROL_SHAPE)),
        ("T2I-Adapter on LDM-small", lambda: _both(make_control("t2i-adapter", unet, 8), (8, 8, 4), one, CONTROL_SHAPE)),
    ]
    if len(jax.devices()) >= 8:
        eight = Mesh(np.asarray(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
        cases.insert(1, ("DiT-T/2 classes, 2x2x2 mesh", lambda: _both(dit, (8, 8, 4), eight)))
    same = True
    for name, run in cases:
        row = {"bench": "init_compile", "model": name, "device": jax.devices()[0].device_kind, **run()}
        same &= row["same_bits"]
        print(json.dumps(row), flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
