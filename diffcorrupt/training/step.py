"""One optimisation step: (micro-batched) gradients, AdamW, EMA, and the non-finite guard.

A step whose loss or gradient is not finite leaves the parameters, the EMA and the optimizer state
as they were and records its number in ``first_nonfinite_step``; the loop reads that flag when it
logs and before every checkpoint, so a poisoned state is never written and no step pays a host
sync for the check.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from diffcorrupt.training.objective import LossFn
from diffcorrupt.training.state import TrainState

StepFn = Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]


def _gradients(loss_fn: LossFn, params, batch: dict[str, jax.Array], key: jax.Array, micro_batches: int):
    """Mean loss, metrics and gradients over ``micro_batches`` equal slices of the batch."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if micro_batches == 1:
        (loss, metrics), grads = grad_fn(params, batch, key)
        return loss, metrics, grads
    slices = jax.tree.map(lambda x: x.reshape(micro_batches, x.shape[0] // micro_batches, *x.shape[1:]), batch)

    def accumulate(carry, inputs):
        index, micro_batch = inputs
        (loss, metrics), grads = grad_fn(params, micro_batch, jax.random.fold_in(key, index))
        return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

    zeros = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], slices), key)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), ((zeros[0][0], zeros[0][1], zeros[1])))
    (loss, metrics, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(micro_batches), slices))
    sums = {k for k in metrics if k.startswith(("loss_sum_", "num_"))}
    metrics = {k: v if k in sums else v / micro_batches for k, v in metrics.items()}
    return loss / micro_batches, metrics, jax.tree.map(lambda g: g / micro_batches, grads)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    ema_decay: float, micro_batches: int = 1) -> StepFn:
    def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(state.key(), state.step)
        loss, metrics, grads = _gradients(loss_fn, state.params, batch, key, micro_batches)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        first_bad = jnp.where((state.first_nonfinite_step < 0) & ~finite, state.step, state.first_nonfinite_step)
        new_state = state.replace(
            step=state.step + 1, params=keep(params, state.params), ema_params=keep(ema, state.ema_params),
            opt_state=keep(opt_state, state.opt_state), first_nonfinite_step=first_bad,
        )
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm, learning_rate=schedule(state.step))
        return new_state, metrics

    return train_step
