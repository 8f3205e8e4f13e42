"""The (data, fsdp, tensor) mesh bug in pure JAX: one matrix product, no diffcorrupt code.

    python tools/xla_spmd_3axis_repro.py [--gspmd]

On 8 devices in a 2x2x2 (data, fsdp, tensor) mesh, ``h @ w`` with ``h`` split over (data x fsdp,
tensor) and ``w`` over (tensor, fsdp), asked for in the layout of ``h``, returns the rows of the
batch shards (0, 1) and (1, 0) swapped. Measured with jax/jaxlib 0.10.2 on XLA:CPU, under Shardy
and GSPMD (``--gspmd``): row errors ``[0 0 7.42 6.34 7.42 6.34 0 0]``.

The fault is in XLA's SPMD partitioner, not in the CPU runtime. Dumping the passes
(``XLA_FLAGS=--xla_dump_to=DIR --xla_dump_hlo_pass_re=.*``) shows the module right after
``spmd-partitioning`` already wrong: the partitioner moves ``h``'s batch shards between devices 2<->4
and 3<->5 (a collective-permute) to line them up with the fsdp groups of ``w``, computes the product
in that order, and slices the result for the original layout without moving the shards back. The
partitioner is the same on every backend, so GPUs and TPUs are expected to see the same (not
checked here: no accelerator was at hand).

Gathering ``w`` over fsdp before the product (``with_sharding_constraint`` to (tensor, None)), the
way FSDP is meant to run, leaves the partitioner nothing to reorder and the result is exact;
diffcorrupt does that for every parameter (``diffcorrupt.parallel.sharding.gathered_for_compute``).

Exit status: 0 when the plain product is right (the bug is fixed in this jax), 1 when it is wrong;
either way the gathered product must be right, else 2.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402


def row_errors(gather: bool) -> np.ndarray:
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))  # Auto axes
    activations = NamedSharding(mesh, P(("data", "fsdp"), "tensor"))
    h = jax.random.normal(jax.random.key(0), (8, 8))
    w = jax.random.normal(jax.random.key(1), (8, 8))

    def product(h, w):
        if gather:
            w = jax.lax.with_sharding_constraint(w, NamedSharding(mesh, P("tensor", None)))
        return h @ w

    out = jax.jit(product, out_shardings=activations)(jax.device_put(h, activations),
                                                       jax.device_put(w, NamedSharding(mesh, P("tensor", "fsdp"))))
    return np.abs(np.asarray(out) - np.asarray(h) @ np.asarray(w)).max(axis=1)


def main() -> int:
    if "--gspmd" in sys.argv:
        jax.config.update("jax_use_shardy_partitioner", False)
    plain, gathered = row_errors(gather=False), row_errors(gather=True)
    print(f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, {jax.default_backend()}, "
          f"{'GSPMD' if '--gspmd' in sys.argv else 'Shardy'}")
    print("per-row |sharded - numpy|, plain:   ", np.round(plain, 4))
    print("per-row |sharded - numpy|, gathered:", np.round(gathered, 4))
    if gathered.max() > 1e-4:
        return 2
    return 0 if plain.max() < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
