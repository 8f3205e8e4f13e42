"""Checks a config before any work starts, so that a mistake costs seconds, not a pod-hour.

Each failure is one sentence naming the key and the fix. Dataset presence is checked here too (by
the data registry), since a missing dataset found an hour into compilation is the costliest typo.
"""

from __future__ import annotations

import math

import ml_collections

from diffcorrupt.config.loading import flat_keys, suggest
from diffcorrupt.config.schema import CHOICES, CLASS_CORRUPTIONS, TEXT_CORRUPTIONS, base_config
from diffcorrupt.data.sources.subset import parse_subset
from diffcorrupt.errors import ConfigError
from diffcorrupt.parallel.mesh import data_parallel_size

_POSITIVE = ("data.image_size", "train.num_steps", "train.batch_size", "checkpoint.every_steps", "checkpoint.keep",
             "diffusion.num_steps", "model.text_max_length", "train.lr", "train.grad_accum", "train.log_every",
             "sample.num_samples", "sample.batch_size")
_NON_NEGATIVE = ("data.num_examples", "data.num_epochs", "data.num_workers", "data.prefetch", "data.corruption.seed", "seed",
                 "train.warmup_steps", "train.weight_decay", "train.grad_clip", "train.sample_every",
                 "checkpoint.keep_every")


def validate(
    config: ml_collections.ConfigDict,
    *,
    num_devices: int | None = None,
    process_count: int = 1,
    check_data: bool = True,
) -> None:
    """Raises ``ConfigError`` (or ``DataError``) with one sentence at the first problem found."""
    _check_keys_and_types(config)
    _check_values(config)
    from diffcorrupt.parallel.sharding import rules_from_config

    rules_from_config(config.mesh.rules)
    _check_text_and_unet(config)
    if num_devices is not None:
        _check_batch(config, num_devices, process_count)
    if check_data:
        from diffcorrupt.data.sources.registry import check_available, condition_of

        check_available(config.data)
        _check_corruption_fits(config, condition_of(config.data))
        _check_pretrained_and_controls(config)


def _check_pretrained_and_controls(config: ml_collections.ConfigDict) -> None:
    """What a distillation or a personalization reads besides the data, refused before a workdir is made:
    the pre-trained run's checkpoints and a control folder."""
    from diffcorrupt.data.sources.controls import check_control_dir
    from diffcorrupt.sampling.restore import newest_step

    for key in ("distill.teacher", "personalize.base"):
        section, field = key.split(".")
        if config[section][field]:
            newest_step(config[section][field])  # one sentence when the run has no checkpoint
    if config.data.control == "folder":
        check_control_dir(config.data.control_dir)


def _check_keys_and_types(config: ml_collections.ConfigDict) -> None:
    schema = flat_keys(base_config())
    given = flat_keys(config)
    for key, value in given.items():
        if key not in schema:
            raise ConfigError(
                f"unknown config key '{key}'{suggest(key, schema)}; remove it or fix its name"
            )
        expected = type(schema[key])
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}' is {value}; give a finite number")
        if expected is float and type(value) is int:
            continue
        if type(value) is not expected:
            raise ConfigError(
                f"config key '{key}' must be a {expected.__name__}, got {value!r} "
                f"({type(value).__name__}); set it to a {expected.__name__}"
            )
    for key in schema:
        if key not in given:
            raise ConfigError(f"config key '{key}' is missing; start presets from diffcorrupt.config.schema.base_config()")


def _check_values(config: ml_collections.ConfigDict) -> None:
    values = flat_keys(config)
    for key, allowed in CHOICES.items():
        if values[key] not in allowed:
            raise ConfigError(
                f"config key '{key}' is '{values[key]}'{suggest(str(values[key]), allowed)}; "
                f"use one of {', '.join(allowed)}"
            )
    ratio = config.data.corruption.ratio
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(
            f"config key 'data.corruption.ratio' is {ratio}, outside [0, 1); give the corrupted fraction, "
            "e.g. 0.025 for 2.5%"
        )
    for key in _POSITIVE:
        if values[key] <= 0:
            raise ConfigError(f"config key '{key}' is {values[key]}; it must be positive")
    for key in _NON_NEGATIVE:
        if values[key] < 0:
            raise ConfigError(f"config key '{key}' is {values[key]}; it must be zero or positive")
    if config.data.subset:
        parse_subset(config.data.subset)
    if config.data.channels not in (1, 3):
        raise ConfigError(f"config key 'data.channels' is {config.data.channels}; use 1 (grey) or 3 (RGB)")
    if config.data.num_threads <= 0:
        raise ConfigError(f"config key 'data.num_threads' is {config.data.num_threads}; use at least 1 thread")
    for key in ("model.cep.gamma", "model.label_drop", "model.condition_dropout", "model.label_smoothing",
                "diffusion.input_perturbation", "diffusion.min_snr_gamma", "sample.eta", "sample.cfg_scale"):
        if values[key] < 0:
            raise ConfigError(f"config key '{key}' is {values[key]}; it must be zero or positive")
    for key in ("model.label_drop", "model.condition_dropout", "model.label_smoothing"):
        if values[key] >= 1:
            raise ConfigError(f"config key '{key}' is {values[key]}; it is a probability, use a value below 1")
    if (config.diffusion.loss == "hybrid") != config.model.learned_sigma:
        raise ConfigError(
            "config keys 'diffusion.loss' and 'model.learned_sigma' disagree: only the hybrid loss trains a learned "
            "variance; set diffusion.loss='hybrid' with model.learned_sigma=True, or 'mse' with False"
        )
    if not 0 <= config.train.ema_decay < 1 or not 0 <= config.train.b1 < 1 or not 0 <= config.train.b2 < 1:
        raise ConfigError("config keys 'train.ema_decay', 'train.b1' and 'train.b2' are decay rates; use values in [0, 1)")
    _check_distill(config)
    _check_personalize(config)
    if not 0 < config.sample.steps <= config.diffusion.num_steps:
        raise ConfigError(f"config key 'sample.steps' is {config.sample.steps}; use 1 to diffusion.num_steps ({config.diffusion.num_steps})")


def _check_personalize(config: ml_collections.ConfigDict) -> None:
    personalize = config.personalize
    if personalize.base and not config.data.control:
        raise ConfigError("config key 'personalize.base' is set but 'data.control' is not; set it to 'canny' (edges of "
                          "each image) or 'folder' (images in data.control_dir), the control the branch learns")
    if personalize.base and config.distill.teacher:
        raise ConfigError("config keys 'personalize.base' and 'distill.teacher' are both set; a run either personalizes "
                          "a base or distils a teacher, set one of them to ''")
    if personalize.base and config.train.sample_every:
        raise ConfigError("config key 'train.sample_every' is set on a personalization run, whose previews need control "
                          "images; set it to 0")
    if personalize.copies < 0:
        raise ConfigError(f"config key 'personalize.copies' is {personalize.copies}; use 0 (half the depth) or more")


def _check_distill(config: ml_collections.ConfigDict) -> None:
    distill = config.distill
    if not 0 < distill.ddim_timesteps <= config.diffusion.num_steps:
        raise ConfigError(f"config key 'distill.ddim_timesteps' is {distill.ddim_timesteps}; use 1 to "
                          f"diffusion.num_steps ({config.diffusion.num_steps}), e.g. LCM's 50")
    if not 1.0 <= distill.cfg_min <= distill.cfg_max:
        raise ConfigError(f"config keys 'distill.cfg_min' and 'distill.cfg_max' are {distill.cfg_min} and "
                          f"{distill.cfg_max}; give guidance scales with 1 <= cfg_min <= cfg_max")
    if distill.huber_c <= 0:
        raise ConfigError(f"config key 'distill.huber_c' is {distill.huber_c}; it must be positive")
    if distill.teacher and not config.model.guidance_dim and distill.cfg_min != distill.cfg_max:
        raise ConfigError("config key 'model.guidance_dim' is 0, so the student cannot be told its guidance scale; "
                          "set it (LCM: 256) or distil at one scale with distill.cfg_min = distill.cfg_max")
    if config.sample.sampler == "lcm" and config.sample.steps > distill.ddim_timesteps:
        raise ConfigError(f"config key 'sample.steps' is {config.sample.steps}, more than the "
                          f"{distill.ddim_timesteps} timesteps the lcm sampler picks from (distill.ddim_timesteps)")


def _check_text_and_unet(config: ml_collections.ConfigDict) -> None:
    """model.tokenizer (a readable vocabulary), model.text_encoder and model.unet, each parsed as
    the model will parse it, so a typo fails here in one sentence rather than at the first trace."""
    from diffcorrupt.models.text_encoder import encoder_shape
    from diffcorrupt.models.tokenizer import tokenizer_from_config
    from diffcorrupt.models.unet import unet_overrides

    tokenizer_from_config(config.model)
    if config.model.text_encoder:
        encoder_shape(config.model.text_encoder)
    if config.model.unet and not config.model.name.startswith("LDM-"):
        raise ConfigError(f"config key 'model.unet' is set but model.name '{config.model.name}' is no U-Net; "
                          "set model.unet to '' or use an LDM-* model")
    unet_overrides(config.model.unet)


def _check_batch(config: ml_collections.ConfigDict, num_devices: int, process_count: int) -> None:
    batch = config.train.batch_size
    parallel = data_parallel_size(config.mesh, num_devices)
    if batch % parallel:
        raise ConfigError(
            f"config key 'train.batch_size' is {batch}, not divisible by the data-parallel size {parallel} "
            f"(mesh data x fsdp over {num_devices} devices); use a multiple of {parallel}"
        )
    if batch % (parallel * config.train.grad_accum):
        raise ConfigError(
            f"config key 'train.grad_accum' is {config.train.grad_accum}: the batch of {batch} does not split into "
            f"that many micro-batches of a multiple of {parallel}; pick a divisor of {batch // parallel}"
        )
    if batch % process_count:
        raise ConfigError(
            f"config key 'train.batch_size' is {batch}, not divisible by the {process_count} processes; "
            f"use a multiple of {process_count}"
        )


def _check_corruption_fits(config: ml_collections.ConfigDict, condition: str) -> None:
    kind = config.data.corruption.kind
    allowed = CLASS_CORRUPTIONS if condition == "class" else TEXT_CORRUPTIONS
    if kind not in allowed:
        raise ConfigError(
            f"config key 'data.corruption.kind' is '{kind}', which does not apply to the {condition}-conditional "
            f"dataset '{config.data.name}'; use one of {', '.join(allowed)}"
        )
