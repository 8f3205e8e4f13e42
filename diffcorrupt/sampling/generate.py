"""Batches of samples from a restored model, sharded over every device of the mesh.

Sample j is a pure function of (seed, j): its initial noise is drawn from
``fold_in(fold_in(key(seed), j), 0)`` and the noise its sampler adds on the way (DDPM, LCM, DDIM
with eta > 0) from ``fold_in(..., 1)``; its condition is class ``j mod C`` (so any N/C-divisible N is
class-balanced, and every prefix nearly so) or caption ``j mod len(captions)``, or for a
personalized run the control image and label (or caption) of example ``j mod N`` of its controls.
Which batch, which device and which restart computes j therefore changes nothing, and the guidance
scales of one run share their noise, so their samples differ only by the scale.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffcorrupt.data.global_batch import batch_sharding
from diffcorrupt.diffusion.samplers import NOISY_SAMPLERS, guided, sample
from diffcorrupt.errors import UserError
from diffcorrupt.models.control_branch import residuals
from diffcorrupt.parallel.mesh import BATCH_AXES
from diffcorrupt.parallel.sharding import gathered_for_compute
from diffcorrupt.sampling.controls import ControlSet
from diffcorrupt.sampling.quantise import quantise
from diffcorrupt.sampling.restore import RestoredModel

@dataclasses.dataclass(frozen=True)
class SampleSettings:
    sampler: str
    steps: int
    cfg_scale: float
    eta: float
    seed: int

    @property
    def name(self) -> str:
        """The folder name of these settings' samples, e.g. ``dpm50-cfg1.5-seed0``."""
        eta = f"-eta{self.eta:g}" if self.eta else ""
        return f"{self.sampler}{self.steps}{eta}-cfg{self.cfg_scale:g}-seed{self.seed}"


@dataclasses.dataclass
class Conditions:
    """What sample j is conditioned on, for the model and for the sample file."""

    model_input: np.ndarray  # (B,) int32 labels or (B, L) int32 tokens
    labels: np.ndarray | None
    captions: np.ndarray | None


def conditions(restored: RestoredModel, indices: np.ndarray, captions: Sequence[str] | None) -> Conditions:
    if restored.num_classes:
        labels = (indices % restored.num_classes).astype(np.int32)
        return Conditions(labels, labels, None)
    if not captions:
        raise UserError("this run is text-conditional; pass --captions=FILE with one caption per line")
    chosen = np.asarray([captions[j % len(captions)] for j in indices])
    return Conditions(restored.tokenizer.encode_batch(list(chosen)), None, chosen)


def controlled_conditions(restored: RestoredModel, controls: ControlSet,
                          indices: np.ndarray) -> tuple[Conditions, np.ndarray]:
    """(conditions, control maps) of a personalized run's samples: example ``j mod N`` of the
    control set gives sample j its control image and its own clean label or caption."""
    hints, elements = controls.examples(indices)
    return example_conditions(restored, elements), hints


def example_conditions(restored: RestoredModel, elements: Sequence[dict]) -> Conditions:
    """The conditions of dataset examples: each one's own clean label or caption."""
    if restored.num_classes:
        labels = np.asarray([element["label"] for element in elements], np.int32)
        return Conditions(labels, labels, None)
    chosen = np.asarray([element["caption"] for element in elements])
    return Conditions(restored.tokenizer.encode_batch(list(chosen)), None, chosen)


def make_generator(restored: RestoredModel, settings: SampleSettings, mesh: Mesh,
                   batch_size: int) -> Callable[..., np.ndarray]:
    """``generate(indices, model_conditions[, control maps]) -> uint8 images`` for one global batch
    of ``batch_size`` samples, on every process (gathered from the devices that computed them);
    control maps for a personalized run. ``batch_size`` must be a multiple of the data-parallel
    size (``parallel_batch`` rounds up)."""
    config, model, base = restored.config, restored.model, restored.base
    channels = restored.input_shape[-1]
    sharding = batch_sharding(mesh)
    param_shardings = jax.tree.map(lambda x: x.sharding, restored.params)
    base_shardings = None if base is None else jax.tree.map(lambda x: x.sharding, base.params)
    noisy = settings.sampler in NOISY_SAMPLERS or settings.eta > 0

    autoencoder = restored.autoencoder
    decoder_variables = None if autoencoder is None else jax.device_put(autoencoder.params, NamedSharding(mesh, PartitionSpec()))

    def generate(params, base_params, decoder, index: jax.Array, cond: jax.Array, hint: jax.Array | None) -> jax.Array:
        params = gathered_for_compute(params, param_shardings)
        frozen = None if base is None else gathered_for_compute(base_params, base_shardings)  # once, not per step
        keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.key(settings.seed), j))(index)
        noise = jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, 0), restored.input_shape))(keys)

        def net(x, t, cond, null, hint, **kwargs):
            if base is None:
                return model.apply({"params": params}, x, t, cond, null, **kwargs)
            added = residuals(model, params, x, t, cond, null, hint)
            return base.model.apply({"params": frozen}, x, t, cond, null, control=added)

        if config.distill.teacher:  # a distilled student has learnt the guided output: one call per step
            denoise = lambda x, t: net(x, t, cond, jnp.zeros(x.shape[0], bool), hint,  # noqa: E731
                                       guidance=jnp.full(x.shape[:1], settings.cfg_scale, jnp.float32))
        elif settings.cfg_scale == 1.0:  # guidance at scale 1 is the conditional model: skip the null half
            denoise = lambda x, t: net(x, t, cond, jnp.zeros(x.shape[0], bool), hint)  # noqa: E731
        else:
            doubled = jnp.concatenate([cond, cond])
            hints = None if hint is None else jnp.concatenate([hint, hint])
            denoise = guided(lambda x, t, null: net(x, t, doubled, null, hints), settings.cfg_scale, channels)
        rng = jax.vmap(lambda key: jax.random.fold_in(key, 1))(keys) if noisy else None
        images = sample(denoise, noise, restored.schedule, sampler=settings.sampler, steps=settings.steps,
                        eta=settings.eta, prediction=config.diffusion.prediction,
                        learned_sigma=config.model.learned_sigma, rng=rng, origin_steps=config.distill.ddim_timesteps)
        if autoencoder is not None:  # latents -> pixels, on the devices that sampled them
            images = autoencoder.module.apply(decoder, images / autoencoder.config.scale_factor, method="decode")
        return quantise(images)

    base_params = None if base is None else base.params
    hint_spec = None if base is None else jax.ShapeDtypeStruct((batch_size, *restored.control_shape), jnp.float32,
                                                               sharding=sharding)
    with jax.set_mesh(mesh), nn.logical_axis_rules(restored.rules):
        compiled = jax.jit(generate, in_shardings=(param_shardings, base_shardings, None, sharding, sharding, sharding),
                           out_shardings=sharding).lower(
            restored.params, base_params, decoder_variables,
            jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding),
            jax.ShapeDtypeStruct((batch_size, *conditions_shape(restored)), jnp.int32, sharding=sharding), hint_spec,
        ).compile()

    def run(indices: np.ndarray, model_conditions: np.ndarray, hints: np.ndarray | None = None) -> np.ndarray:
        index = _global(indices.astype(np.int32), sharding)
        cond = _global(model_conditions.astype(np.int32), sharding)
        hint = None if hints is None else _global(hints.astype(np.float32), sharding)
        with jax.set_mesh(mesh), nn.logical_axis_rules(restored.rules):
            images = compiled(restored.params, base_params, decoder_variables, index, cond, hint)
        check_batch_sharded(images, mesh)
        return np.asarray(multihost_utils.process_allgather(images, tiled=True))

    return run


def parallel_batch(batch_size: int, mesh: Mesh) -> int:
    """The global batch rounded up to a multiple of the data-parallel size, so that any requested
    batch runs on any mesh (the extra rows are padding, dropped after sampling)."""
    parallel = _data_parallel(mesh)
    return -(-batch_size // parallel) * parallel


def conditions_shape(restored: RestoredModel) -> tuple[int, ...]:
    return () if restored.num_classes else (restored.config.model.text_max_length,)


def check_batch_sharded(images: jax.Array, mesh: Mesh) -> None:
    """Fails loudly if a batch came back replicated: "data-parallel" sampling that silently computes
    the whole batch on every device is the classic way to lose a factor of the device count."""
    expected = batch_sharding(mesh)
    parallel = _data_parallel(mesh)
    if not images.sharding.is_equivalent_to(expected, images.ndim) or (parallel > 1 and images.sharding.is_fully_replicated):
        raise AssertionError(f"sampled batch has sharding {images.sharding}, not the batch split {expected.spec} over {parallel} devices")


def _data_parallel(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[axis] for axis in BATCH_AXES]))


def _global(values: np.ndarray, sharding: jax.sharding.NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds whole (the indices and their
    conditions are computed identically everywhere), each device taking its own rows."""
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])

