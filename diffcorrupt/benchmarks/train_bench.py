"""Train-step throughput: the job's jitted step (forward, backward, AdamW, EMA) on synthetic data.

Compile time is measured apart from step time; each timed step ends in ``block_until_ready`` so
that asynchronous dispatch does not flatter the figure. MFU is reported where the device's peak is
known (``diffcorrupt.training.peak_flops.PEAK_FLOPS``).
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from diffcorrupt.config.schema import base_config
from diffcorrupt.models.registry import parameter_count
from diffcorrupt.training.compiled_run import compile_run
from diffcorrupt.training.peak_flops import peak_flops


def run_config(config: ml_collections.ConfigDict, input_shape: tuple[int, int, int], num_classes: int,
               steps: int = 10) -> dict:
    """Times the step of ``config`` on all devices (its mesh), batch ``train.batch_size``."""
    from diffcorrupt.config.validate import validate

    validate(config, num_devices=jax.device_count(), check_data=False)
    run = compile_run(config, input_shape, num_classes)
    rng = np.random.default_rng(0)
    batch = {k: jax.device_put(rng.standard_normal(s.shape).astype(s.dtype) if s.dtype == np.float32
                               else rng.integers(0, max(num_classes, 2), s.shape).astype(s.dtype), s.sharding)
             for k, s in run.batch_spec.items()}
    state, compiled, compile_s, flops = run.state, run.step, run.compile_s, run.step_flops
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
        state, metrics = compiled(state, batch, *run.step_args)  # warm-up
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, batch, *run.step_args)
            jax.block_until_ready(metrics)
        step_s = (time.perf_counter() - start) / steps
    devices, batch_size = jax.device_count(), config.train.batch_size
    result = {
        "bench": "train", "model": config.model.name, "input_shape": list(input_shape), "batch_size": batch_size,
        "num_classes": num_classes, "dtype": config.model.dtype, "params": parameter_count(state.params),
        "steps": steps, "device": jax.devices()[0].device_kind, "num_devices": devices, "mesh": dict(run.mesh.shape),
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
