"""The train state, created already sharded over the mesh.

Parameters are created boxed with their logical axis names; the optimizer state and the EMA copy
are built from the boxed parameters, so they inherit those names, and one ``get_partition_spec``
gives every leaf its sharding. The whole state is then created inside one jit whose outputs have
those shardings: no leaf is ever whole on one device. The PRNG key is kept as raw key data so that
checkpoints hold a plain uint32 array.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from diffcorrupt.models.registry import example_inputs
from diffcorrupt.parallel.sharding import Rules, init_sharded


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array  # raw key data (jax.random.key_data) of the run's base key
    first_nonfinite_step: jax.Array  # int32 scalar, -1 while every loss and gradient was finite

    def key(self) -> jax.Array:
        return jax.random.wrap_key_data(self.rng)


def create_state(model: nn.Module, optimizer: optax.GradientTransformation, input_shape: tuple[int, int, int],
                 seed: int, mesh: Mesh, rules: Rules,
                 control_shape: tuple[int, int, int] | None = None) -> tuple[TrainState, TrainState]:
    """(state, shardings): parameters initialised from ``seed``, sharded by ``rules`` over ``mesh``;
    with ``control_shape``, ``model`` is a control branch reading control images of that shape."""
    if control_shape is None:
        inputs = example_inputs(model, input_shape, batch=1)
    else:
        from diffcorrupt.models.control_branch import example_branch_inputs

        inputs = example_branch_inputs(model, input_shape, control_shape)

    def init() -> TrainState:
        init_key, run_key = jax.random.split(jax.random.key(seed))
        params = model.init({"params": init_key}, *inputs)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, ema_params=params, opt_state=optimizer.init(params),
            rng=jax.random.key_data(run_key), first_nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    return init_sharded(init, mesh, rules)


def abstract_state(state: TrainState) -> TrainState:
    """Shapes, dtypes and shardings of a state: the target a checkpoint is restored into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
