"""The one device mesh: axes (data, fsdp, tensor), one of them may be -1 for "the rest"."""

from __future__ import annotations

import math

import jax
import ml_collections

from diffcorrupt.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch is split over both; tensor parallel ranks share a batch


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> dict[str, int]:
    """Resolves -1 and checks that the axes multiply to the device count."""
    sizes = {axis: int(mesh_config[axis]) for axis in MESH_AXES}
    auto = [axis for axis, size in sizes.items() if size == -1]
    if len(auto) > 1:
        raise ConfigError(
            f"mesh axes {', '.join('mesh.' + a for a in auto)} are all -1; set all but one of them to a size"
        )
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise ConfigError(f"config key 'mesh.{axis}' is {size}; use a positive size or -1 for the rest")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if auto:
        if num_devices % fixed:
            raise ConfigError(
                f"the fixed mesh axes multiply to {fixed}, which does not divide the {num_devices} devices; "
                "change mesh.data, mesh.fsdp or mesh.tensor"
            )
        sizes[auto[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ConfigError(
            f"mesh.data x mesh.fsdp x mesh.tensor = {fixed}, but there are {num_devices} devices; "
            "make the product match or set one axis to -1"
        )
    return sizes


def data_parallel_size(mesh_config: ml_collections.ConfigDict, num_devices: int) -> int:
    """How many ways each global batch is split."""
    sizes = mesh_shape(mesh_config, num_devices)
    return math.prod(sizes[axis] for axis in BATCH_AXES)


def make_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> jax.sharding.Mesh:
    """The mesh over ``devices`` (default: all) in the config's axis sizes, laid out by JAX to
    follow the physical topology (ICI rings on TPU)."""
    devices = jax.devices() if devices is None else list(devices)
    sizes = mesh_shape(mesh_config, len(devices))
    # Auto axes: XLA's partitioner propagates shardings from the annotated parameters and batch.
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(tuple(sizes[axis] for axis in MESH_AXES), MESH_AXES, auto, devices=devices)
