"""Per-process host batches -> one global ``jax.Array`` per field, split over the batch mesh axes."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from diffcorrupt.parallel.mesh import BATCH_AXES


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def to_global_batch(local_batch: Mapping[str, Any], mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """Numeric fields become global arrays; text fields (captions) stay host-side NumPy.

    Each process passes its own slice of the global batch (what ``make_iterator`` yields there);
    the global batch size is the per-process size times the process count.
    """
    sharding = batch_sharding(mesh)
    out: dict[str, Any] = {}
    for key, value in local_batch.items():
        value = np.asarray(value)
        if value.dtype.kind in "biuf":
            out[key] = jax.make_array_from_process_local_data(sharding, value)
        else:
            out[key] = value
    return out
