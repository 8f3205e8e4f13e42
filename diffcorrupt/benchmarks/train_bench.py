"""Train-step throughput: the job's jitted step (forward, backward, AdamW, EMA) on synthetic data.

Compile time is measured apart from step time; each timed step ends in ``block_until_ready`` so
that asynchronous dispatch does not flatter the figure. MFU is reported where the device's peak is
known (``diffcorrupt.training.loop.PEAK_FLOPS``).
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from diffcorrupt.config.schema import base_config
from diffcorrupt.diffusion.schedules import make_schedule
from diffcorrupt.models.registry import model_from_config, parameter_count
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.parallel.sharding import rules_from_config
from diffcorrupt.training.batches import abstract_batch
from diffcorrupt.training.loop import peak_flops
from diffcorrupt.training.objective import make_loss_fn
from diffcorrupt.training.optimizer import make_optimizer
from diffcorrupt.training.state import create_state
from diffcorrupt.training.step import make_train_step


def run_config(config: ml_collections.ConfigDict, input_shape: tuple[int, int, int], num_classes: int,
               steps: int = 10) -> dict:
    """Times the step of ``config`` on all devices (its mesh), batch ``train.batch_size``."""
    from diffcorrupt.config.validate import validate
    from diffcorrupt.models.tokenizer import ByteTokenizer

    validate(config, num_devices=jax.device_count(), check_data=False)
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config.mesh.rules)
    model = model_from_config(config, input_shape, num_classes)
    optimizer, schedule = make_optimizer(config.train)
    step = make_train_step(make_loss_fn(model, make_schedule(config.diffusion.schedule, config.diffusion.num_steps), config),
                           optimizer, schedule, config.train.ema_decay, config.train.grad_accum)
    state, shardings = create_state(model, optimizer, input_shape, config.seed, mesh, rules)
    tokenizer = None if num_classes else ByteTokenizer(config.model.text_max_length)
    spec = abstract_batch(config, input_shape, tokenizer, mesh)
    rng = np.random.default_rng(0)
    batch = {k: jax.device_put(rng.standard_normal(s.shape).astype(s.dtype) if s.dtype == np.float32
                               else rng.integers(0, max(num_classes, 2), s.shape).astype(s.dtype), s.sharding)
             for k, s in spec.items()}
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        start = time.perf_counter()
        compiled = jax.jit(step, in_shardings=(shardings, spec["corrupted"].sharding), out_shardings=(shardings, None),
                           donate_argnums=0).lower(state, spec).compile()
        compile_s = time.perf_counter() - start
        state, metrics = compiled(state, batch)  # warm-up
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
        step_s = (time.perf_counter() - start) / steps
    flops = float((compiled.cost_analysis() or {}).get("flops", 0.0))  # per device, partitioned
    devices, batch_size = jax.device_count(), config.train.batch_size
    result = {
        "bench": "train", "model": config.model.name, "input_shape": list(input_shape), "batch_size": batch_size,
        "num_classes": num_classes, "dtype": config.model.dtype, "params": parameter_count(state.params),
        "steps": steps, "device": jax.devices()[0].device_kind, "num_devices": devices, "mesh": dict(mesh.shape),
        "compile_s": round(compile_s, 2), "step_s": round(step_s, 4), "images_per_s": round(batch_size / step_s, 2),
        "device_seconds_per_image": round(step_s * devices / batch_size, 5),
        "tflops_per_s_per_device": round(flops / step_s / 1e12, 4), "loss": float(metrics["loss"]),
    }
    peak = peak_flops()
    if peak:
        result["mfu"] = round(flops / step_s / peak, 4)
    return result


def run(model_name: str, input_shape: tuple[int, int, int], batch_size: int, num_classes: int,
        steps: int = 10, dtype: str = "float32") -> dict:
    """The step of a named model with the default training settings, data-parallel over all devices."""
    config = base_config()
    config.model.name = model_name
    config.model.dtype = dtype
    config.train.batch_size = batch_size
    return run_config(config, input_shape, num_classes, steps)
