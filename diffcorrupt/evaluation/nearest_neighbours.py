"""Exact k nearest neighbours (squared L2) of a query set in a key set too large for memory, on the devices.

The paper's memorization measures compare 50,000 samples with the 1.28M ImageNet training features
(512 floats each for CLIP ViT-B/16, 2048 for Inception): the keys alone are 2.6 GB (10.5 GB), and the
full distance matrix would be 256 GB. So the keys (a numpy array or an ``np.memmap``) are streamed to
the devices ``key_chunk`` rows at a time, each read once; every chunk is split over the mesh's devices,
and each query block of ``query_block`` rows meets it in one jitted step: the device's distances to its
share, their ``lax.top_k`` (of the negated distance), and the merge with that device's running best
``k`` of the block. The steps need no communication; the devices' lists are merged once, at the end.
The last chunk is padded with +inf distances, so every step has one shape and compiles once.

Distances are ``|q|^2 - 2 q.k + |k|^2`` in float32, clamped at 0 (round-off): the work is one matmul,
run at ``Precision.HIGHEST`` because the accelerators' default float32 matmul (TF32 on GPUs, one
bfloat16 pass on TPUs) errs by 1e-3 or more in q.k on unit vectors, up to 0.045 in distance near 0,
which would move samples across the 0.12 memorization threshold. On unit vectors the remaining error
near 0 is about 1e-6, 1e-3 in distance.

Memory on each of the S devices is about ``4 * (2 * query_block * key_chunk / S + 2 * key_chunk * D / S
+ N * D + 2 * N * k)`` bytes (``device_memory_bytes``): two distance blocks (the matmul's and top_k's),
two chunks (one computing while the next arrives), the queries and the running best, which stay on
the devices (the keys are the large side). The defaults, 2048 queries x 32768 keys, make the blocks
0.5 GiB and the chunks 0.125 GiB at D=512 (0.5 GiB at D=2048); with the paper's 50,000 queries, 0.1
(0.4) GB more: about 0.75 (1.4) GB on one device, little beside a GPU's memory, where a step of
0.07 (0.27) TFLOP takes a few milliseconds, and on this project's 2-core CPU, where 8192 x 1024 ran
no faster (tools/nearest_cost.py measures it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

KEY_CHUNK = 32768
QUERY_BLOCK = 2048


def device_memory_bytes(n: int, dim: int, k: int, key_chunk: int = KEY_CHUNK, query_block: int = QUERY_BLOCK,
                        devices: int = 1) -> int:
    """The module docstring's bound on each device's memory for ``n`` queries of ``dim`` floats, in bytes."""
    return 4 * (2 * query_block * key_chunk // devices + 2 * key_chunk * dim // devices + n * dim + 2 * n * k)


@functools.lru_cache(maxsize=16)
def _step(mesh: Mesh, k: int, k_local: int):
    """The jitted step for one (mesh, k): cached so that every call with the same shapes reuses one compilation.

    Each device keeps the running best ``k`` of its own share of every chunk, so a step needs no
    communication: XLA:CPU's simulated devices deadlocked on the per-step all-gather of a shared best
    when independent query blocks' steps were queued together. The lists are merged once, at the end.
    """
    axes = mesh.axis_names

    def local(best_d, best_i, q, chunk, ids):
        # This device's share of the chunk; ids are the rows' indices into the keys, -1 for padding.
        sq = jnp.where(ids >= 0, jnp.sum(chunk * chunk, axis=1), jnp.inf)
        d = jnp.sum(q * q, axis=1)[:, None] - 2.0 * jnp.dot(q, chunk.T, precision=jax.lax.Precision.HIGHEST)
        cand_neg, cand_pos = jax.lax.top_k(-jnp.maximum(d + sq[None, :], 0.0), k_local)
        # The running best first: on equal distances top_k keeps the lower position, here the lower key index.
        neg, pos = jax.lax.top_k(jnp.concatenate([-best_d, cand_neg], axis=1), k)
        return -neg, jnp.take_along_axis(jnp.concatenate([best_i, ids[cand_pos]], axis=1), pos, axis=1)

    per_device = P(None, axes)
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(per_device, per_device, P(), P(axes), P(axes)),
                                 out_specs=(per_device, per_device)))


def k_nearest(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    *,
    key_chunk: int = KEY_CHUNK,
    query_block: int = QUERY_BLOCK,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest squared L2 distances from each query (N, D) to ``keys`` (M, D) and their key indices.

    Returns float32 distances (N, k), ascending, and int64 indices (N, k) into ``keys``; on equal
    distances the lower index comes first. ``keys`` may be an ``np.memmap`` (or anything with ``shape``
    whose row slices are arrays): only ``key_chunk`` rows are read at a time. ``mesh`` (default: 1-D over
    ``jax.local_devices()``) splits each chunk over all its devices. The keys are cut into equal chunks of
    at most ``key_chunk`` rows (rounded up to a multiple of the devices), the queries into equal blocks of
    at most ``query_block``, so that padding the last ones costs nearly nothing. Single-host: the chunks
    are put from this process's memory.
    """
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or len(keys.shape) != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries and keys must have shapes (N, D) and (M, D), got {queries.shape} and {keys.shape}")
    (n, dim), m = queries.shape, keys.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k must be between 1 and the number of keys {m}, got {k}")
    if key_chunk < 1 or query_block < 1:
        raise ValueError(f"key_chunk and query_block must be positive, got {key_chunk} and {query_block}")
    if n == 0:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    mesh = mesh if mesh is not None else Mesh(np.array(jax.local_devices()), ("keys",))
    shards = mesh.size
    # Equal chunks and blocks, no larger than asked: padding adds < S keys a chunk, < 1 query a block.
    chunk = -(-m // (-(-m // key_chunk) * shards)) * shards
    block = -(-n // -(-n // query_block))
    step = _step(mesh, k, min(k, chunk // shards))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(mesh.axis_names))
    per_device = NamedSharding(mesh, P(None, mesh.axis_names))

    padded = np.zeros((-(-n // block) * block, dim), np.float32)
    padded[:n] = queries
    q_blocks = [jax.device_put(padded[r : r + block], replicated) for r in range(0, len(padded), block)]
    best = [(jax.device_put(np.full((block, shards * k), np.inf, np.float32), per_device),
             jax.device_put(np.full((block, shards * k), -1, np.int32), per_device))] * len(q_blocks)
    in_flight: list[list] = []  # the results of the last two chunks' steps, to wait on
    for c0 in range(0, m, chunk):
        rows = min(chunk, m - c0)
        host = np.zeros((chunk, dim), np.float32)  # a new buffer each time: the CPU device may alias it
        host[:rows] = keys[c0 : c0 + rows]
        ids = np.full(chunk, -1, np.int32)
        ids[:rows] = np.arange(c0, c0 + rows, dtype=np.int32)
        if len(in_flight) == 2:  # at most two chunks on the devices: one computing while the next arrives
            jax.block_until_ready(in_flight.pop(0))
        on_device, ids_on_device = jax.device_put(host, split), jax.device_put(ids, split)
        best = [step(*b, q, on_device, ids_on_device) for b, q in zip(best, q_blocks)]
        in_flight.append(best)
    distances = np.concatenate([np.asarray(d) for d, _ in best])[:n]
    indices = np.concatenate([np.asarray(i) for _, i in best])[:n].astype(np.int64)
    order = np.lexsort((indices, distances), axis=1)[:, :k]  # the devices' lists: by distance, then index
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(indices, order, axis=1)
