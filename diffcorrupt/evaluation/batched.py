"""Running a feature network over many inputs in fixed-size, device-sharded batches.

One batch shape means one compilation per network, whatever the number of inputs: the last batch is
padded with zeros and the padding's outputs dropped. The batch is split over the sharding's devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def map_in_batches(forward: Callable[[jax.Array], dict[str, jax.Array]], inputs: np.ndarray, batch_size: int,
                   sharding: jax.sharding.Sharding, empty: dict[str, tuple[int, ...]],
                   prepare: Callable[[np.ndarray], np.ndarray] = np.asarray) -> dict[str, np.ndarray]:
    """``forward``'s outputs for every row of ``inputs``, as float32 numpy; ``prepare`` turns a host
    batch into what goes to the devices (CLIP's resize); ``empty`` gives each output's row shape,
    for zero inputs."""
    chunks: dict[str, list[np.ndarray]] = {key: [np.zeros((0, *shape), np.float32)] for key, shape in empty.items()}
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        count = len(batch)
        if count < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - count, *batch.shape[1:]), batch.dtype)])
        out = forward(jax.device_put(prepare(batch), sharding))
        for key, value in jax.device_get(out).items():
            chunks[key].append(np.asarray(value[:count]))
    return {key: np.concatenate(values) for key, values in chunks.items()}


class ShardedNet:
    """A network's parameters replicated over a 1-D mesh (default: this process's own devices), and its
    inputs mapped in batches split over it; the batch is rounded up so that every device gets the same share."""

    def __init__(self, params: Any, batch_size: int, mesh: Mesh | None = None):
        self.mesh = mesh if mesh is not None else Mesh(np.array(jax.local_devices()), ("data",))
        self.batch_size = -(-batch_size // self.mesh.devices.size) * self.mesh.devices.size
        self.params = jax.device_put(params, NamedSharding(self.mesh, PartitionSpec()))
        self._batch = NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names))

    def map(self, forward: Callable[[Any, jax.Array], dict[str, jax.Array]], inputs: np.ndarray,
            empty: dict[str, tuple[int, ...]], prepare: Callable[[np.ndarray], np.ndarray] = np.asarray
            ) -> dict[str, np.ndarray]:
        """``forward(params, batch)`` over every row of ``inputs`` (see ``map_in_batches``)."""
        return map_in_batches(lambda batch: forward(self.params, batch), inputs, self.batch_size, self._batch, empty,
                              prepare)
