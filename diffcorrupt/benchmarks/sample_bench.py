"""Sampler throughput: images/s of the sharded generator the sample job runs.

Random weights serve as well as trained ones (the work per step does not depend on them), so any
registered model can be measured without a checkpoint. Compile time is reported apart from the
steady state, which is the median of a few timed batches after a warm-up batch.
"""

from __future__ import annotations

import statistics
import time

import jax
import ml_collections
import numpy as np

from diffcorrupt.config.schema import base_config
from diffcorrupt.diffusion.schedules import make_schedule
from diffcorrupt.models.registry import example_inputs, model_from_config
from diffcorrupt.models.tokenizer import tokenizer_from_config
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.parallel.sharding import DEFAULT_RULES, init_sharded
from diffcorrupt.sampling.generate import SampleSettings, conditions, make_generator, parallel_batch
from diffcorrupt.sampling.restore import RestoredModel


def run(model_name: str, input_shape: tuple[int, int, int], num_classes: int, batch_size: int, sampler: str,
        steps: int, cfg_scale: float, batches: int = 3, dtype: str = "float32") -> dict:
    config = base_config()
    config.model.name, config.model.dtype = model_name, dtype
    mesh = make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, "dcn_data": 1, "dcn_fsdp": 1}))
    model = model_from_config(config, input_shape, num_classes)
    params, _ = init_sharded(
        lambda: model.init({"params": jax.random.key(0)}, *example_inputs(model, input_shape))["params"], mesh, DEFAULT_RULES)
    tokenizer = None if num_classes else tokenizer_from_config(config.model)
    restored = RestoredModel(config, 0, model, params, input_shape, num_classes, tokenizer,
                             make_schedule(config.diffusion.schedule, config.diffusion.num_steps), DEFAULT_RULES)
    batch = parallel_batch(batch_size, mesh)
    start = time.perf_counter()
    generate = make_generator(restored, SampleSettings(sampler, steps, cfg_scale, 0.0, seed=0), mesh, batch)
    compile_s = time.perf_counter() - start
    captions = None if num_classes else ["a caption of average length for the benchmark"]
    times = []
    for b in range(batches + 1):
        indices = np.arange(b * batch, (b + 1) * batch)
        cond = conditions(restored, indices, captions).model_input
        start = time.perf_counter()
        generate(indices, cond)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:])
    evaluations = steps + (1 if sampler == "dpm" else 0)
    return {
        "bench": "sample", "model": model_name, "input_shape": list(input_shape), "num_classes": num_classes,
        "batch_size": batch, "sampler": sampler, "steps": steps, "cfg_scale": cfg_scale, "dtype": dtype,
        "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
        "images_per_s": round(batch / seconds, 3),
        "forward_passes_per_s": round(batch * evaluations * (1 if cfg_scale == 1.0 else 2) / seconds, 1),
        "compile_s": round(compile_s, 2), "seconds_per_batch": round(seconds, 3),
    }
