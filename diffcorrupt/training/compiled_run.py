"""A run's pieces, built once: mesh, model, sharded state and the step compiled for the global batch.

The train job and the train-step benchmark both start here, so what is benchmarked is the step
that trains. A run with a ``distill.teacher`` compiles the consistency-distillation step instead,
with the teacher's weights as a third argument (never part of the state or its checkpoints), and
starts from the teacher's weights; a run with a ``personalize.base`` trains a control branch beside
the base's weights, passed the same way, and its copies of the base start from them.
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
from diffcorrupt.models.control_branch import make_control, residuals
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
from diffcorrupt.training.pretrained import BASE, TEACHER, load_pretrained, start_from


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
    step_args: tuple = ()  # what the step takes after the batch: the teacher's or the base's weights


def compile_run(config: ml_collections.ConfigDict, input_shape: tuple[int, int, int], num_classes: int,
                control_shape: tuple[int, int, int] | None = None) -> CompiledRun:
    """``control_shape``: that of the batches' control images, where the data have them."""
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config.mesh.rules)
    model = model_from_config(config, input_shape, num_classes)
    tokenizer = None if num_classes else tokenizer_from_config(config.model)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
    optimizer, lr_schedule = make_optimizer(config.train)
    frozen = None
    if config.personalize.base:  # the trained model is the control branch beside the frozen base
        frozen = load_pretrained(BASE, config, mesh, input_shape, num_classes)
        model = make_control(config.personalize.method, frozen.model, input_shape[0], config.personalize.copies)
    elif config.distill.teacher:
        frozen = load_pretrained(TEACHER, config, mesh, input_shape, num_classes)
    branch_shape = control_shape if config.personalize.base else None
    state, shardings = create_state(model, optimizer, input_shape, config.seed, mesh, rules, branch_shape)
    gathered = lambda loss: lambda params, batch, rng: loss(gathered_for_compute(params, shardings.params), batch, rng)  # noqa: E731
    make_step = lambda loss: make_train_step(gathered(loss), optimizer, lr_schedule, config.train.ema_decay,  # noqa: E731
                                             config.train.grad_accum)
    batch_spec = abstract_batch(config, input_shape, tokenizer, mesh, control_shape)
    in_shardings, step_args = (shardings, batch_sharding(mesh)), ()
    if frozen is not None:
        frozen_shardings = jax.tree.map(lambda leaf: leaf.sharding, frozen.params)
        in_shardings, step_args = in_shardings + (frozen_shardings,), (frozen.params,)
    if config.personalize.base:
        state = start_from(state, frozen.params, own=lambda name: True)  # a ControlNet's copies start as the base
        control, base = model, frozen.model

        def step_fn(state, batch, base_params):
            base_params = gathered_for_compute(base_params, frozen_shardings)

            def forward(params, x_t, t, cond, null_mask, batch, rngs):
                added = residuals(control, params, x_t, t, cond, null_mask, batch["control"], train=True, rngs=rngs)
                return base.apply({"params": base_params}, x_t, t, cond, null_mask, control=added)

            return make_step(make_loss_fn(base, schedule, config, forward))(state, batch)
    elif config.distill.teacher:
        state = start_from(state, frozen.params, own=lambda name: "cond_proj" in name)  # the guidance projection
        bind = make_consistency_loss(model, frozen.model, schedule, config)

        def step_fn(state, batch, teacher_params):
            teacher_params = gathered_for_compute(teacher_params, frozen_shardings)
            target = gathered_for_compute(jax.lax.stop_gradient(state.ema_params), shardings.ema_params)
            return make_step(bind(target, teacher_params))(state, batch)
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
