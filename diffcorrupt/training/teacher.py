"""The teacher of a consistency distillation: a trained run's EMA weights, checked against the
student's config, and the student's starting point.

The teacher is read again at every start (resumes included) rather than stored in the student's
checkpoints, which would double their size (SD-1.5's U-Net is 3.4 GB); its run must therefore stay
where ``distill.teacher`` says. "The newest checkpoint" (``teacher_step`` 0) is pinned at the first
start and saved with the student's config, so a resume reads the same teacher even if its run has
trained on since.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import Mesh

from diffcorrupt.config.loading import flat_keys
from diffcorrupt.errors import ConfigError
from diffcorrupt.sampling.restore import newest_step, restore_ema
from diffcorrupt.training.state import TrainState

# What the student must share with its teacher for the teacher's weights and outputs to mean the same.
SHARED_KEYS = ("model.name", "model.learned_sigma", "model.text_max_length", "model.tokenizer", "model.text_encoder",
               "model.unet", "diffusion.schedule", "diffusion.num_steps", "diffusion.prediction")


@dataclasses.dataclass
class Teacher:
    model: nn.Module
    params: Any  # EMA parameters, sharded over the student's mesh
    step: int


def pin_teacher_step(config: ml_collections.ConfigDict, saved: dict | None) -> ml_collections.ConfigDict:
    """``config`` with ``distill.teacher_step`` 0 replaced by the step the run started from (in
    ``saved``, the student's saved config, once there is one) or else the teacher's newest."""
    if not config.distill.teacher or config.distill.teacher_step:
        return config
    pinned = (saved or {}).get("distill", {}).get("teacher_step") or newest_step(config.distill.teacher)
    config = ml_collections.ConfigDict(config.to_dict())
    config.distill.teacher_step = int(pinned)
    return config


def load_teacher(config: ml_collections.ConfigDict, mesh: Mesh, input_shape: tuple[int, int, int],
                 num_classes: int) -> Teacher:
    """The teacher run's EMA weights at ``distill.teacher_step`` (pinned), refused in one sentence
    when it is no diffusion model of the student's kind."""
    where = config.distill.teacher
    restored = restore_ema(where, mesh, config.distill.teacher_step or None)
    saved, ours = flat_keys(restored.config), flat_keys(config)
    if restored.config.distill.teacher:
        raise ConfigError(f"distill.teacher {where} is itself a distilled run; distil from a diffusion run")
    for key in SHARED_KEYS:
        if saved[key] != ours[key]:
            raise ConfigError(f"config key '{key}' is {ours[key]!r} but the teacher {where} was trained with "
                              f"{saved[key]!r}; set it to the teacher's value")
    if (tuple(restored.input_shape), restored.num_classes) != (tuple(input_shape), num_classes):
        raise ConfigError(f"the teacher {where} takes inputs of shape {list(restored.input_shape)} with "
                          f"{restored.num_classes} classes, this run's data gives {list(input_shape)} with {num_classes}; "
                          "distil on data of the teacher's kind (the same image size, latents or classes)")
    return Teacher(restored.model, restored.params, restored.step)


def student_from_teacher(state: TrainState, teacher_params: Any) -> TrainState:
    """The fresh state with the teacher's weights in the student's params and target (EMA); the
    parameters only the student has (its guidance projection) keep their zero initialisation."""
    teacher_leaves = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(teacher_params)}

    def take(path, leaf):
        name = jax.tree_util.keystr(path)
        if name not in teacher_leaves:
            if "cond_proj" not in name:
                raise ConfigError(f"the teacher has no parameter {name} that the student has; distil with the "
                                  "teacher's model settings")
            return leaf
        return jax.device_put(teacher_leaves[name], leaf.sharding).copy()  # own buffers: the state is donated

    params = jax.tree_util.tree_map_with_path(take, state.params)
    return state.replace(params=params, ema_params=jax.tree.map(lambda leaf: leaf.copy(), params))
