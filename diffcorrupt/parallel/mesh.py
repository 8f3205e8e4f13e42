"""The one device mesh: axes (data, fsdp, tensor), one of them may be -1 for "the rest".

Across several TPU slices (or GPU nodes), ``mesh.dcn_data`` and ``mesh.dcn_fsdp`` give how many
slices the data and fsdp axes span over the data-centre network; each slice then holds the
per-slice shape, and JAX's hybrid mesh keeps the fast ICI links inside a slice.
"""

from __future__ import annotations

import math

import jax
import ml_collections
from jax.experimental import mesh_utils

from diffcorrupt.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch is split over both; tensor parallel ranks share a batch


DCN_AXES = {"data": "dcn_data", "fsdp": "dcn_fsdp"}  # tensor parallelism stays inside a slice


def _dcn_shape(mesh_config: ml_collections.ConfigDict) -> dict[str, int]:
    dcn = {axis: int(mesh_config[key]) for axis, key in DCN_AXES.items()}
    for axis, size in dcn.items():
        if size < 1:
            raise ConfigError(f"config key 'mesh.{DCN_AXES[axis]}' is {size}; use 1 (one slice) or the number of slices")
    return dcn


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> dict[str, int]:
    """Resolves -1 and checks that the axes multiply to the device count. With several slices
    (``mesh.dcn_*`` > 1) the data and fsdp sizes are per slice and multiply by the slice counts."""
    dcn = _dcn_shape(mesh_config)
    slices = math.prod(dcn.values())
    if num_devices % slices:
        raise ConfigError(f"mesh.dcn_data x mesh.dcn_fsdp = {slices} slices do not divide the {num_devices} devices")
    ici = _ici_shape(mesh_config, num_devices // slices)
    return {axis: ici[axis] * dcn.get(axis, 1) for axis in MESH_AXES}


def _ici_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> dict[str, int]:
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
    dcn = _dcn_shape(mesh_config)
    if math.prod(dcn.values()) == 1:
        return jax.make_mesh(tuple(sizes[axis] for axis in MESH_AXES), MESH_AXES, auto, devices=devices)
    dcn_shape = tuple(dcn.get(axis, 1) for axis in MESH_AXES)
    ici_shape = tuple(sizes[axis] // size for axis, size in zip(MESH_AXES, dcn_shape))
    # Slices are TPU slices where devices know theirs, else processes (GPU nodes).
    by_process = not hasattr(devices[0], "slice_index")
    try:
        grid = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices, process_is_granule=by_process)
    except (ValueError, AssertionError) as err:
        raise ConfigError(
            f"mesh.dcn_data x mesh.dcn_fsdp asks for {math.prod(dcn_shape)} slices, but the devices form "
            f"{'processes' if by_process else 'slices'} that do not match ({err}); set them to the slice count or 1"
        ) from None
    return jax.sharding.Mesh(grid, MESH_AXES, axis_types=auto)
