"""Logical axis names -> mesh axes, parameters created already sharded, and gathered for compute.

One rules table serves pure data parallelism, FSDP and tensor parallelism: with mesh.fsdp = 1 the
'embed' rule shards nothing, with mesh.tensor = 1 the MLP and head rules shard nothing. A
parameter dimension that the mapped mesh axes do not divide stays replicated (a 3-channel output
convolution on 8 FSDP ranks, say) instead of failing.

FSDP keeps parameters split over the fsdp axis at rest and gathers them where the model computes
(``gathered_for_compute``); the gradient flows back as a reduce-scatter. Saying so explicitly,
rather than leaving the choice to XLA's partitioner, is also what keeps a (data, fsdp, tensor) mesh
correct: left free, the partitioner of jax/jaxlib 0.10.2 reorders the batch shards of a dot whose
weight is split over both fsdp and tensor and never puts them back, so half of the batch comes out
wrong on every backend (``tools/xla_spmd_3axis_repro.py``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffcorrupt.errors import ConfigError
from diffcorrupt.parallel.mesh import MESH_AXES

Rules = Sequence[tuple[str, Any]]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("conv_out", "tensor"),
    ("conv_in", None),
    ("vocab", None),
    ("norm", None),
    ("length", None),
)

# An initialisation runs once, so XLA:CPU's default LLVM optimisation buys it nothing but compile time.
# At level 1 it compiles up to twice as fast to the same bits (DiT, U-Net, text and control models
# checked; tests/test_model_sharding.py keeps checking); level 0 rounds the normal initialiser's
# erfinv differently, by one ulp.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def rules_from_config(text: str) -> Rules:
    """``mesh.rules``: overrides of the default table as 'logical=axis[+axis],...'; an empty right
    side replicates that logical axis, e.g. 'mlp=,heads=' turns tensor parallelism off."""
    rules = dict(DEFAULT_RULES)
    for item in filter(None, (part.strip() for part in text.split(","))):
        logical, sep, axes = item.partition("=")
        names = tuple(a.strip() for a in axes.split("+") if a.strip())
        unknown = [a for a in names if a not in MESH_AXES]
        if not sep or not logical.strip() or unknown:
            raise ConfigError(
                f"config key 'mesh.rules' has '{item}'; write logical=axis[+axis] with axes from "
                f"{', '.join(MESH_AXES)}, e.g. 'embed=fsdp,mlp=tensor'"
            )
        rules[logical.strip()] = names[0] if len(names) == 1 else (names or None)
    return tuple(rules.items())


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Drops the mesh axes of any dimension they do not divide."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = math.prod(mesh.shape[name] for name in names)
        fitted.append(axes if names and dim % size == 0 else None)
    return PartitionSpec(*fitted)


def variable_shardings(abstract_variables: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedShardings for (abstract, logically boxed) variables, as ``jax.eval_shape(model.init, ...)``
    gives. Call it outside ``jax.set_mesh``: inside, unboxing would add sharding constraints."""
    logical = nn.get_partition_spec(abstract_variables)
    mesh_specs = nn.logical_to_mesh(logical, rules)
    shapes = nn.meta.unbox(abstract_variables)
    return jax.tree.map(
        lambda spec, leaf: NamedSharding(mesh, _fit(spec, leaf.shape, mesh)),
        mesh_specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def _without_fsdp(sharding: NamedSharding) -> NamedSharding:
    spec = []
    for axes in sharding.spec:
        names = tuple(name for name in ((axes,) if isinstance(axes, str) else tuple(axes or ())) if name != "fsdp")
        spec.append(names[0] if len(names) == 1 else (names or None))
    return NamedSharding(sharding.mesh, PartitionSpec(*spec))


def gathered_for_compute(variables: Any, shardings: Any) -> Any:
    """``variables`` (laid out as ``shardings``) gathered over the fsdp axis and still split over
    tensor: what a model is applied to inside a jitted function. A no-op where fsdp is 1."""
    return jax.lax.with_sharding_constraint(variables, jax.tree.map(_without_fsdp, shardings))


def init_sharded(init_fn: Callable[[], Any], mesh: Mesh, rules: Rules = DEFAULT_RULES) -> tuple[Any, Any]:
    """Runs ``init_fn`` (returning logically boxed variables) under jit with sharded outputs, so
    no variable is ever materialised whole on one device. Returns (unboxed variables, shardings)."""
    shardings = variable_shardings(jax.eval_shape(init_fn), mesh, rules)
    options = INIT_COMPILER_OPTIONS if mesh.devices.flat[0].platform == "cpu" else None
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        variables = jax.jit(lambda: nn.meta.unbox(init_fn()), out_shardings=shardings).lower().compile(options)()
    return variables, shardings
