"""The latent consistency distillation objective (LCM, Luo et al. 2023, Algorithm 1).

Per example: a grid index n and a guidance scale s are drawn, x_0 is noised to x at tau_n, the
frozen teacher takes one DDIM step from tau_n to tau_{n-1} under guidance s (both halves in one
doubled batch, as the sampler guides), and the student's consistency output at (x, tau_n, s) is
pulled towards the target network's at (DDIM step's result, tau_{n-1}, s), which is held fixed.
The target network is the train state's EMA (``train.ema_decay``, LCM's 0.95), so the trainer's
EMA update is LCM's target update, and the weights a distilled run is sampled with are LCM's too.

The student is run in training mode on the run's (possibly corrupted) data, so CEP applies to it
as in pre-training when configured (the paper distils LCM with CEP in its Table 1); the teacher and
the target are deterministic. No condition is dropped: the student only ever sees its condition and
is told its guidance scale.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffcorrupt.diffusion.consistency import consistency_output, distance, solver_timesteps
from diffcorrupt.diffusion.losses import eps_and_x0, split_output
from diffcorrupt.diffusion.samplers import guided
from diffcorrupt.diffusion.schedules import Schedule
from diffcorrupt.training.objective import LossFn, condition_key, corruption_split


def make_consistency_loss(student: nn.Module, teacher: nn.Module, schedule: Schedule,
                          config: ml_collections.ConfigDict) -> Callable[[Any, Any], LossFn]:
    """``bind(target_params, teacher_params) -> loss_fn(params, batch, rng)``: the loss of one step,
    given the target network (the EMA, fixed within the step) and the frozen teacher."""
    distill, prediction, learned_sigma = config.distill, config.diffusion.prediction, config.model.learned_sigma
    grid = solver_timesteps(schedule.num_steps, distill.ddim_timesteps)
    previous = np.concatenate([[0], grid[:-1]])  # tau_{n-1}; the first step ends at timestep 0
    ab = schedule.alphas_cumprod_f64
    table = {"t": grid, "t_prev": previous, "sqrt_ab": np.sqrt(ab[grid]), "sqrt_one_minus_ab": np.sqrt(1 - ab[grid]),
             "sqrt_ab_prev": np.sqrt(ab[previous]), "sqrt_one_minus_ab_prev": np.sqrt(1 - ab[previous])}
    table = {k: jnp.asarray(v, jnp.int32 if k.startswith("t") else jnp.float32) for k, v in table.items()}

    def bind(target_params, teacher_params) -> LossFn:
        def loss_fn(params, batch, rng):
            index_key, noise_key, scale_key, cep_key, dropout_key = jax.random.split(rng, 5)
            x0 = batch["latent"] if "latent" in batch else batch["image"]
            cond, size = batch[condition_key(student)], x0.shape[0]
            shape = (size,) + (1,) * (x0.ndim - 1)
            at = jax.tree.map(lambda column: column[jax.random.randint(index_key, (size,), 0, grid.size)], table)
            per_example = {k: v if k.startswith("t") else v.reshape(shape) for k, v in at.items()}
            scale = jax.random.uniform(scale_key, (size,), minval=distill.cfg_min, maxval=distill.cfg_max)
            keep = jnp.zeros((size,), bool)

            def x0_of(output: jax.Array, x: jax.Array, sqrt_ab: jax.Array, sqrt_one_minus_ab: jax.Array) -> jax.Array:
                return eps_and_x0(split_output(output, x.shape, learned_sigma)[0], x, sqrt_ab, sqrt_one_minus_ab,
                                  prediction)[1]

            x = per_example["sqrt_ab"] * x0 + per_example["sqrt_one_minus_ab"] * jax.random.normal(noise_key, x0.shape)
            output = student.apply({"params": params}, x, per_example["t"], cond, keep, train=True, guidance=scale,
                                   rngs={"cep": cep_key, "dropout": dropout_key})
            online = consistency_output(x, x0_of(output, x, per_example["sqrt_ab"], per_example["sqrt_one_minus_ab"]),
                                        per_example["t"])

            doubled = jnp.concatenate([cond, cond])
            teacher_fn = guided(lambda x2, t2, null: teacher.apply({"params": teacher_params}, x2, t2, doubled, null),
                                scale, x0.shape[-1])
            eps, x0_teacher = eps_and_x0(split_output(teacher_fn(x, per_example["t"]), x.shape, learned_sigma)[0], x,
                                         per_example["sqrt_ab"], per_example["sqrt_one_minus_ab"], prediction)
            x_prev = per_example["sqrt_ab_prev"] * x0_teacher + per_example["sqrt_one_minus_ab_prev"] * eps
            output = student.apply({"params": target_params}, x_prev, per_example["t_prev"], cond, keep, guidance=scale)
            target = consistency_output(
                x_prev, x0_of(output, x_prev, per_example["sqrt_ab_prev"], per_example["sqrt_one_minus_ab_prev"]),
                per_example["t_prev"])
            losses = distance(online, jax.lax.stop_gradient(target), distill.loss, distill.huber_c)
            metrics = {"loss": losses.mean(), "mse": jnp.mean(jnp.square(online - target)), **corruption_split(losses, batch)}
            return losses.mean(), metrics

        return loss_fn

    return bind
