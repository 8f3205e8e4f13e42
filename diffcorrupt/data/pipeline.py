"""The input pipeline: indices -> per-epoch shuffle -> repeat -> process shard -> per-process batch
of (index, epoch) -> read through the corruption and preprocess -> prefetching iterator with state.

The pipeline moves example *indices* until the last moment: reading, corrupting and preprocessing
happen after the process shard, one batch at a time, on the (index, epoch) pairs the positions
resolve to. That is the same data as corrupting the source before shuffling (the corruption is a
pure function of index and epoch), but only the examples a process needs are ever read, and the
corruption of a whole batch is one vectorised call instead of a Python call per example.

Global batch k is positions [k * B, (k + 1) * B) of one global order, whatever the number of
processes or workers, so the data seen does not depend on the topology. Process p holds the p-th
contiguous block of B / P rows of it: the rows its devices hold of the global array
(``jax.make_array_from_process_local_data``), so that every example keeps its row, and with it
its diffusion noise, on any number of processes.
"""

from __future__ import annotations

import grain
import ml_collections
import numpy as np
from absl import flags

from diffcorrupt.data.corruption.build import build_corruption
from diffcorrupt.data.corruption.corrupted_source import CorruptedSource
from diffcorrupt.data.keyed_random import derive_key
from diffcorrupt.data.preprocess import Preprocess
from diffcorrupt.data.sources.base import Source
from diffcorrupt.data.sources.registry import make_source
from diffcorrupt.errors import ConfigError


class _WithEpoch:
    """Global position k of element i -> (i, epoch), before the process shard renumbers positions."""

    def __init__(self, epoch_length: int):
        self.epoch_length = epoch_length

    def __call__(self, position: int, index: int) -> tuple[int, int]:
        return index, position // self.epoch_length


class _ProcessBlock:
    """One global batch of (indices, epochs) -> this process's contiguous block of it."""

    def __init__(self, process_index: int, process_count: int):
        self.process_index = process_index
        self.process_count = process_count

    def __call__(self, batch: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        size = len(batch[0]) // self.process_count
        rows = slice(self.process_index * size, (self.process_index + 1) * size)
        return batch[0][rows], batch[1][rows]


class _LoadBatch:
    """(indices, epochs) of one per-process batch -> the batch, every field stacked."""

    def __init__(self, source: CorruptedSource, preprocess: Preprocess):
        self.source = source
        self.preprocess = preprocess

    def __call__(self, batch: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        indices, epochs = batch
        elements = self.source.read_many(indices, epochs)
        elements = [self.preprocess(element, int(epoch)) for element, epoch in zip(elements, epochs)]
        return {key: np.asarray([element[key] for element in elements]) for key in elements[0]}


def corrupted_source(config: ml_collections.ConfigDict, source: Source | None = None) -> CorruptedSource:
    """The configured dataset seen through its configured corruption."""
    source = make_source(config.data) if source is None else source
    return CorruptedSource(source, build_corruption(config.data.corruption, source))


def make_dataset(
    config: ml_collections.ConfigDict,
    *,
    process_index: int = 0,
    process_count: int = 1,
    source: CorruptedSource | None = None,
    first_batch: int = 0,
) -> grain.MapDataset:
    """The per-process batched ``MapDataset`` (random access to any future batch) from global batch
    ``first_batch`` on: a run resumed at step s reads on from batch s, whatever the processes,
    devices or workers that trained its first s steps."""
    data = config.data
    source = corrupted_source(config) if source is None else source
    global_batch = config.train.batch_size
    if global_batch % process_count:
        raise ConfigError(
            f"batch size {global_batch} is not divisible by the {process_count} processes; use a multiple of {process_count}"
        )
    ds = grain.MapDataset.range(len(source))
    if data.shuffle:
        ds = ds.shuffle(seed=derive_key(config.seed, "pipeline/shuffle") % 2**32)
    ds = ds.repeat(data.num_epochs or None)
    ds = ds.map_with_index(_WithEpoch(len(source)))
    if data.num_epochs:  # whole global batches only, so every process serves the same steps
        ds = ds[: len(ds) // global_batch * global_batch]
    ds = ds.batch(global_batch, drop_remainder=True)[first_batch:]
    ds = ds.map(_ProcessBlock(process_index, process_count))
    meta = getattr(source.source, "meta", None) or {}
    if data.random_flip and meta and not meta.get("flips"):
        raise ConfigError(f"config key 'data.random_flip' is on, but the latents in '{data.data_dir}' hold no encodings "
                          "of the mirrored images (a mirrored latent is not one); encode again with "
                          "`diffcorrupt encode --flips`, or set data.random_flip=False")
    preprocess = Preprocess(meta.get("image_size", data.image_size), meta.get("channels", data.channels),
                            data.random_flip, config.seed, latent_kind=meta.get("kind", "latent"),
                            scale_factor=meta.get("scale_factor", 1.0), control=data.control)
    return ds.map(_LoadBatch(source, preprocess))


def make_iterator(config: ml_collections.ConfigDict, **kwargs) -> grain.DatasetIterator:
    """A prefetching iterator (threads, and worker processes when configured) with get/set_state;
    ``kwargs`` go to ``make_dataset``."""
    data = config.data
    dataset = make_dataset(config, **kwargs)
    iter_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=data.num_threads, prefetch_buffer_size=data.prefetch))
    if data.num_workers > 0:
        # grain's workers read absl flags; jobs parse theirs with argparse, so absl's stay unparsed.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.num_workers))
    return iter(iter_ds)
