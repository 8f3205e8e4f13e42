"""AdamW with the configured learning-rate schedule, warm-up and global-norm clipping (optax)."""

from __future__ import annotations

import ml_collections
import optax


def learning_rate(train: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up to ``train.lr``, then constant or cosine decay to zero at ``num_steps``."""
    if train.lr_schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, train.lr, train.warmup_steps, max(train.num_steps, train.warmup_steps + 1))
    if train.warmup_steps:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, train.lr, train.warmup_steps), optax.constant_schedule(train.lr)],
            [train.warmup_steps])
    return optax.constant_schedule(train.lr)


def make_optimizer(train: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate(train)
    adamw = optax.adamw(schedule, b1=train.b1, b2=train.b2, weight_decay=train.weight_decay)
    if train.grad_clip:
        return optax.chain(optax.clip_by_global_norm(train.grad_clip), adamw), schedule
    return adamw, schedule
