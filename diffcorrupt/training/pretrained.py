"""A frozen pre-trained run inside another run: the teacher of a consistency distillation, or the
base of a personalization. Its EMA weights are checked against the new run's config and become
a step argument, never part of the new run's state or checkpoints.

The run is read again at every start (resumes included) rather than stored in the new run's
checkpoints, which would double their size (SD-1.5's U-Net is 3.4 GB); it must therefore stay
where the config says. "The newest checkpoint" (step 0) is pinned at the first start and saved
with the new run's config, so a resume reads the same weights even if that run has trained on since.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import Mesh

from diffcorrupt.config.loading import flat_keys
from diffcorrupt.errors import ConfigError
from diffcorrupt.sampling.restore import newest_step, restore_ema, saved_run_config
from diffcorrupt.training.state import TrainState

# What a run must share with the run it reads for those weights and outputs to mean the same.
SHARED_KEYS = ("model.name", "model.learned_sigma", "model.text_max_length", "model.tokenizer", "model.text_encoder",
               "model.unet", "diffusion.schedule", "diffusion.num_steps", "diffusion.prediction")
# (config key of the run's workdir, config key of its step, what the run is called in messages)
TEACHER = ("distill.teacher", "distill.teacher_step", "teacher")
BASE = ("personalize.base", "personalize.base_step", "base")


@dataclasses.dataclass
class Pretrained:
    model: nn.Module
    params: Any  # EMA parameters, sharded over the new run's mesh
    step: int


def pin_steps(config: ml_collections.ConfigDict, saved: dict | None) -> ml_collections.ConfigDict:
    """``config`` with each pre-trained run's step 0 replaced by the step the new run started from
    (in ``saved``, its saved config, once there is one) or else that run's newest."""
    pinned = ml_collections.ConfigDict(config.to_dict())
    for run_key, step_key, _ in (TEACHER, BASE):
        section, run_field = run_key.split(".")
        step_field = step_key.split(".")[1]
        if pinned[section][run_field] and not pinned[section][step_field]:
            step = (saved or {}).get(section, {}).get(step_field) or newest_step(pinned[section][run_field])
            pinned[section][step_field] = int(step)
    return pinned


def load_pretrained(which: tuple[str, str, str], config: ml_collections.ConfigDict, mesh: Mesh,
                    input_shape: tuple[int, int, int], num_classes: int) -> Pretrained:
    """The EMA weights of the run at ``which``'s config keys (step pinned), refused in one sentence
    when it is not a diffusion model of this run's kind: distilled or personalized runs included."""
    run_key, step_key, role = which
    flat = flat_keys(config)
    where = flat[run_key]
    saved = flat_keys(saved_run_config(where, flat[step_key] or None))
    for marker, kind in (("distill.teacher", "distilled"), ("personalize.base", "personalized")):
        if saved.get(marker):
            raise ConfigError(f"{run_key} {where} is itself a {kind} run; give the workdir of a diffusion run")
    restored = restore_ema(where, mesh, flat[step_key] or None)
    for key in SHARED_KEYS:
        if saved[key] != flat[key]:
            raise ConfigError(f"config key '{key}' is {flat[key]!r} but the {role} {where} was trained with "
                              f"{saved[key]!r}; set it to the {role}'s value")
    if (tuple(restored.input_shape), restored.num_classes) != (tuple(input_shape), num_classes):
        raise ConfigError(f"the {role} {where} takes inputs of shape {list(restored.input_shape)} with "
                          f"{restored.num_classes} classes, this run's data gives {list(input_shape)} with {num_classes}; "
                          f"train on data of the {role}'s kind (the same image size, latents or classes)")
    return Pretrained(restored.model, restored.params, restored.step)


def start_from(state: TrainState, weights: Any, own: Callable[[str], bool]) -> TrainState:
    """The fresh ``state`` with ``weights`` in its params and EMA wherever their paths agree; a
    parameter ``weights`` lacks keeps its initialisation when ``own(path)`` says it is the new
    run's own (a student's guidance projection, a ControlNet's zero layers), else is refused."""
    leaves = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(weights)}

    def take(path, leaf):
        name = jax.tree_util.keystr(path)
        if name not in leaves:
            if not own(name):
                raise ConfigError(f"the pre-trained run has no parameter {name} that this run's model has; "
                                  "train with the pre-trained run's model settings")
            return leaf
        return jax.device_put(leaves[name], leaf.sharding).copy()  # own buffers: the state is donated

    params = jax.tree_util.tree_map_with_path(take, state.params)
    return state.replace(params=params, ema_params=jax.tree.map(lambda leaf: leaf.copy(), params))
