"""A run's pieces, built once: mesh, model, sharded state and the step compiled for the global batch.

The train job and the train-step benchmark both start here, so what is benchmarked is the step
that trains. A run with a ``distill.teacher`` compiles the consistency-distillation step instead,
with the teacher's weights as a third argument (never part of the state or its checkpoints), and
starts from the teacher's weights.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import Mesh

from diffcorrupt.data.global_batch import batch_sharding
from diffcorrupt.diffusion.schedules import Schedule, make_schedule
from diffcorrupt.models.registry import model_from_config
from diffcorrupt.models.tokenizer import Tokenizer, tokenizer_from_config
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.parallel.sharding import Rules, gathered_for_compute, rules_from_config
from diffcorrupt.training.batches import abstract_batch
from diffcorrupt.training.consistency_objective import make_consistency_loss
from diffcorrupt.training.objective import make_loss_fn
from diffcorrupt.training.optimizer import make_optimizer
from diffcorrupt.training.state import TrainState, create_state
from diffcorrupt.training.step import make_train_step
from diffcorrupt.training.teacher import load_teacher, student_from_teacher


@dataclasses.dataclass
class CompiledRun:
    mesh: Mesh
    rules: Rules
    model: nn.Module
    tokenizer: Tokenizer | None  # captions -> tokens; None for class labels
    schedule: Schedule
    state: TrainState
    batch_spec: dict[str, jax.ShapeDtypeStruct]
    step: Any  # the compiled step: (state, global batch, *step_args) -> (state, metrics); donates the state
    compile_s: float
    step_flops: float  # XLA's count for the partitioned step, i.e. one device's work
    step_args: tuple = ()  # what the step takes after the batch: the teacher's weights when distilling


def compile_run(config: ml_collections.ConfigDict, input_shape: tuple[int, int, int], num_classes: int) -> CompiledRun:
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config.mesh.rules)
    model = model_from_config(config, input_shape, num_classes)
    tokenizer = None if num_classes else tokenizer_from_config(config.model)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
    optimizer, lr_schedule = make_optimizer(config.train)
    state, shardings = create_state(model, optimizer, input_shape, config.seed, mesh, rules)
    gathered = lambda loss: lambda params, batch, rng: loss(gathered_for_compute(params, shardings.params), batch, rng)  # noqa: E731
    make_step = lambda loss: make_train_step(gathered(loss), optimizer, lr_schedule, config.train.ema_decay,  # noqa: E731
                                             config.train.grad_accum)
    batch_spec = abstract_batch(config, input_shape, tokenizer, mesh)
    in_shardings, step_args = (shardings, batch_sharding(mesh)), ()
    if config.distill.teacher:
        teacher = load_teacher(config, mesh, input_shape, num_classes)
        state, step_args = student_from_teacher(state, teacher.params), (teacher.params,)
        teacher_shardings = jax.tree.map(lambda leaf: leaf.sharding, teacher.params)
        bind = make_consistency_loss(model, teacher.model, schedule, config)

        def step_fn(state, batch, teacher_params):
            frozen = gathered_for_compute(teacher_params, teacher_shardings)
            target = gathered_for_compute(jax.lax.stop_gradient(state.ema_params), shardings.ema_params)
            return make_step(bind(target, frozen))(state, batch)

        in_shardings += (teacher_shardings,)
    else:
        step_fn = make_step(make_loss_fn(model, schedule, config))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        jitted = jax.jit(step_fn, in_shardings=in_shardings, out_shardings=(shardings, None), donate_argnums=0)
        start = time.perf_counter()
        compiled = jitted.lower(state, batch_spec, *step_args).compile()
        compile_s = time.perf_counter() - start
    step_flops = float((compiled.cost_analysis() or {}).get("flops", 0.0))
    return CompiledRun(mesh, rules, model, tokenizer, schedule, state, batch_spec, compiled, compile_s, step_flops,
                       step_args)
