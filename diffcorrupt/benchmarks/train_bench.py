"""Train-step throughput: one jitted step (forward, backward, AdamW) on synthetic data.

Compile time is measured apart from step time; each timed step ends in ``block_until_ready`` so
that asynchronous dispatch does not flatter the figure.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from diffcorrupt.config.schema import base_config
from diffcorrupt.diffusion.schedules import make_schedule
from diffcorrupt.models.registry import example_inputs, model_from_config, parameter_count
from diffcorrupt.training.objective import condition_key, make_loss_fn


def run(model_name: str, input_shape: tuple[int, int, int], batch_size: int, num_classes: int,
        steps: int = 10, dtype: str = "float32") -> dict:
    config = base_config()
    config.model.name = model_name
    config.model.dtype = dtype
    model = model_from_config(config, input_shape, num_classes)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
    loss_fn = make_loss_fn(model, schedule, config)
    optimizer = optax.adamw(config.train.lr)

    rng = jax.random.key(0)
    x, _, cond, _ = example_inputs(model, input_shape, batch_size)
    batch = {"image": jax.random.normal(rng, x.shape),
             condition_key(model): jax.random.randint(rng, cond.shape, 0, max(num_classes, 2))}
    params = jax.jit(lambda: nn.meta.unbox(model.init({"params": rng}, *example_inputs(model, input_shape, 1))["params"]))()
    opt_state = optimizer.init(params)

    def step(params, opt_state, batch, rng):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, batch, rng).compile()
    compile_s = time.perf_counter() - start
    params, opt_state, loss = compiled(params, opt_state, batch, rng)  # warm-up
    loss.block_until_ready()
    start = time.perf_counter()
    for i in range(steps):
        params, opt_state, loss = compiled(params, opt_state, batch, jax.random.fold_in(rng, i))
        loss.block_until_ready()
    step_s = (time.perf_counter() - start) / steps
    return {
        "bench": "train", "model": model_name, "input_shape": list(input_shape), "batch_size": batch_size,
        "num_classes": num_classes, "dtype": dtype, "params": parameter_count(params), "steps": steps,
        "device": jax.devices()[0].device_kind, "num_devices": 1, "compile_s": round(compile_s, 2),
        "step_s": round(step_s, 4), "images_per_s": round(batch_size / step_s, 2),
        "device_seconds_per_image": round(step_s / batch_size, 5),
        "loss": float(jnp.asarray(loss)),
    }
