"""Model size and forward cost, from abstract shapes only (nothing is allocated or run).

``gmacs`` is forward multiply-adds per example in billions, the unit the DiT paper calls GFLOPs
(118.6 for DiT-XL/2); ``xla_gflops`` is XLA's cost analysis of the same forward, which counts a
multiply-add as two FLOPs and adds the elementwise work.
"""

from __future__ import annotations

import jax

from diffcorrupt.models.dit import DiT, fixed_position_count
from diffcorrupt.models.registry import example_inputs, make_model, parameter_count


def run(model_name: str, input_shape: tuple[int, int, int], num_classes: int, learned_sigma: bool = True) -> dict:
    model = make_model(model_name, input_shape=input_shape, num_classes=num_classes, learned_sigma=learned_sigma)
    inputs = example_inputs(model, input_shape, batch=1)
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *inputs))
    trainable = parameter_count(variables["params"])
    fixed = fixed_position_count(model) if isinstance(model, DiT) else 0
    cost = jax.jit(model.apply).lower(variables, *inputs).cost_analysis()
    flops = float(cost["flops"])
    return {
        "bench": "model",
        "model": model_name,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "learned_sigma": learned_sigma,
        "params": trainable + fixed,
        "params_trainable": trainable,
        "params_fixed_positions": fixed,
        "gmacs": round(flops / 2e9, 3),
        "xla_gflops": round(flops / 1e9, 3),
    }
