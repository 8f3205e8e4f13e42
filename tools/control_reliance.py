"""How much a personalized run's denoising relies on its control image, on examples it never saw.

    python tools/control_reliance.py --workdir=RUN --controls='dataset:test:balanced[5000:10000]' \\
        [--step=N] [--examples=512] [--seed=0]

The same noisy inputs (timesteps drawn uniformly, one key for every condition) are denoised four ways:
by the base alone, and by base + branch with each example's own control, with the control of another
example of its class (the next one, as edge F1's chance level pairs them), and with a blank control.
A branch that follows its control denoises far better with its own than with a same-class one; a
branch that ignores it scores the same with both, near the base. This is the training objective's
error (the prediction's MSE against its target), so it says what sampling can only show at the end of
a run, and it separates "the branch does not learn the control" from "sampling does not use it".
Prints one JSON line: the MSE of each condition overall and in four bands of t.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from diffcorrupt import jobs
from diffcorrupt.config.schema import base_config
from diffcorrupt.diffusion.losses import training_losses
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.edge_fidelity import partners
from diffcorrupt.models.control_branch import residuals
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.sampling.controls import ControlSet
from diffcorrupt.sampling.generate import example_conditions
from diffcorrupt.sampling.restore import RestoredModel, restore_ema

BANDS = 4
CHUNK = 128  # examples a compiled call denoises


def control_reliance(workdir: str | Path, controls: str, step: int | None = None, examples: int = 512,
                     seed: int = 0) -> dict:
    restored = restore_ema(workdir, make_mesh(base_config().mesh), step)
    if restored.base is None:
        raise UserError(f"--workdir={workdir} was not personalized (no personalize.base); name a personalized run")
    control_set = ControlSet(controls, restored.config.data)
    hints, elements = control_set.examples(np.arange(min(examples, len(control_set))))
    conditions = example_conditions(restored, elements)
    images = jnp.asarray(np.stack([element["image"] for element in elements]))
    x0 = images if restored.autoencoder is None else restored.autoencoder.encode_latents(images)
    other = hints[partners(len(hints), conditions.labels)]
    variants = {"own": hints, "same_class": other, "blank": np.zeros_like(hints)}
    losses = _losses(restored)
    t, mse = [], {name: [] for name in ("base", *variants)}
    for start in range(0, len(x0), CHUNK):
        chunk = slice(start, start + CHUNK)
        cond, key = jnp.asarray(conditions.model_input[chunk]), jax.random.fold_in(jax.random.key(seed), start)
        alone = losses(x0[chunk], cond, None, key)
        t.append(np.asarray(alone["t"]))
        mse["base"].append(np.asarray(alone["mse"]))
        for name, hint in variants.items():
            mse[name].append(np.asarray(losses(x0[chunk], cond, jnp.asarray(hint[chunk]), key)["mse"]))
    steps = np.concatenate(t)
    mse = {name: np.concatenate(values) for name, values in mse.items()}
    edges = np.linspace(0, restored.schedule.num_steps, BANDS + 1).astype(int)
    bands = {f"t{lo}-{hi - 1}": {name: float(values[(steps >= lo) & (steps < hi)].mean()) for name, values in mse.items()}
             for lo, hi in zip(edges[:-1], edges[1:])}
    return {"workdir": str(workdir), "step": restored.step, "controls": controls, "examples": len(x0),
            "mse": {name: float(values.mean()) for name, values in mse.items()}, "mse_by_t": bands}


def _losses(restored: RestoredModel):
    """``losses(x0, cond, hint or None, key)``: the training objective's per-example terms, compiled once
    for the base alone and once with the branch."""
    config, base = restored.config, restored.base

    @jax.jit
    def run(params, base_params, x0, cond, hint, key):
        null = jnp.zeros(x0.shape[0], bool)

        def model_fn(x_t, t):
            added = None if hint is None else residuals(restored.model, params, x_t, t, cond, null, hint)
            kwargs = {} if added is None else {"control": added}
            return base.model.apply({"params": base_params}, x_t, t, cond, null, **kwargs)

        return training_losses(model_fn, x0, key, restored.schedule, prediction=config.diffusion.prediction,
                               learned_sigma=config.model.learned_sigma, loss=config.diffusion.loss)

    return lambda x0, cond, hint, key: run(restored.params, base.params, x0, cond, hint, key)


def main(argv: list[str] | None = None) -> int:
    return jobs.run("control_reliance", _main, argv, prog="tools/control_reliance.py")


def _main(argv: list[str]) -> int:
    parser = jobs.JobParser("control_reliance", __doc__.split("\n\n")[0], config=False, prog="tools/control_reliance.py")
    parser.add_argument("--workdir", required=True, help="a personalized run")
    parser.add_argument("--controls", required=True, help="dataset[:split[:subset]] of examples it never saw")
    parser.add_argument("--step", type=int, default=None, help="its checkpoint; default: the newest")
    parser.add_argument("--examples", type=int, default=512, help="how many examples to denoise")
    parser.add_argument("--seed", type=int, default=0, help="the timesteps' and the noise's key")
    args = parser.parse_args(argv)
    print(json.dumps(control_reliance(args.workdir, args.controls, args.step, args.examples, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
