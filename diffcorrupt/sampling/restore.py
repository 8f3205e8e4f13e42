"""A trained run's EMA weights, read from its orbax checkpoint without the optimizer state.

The sampler needs only the model and its EMA parameters: restoring the whole train state would
read (and hold in memory) the AdamW moments, three times the parameters again. orbax's partial
restore reads the ``ema_params`` subtree alone, straight into the shardings of the sampling mesh,
whatever mesh wrote it. The model is rebuilt from the config saved beside the weights, so a run
is sampled with exactly the architecture it was trained with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import flax.linen as nn
import grain.checkpoint
import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from diffcorrupt.autoencoders.storage import LoadedAutoencoder, load_autoencoder
from diffcorrupt.config.schema import base_config
from diffcorrupt.diffusion.schedules import Schedule, make_schedule
from diffcorrupt.errors import UserError
from diffcorrupt.models.registry import example_inputs, model_from_config
from diffcorrupt.models.tokenizer import Tokenizer, tokenizer_from_config
from diffcorrupt.parallel.sharding import Rules, rules_from_config, variable_shardings
from diffcorrupt.training.checkpoints import error_cause

MODEL_SPEC = "model.json"  # written by the train job: what the model needs beyond the config


@dataclasses.dataclass
class RestoredModel:
    config: ml_collections.ConfigDict
    step: int
    model: nn.Module
    params: Any  # EMA parameters, sharded over the sampling mesh
    input_shape: tuple[int, int, int]
    num_classes: int  # 0 for a text-conditional model
    tokenizer: Tokenizer | None
    schedule: Schedule
    rules: Rules
    autoencoder: LoadedAutoencoder | None = None  # decodes the samples of a latent model
    base: "RestoredModel | None" = None  # a personalized run's frozen base; ``model`` is then its control branch
    control_shape: tuple[int, int, int] | None = None  # a personalized run's control images


def write_model_spec(workdir: Path, input_shape: tuple[int, ...], num_classes: int, autoencoder: str | None,
                     control_shape: tuple[int, ...] | None = None) -> None:
    """Records the model's input shape, class count, (for a latent model) the autoencoder that
    made its latents and (for a personalized run) the shape of its control images, which the
    config alone does not fix (they come from the dataset), so that sampling never needs the
    training data."""
    spec = {"input_shape": list(input_shape), "num_classes": num_classes, "autoencoder": autoencoder}
    if control_shape is not None:
        spec["control_shape"] = list(control_shape)
    (workdir / MODEL_SPEC).write_text(json.dumps(spec) + "\n")


def restore_ema(workdir: str | Path, mesh: Mesh, step: int | None = None,
                autoencoder: str | None = None) -> RestoredModel:
    """The EMA weights of ``step`` (default: the newest) of the run in ``workdir``, and for a latent
    model its autoencoder (the one recorded at training, or ``autoencoder``)."""
    workdir = Path(workdir)
    manager, step = _open(workdir, step)
    config = _read_config(manager, step)
    input_shape, num_classes, recorded, control_shape = model_spec(workdir, config)
    autoencoder = autoencoder or recorded
    model = model_from_config(config, input_shape, num_classes)
    inputs, base = example_inputs(model, input_shape), None
    if config.personalize.base:  # the checkpoint holds the control branch; the base is read from its own run
        from diffcorrupt.models.control_branch import example_branch_inputs, make_control

        if control_shape is None:
            raise UserError(f"{workdir} is a personalized run whose {MODEL_SPEC} records no control_shape; "
                            "train it on with this version of diffcorrupt")
        model = make_control(config.personalize.method, model, input_shape[0], config.personalize.copies)
        inputs = example_branch_inputs(model, input_shape, control_shape)
        base = restore_ema(config.personalize.base, mesh, config.personalize.base_step or None, autoencoder)
    rules = rules_from_config(config.mesh.rules)
    abstract = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *inputs)["params"])
    shardings = variable_shardings(abstract, mesh, rules)
    target = jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                          nn.meta.unbox(abstract), shardings)
    with _unreadable_as_sentence(manager, step):
        saved = manager.item_metadata(step)["state"]["ema_params"]
    _check_shapes(saved, target, config.model.name, manager.directory / str(step))
    item = {"ema_params": target}
    with _unreadable_as_sentence(manager, step):
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
    manager.close()
    tokenizer = None if num_classes else tokenizer_from_config(config.model)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
    return RestoredModel(config, step, model, restored.state["ema_params"], input_shape, num_classes, tokenizer,
                         schedule, rules, _autoencoder(autoencoder, config), base, control_shape)


def saved_run_config(workdir: str | Path, step: int | None = None) -> ml_collections.ConfigDict:
    """The config a run saved with checkpoint ``step`` (default: the newest)."""
    manager, step = _open(Path(workdir), step)
    config = _read_config(manager, step)
    manager.close()
    return config


def newest_step(workdir: str | Path) -> int:
    """The step of the run's newest checkpoint."""
    manager, step = _open(Path(workdir), None)
    manager.close()
    return step


def _open(workdir: Path, step: int | None) -> tuple[ocp.CheckpointManager, int]:
    """A read-only manager over the run's checkpoints (the sampler may read a run it cannot write),
    and the step asked for, checked to exist."""
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        raise UserError(f"{workdir} holds no checkpoints/ folder; pass the --workdir of a train run")
    manager = ocp.CheckpointManager(
        directory.absolute(),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()},  # known, so orbax does not warn; never read
        options=ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0),
    )
    steps = sorted(manager.all_steps())
    if not steps:
        raise UserError(f"{directory} holds no checkpoint yet; train first or pass another --workdir")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise UserError(f"{directory} has no checkpoint of step {step}; it has steps {', '.join(map(str, steps))}")
    return manager, step


def _read_config(manager: ocp.CheckpointManager, step: int) -> ml_collections.ConfigDict:
    with _unreadable_as_sentence(manager, step):
        saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    return _config_from_saved(saved)


@contextlib.contextmanager
def _unreadable_as_sentence(manager: ocp.CheckpointManager, step: int) -> Iterator[None]:
    """A checkpoint that does not read back (truncated, corrupted) as one sentence naming it and the
    step to use instead. Unlike training, which falls back by itself, sampling refuses: samples
    labelled with one step must come from that step."""
    try:
        yield
    except Exception as err:  # a corrupt checkpoint can fail in any layer of orbax/tensorstore
        earlier = [s for s in manager.all_steps() if s < step]
        instead = (f"use the one before it, step {max(earlier)} (sample --step={max(earlier)}, "
                   f"report --checkpoints={max(earlier)})" if earlier else "it is the run's only one: train again")
        reason = error_cause(err).rsplit(": ", 1)[-1]  # tensorstore nests its causes; the last is the root
        raise UserError(f"the checkpoint of step {step} in {manager.directory} does not read back "
                        f"({reason}); {instead}") from None


def _config_from_saved(saved: dict) -> ml_collections.ConfigDict:
    """The saved config on top of today's defaults, so keys added to the schema since keep their
    defaults (which, by the schema's rule, reproduce the old behaviour)."""
    config = base_config()

    def merge(target: ml_collections.ConfigDict, values: dict) -> None:
        for key, value in values.items():
            if key not in target:
                continue
            if isinstance(value, dict):
                merge(target[key], value)
            else:
                target[key] = type(target[key])(value) if isinstance(target[key], tuple) else value

    merge(config, saved)
    return config


def model_spec(workdir: Path, config: ml_collections.ConfigDict) -> tuple[tuple[int, int, int], int, str | None,
                                                                         tuple[int, int, int] | None]:
    """(input shape, class count, autoencoder folder, control shape) of the run in ``workdir``."""
    spec_path = workdir / MODEL_SPEC
    if spec_path.is_file():
        spec = json.loads(spec_path.read_text())
        control = spec.get("control_shape")
        return (tuple(spec["input_shape"]), int(spec["num_classes"]), spec.get("autoencoder"),
                None if control is None else tuple(control))
    # A run written before the train job recorded its model spec: ask the dataset.
    from diffcorrupt.data.sources.registry import make_source
    from diffcorrupt.training.batches import input_spec

    source = make_source(config.data)
    meta = getattr(source, "meta", None) or {}
    return (*input_spec(config, source), (meta.get("autoencoder") or {}).get("path"), None)


def _autoencoder(path: str | None, config: ml_collections.ConfigDict) -> LoadedAutoencoder | None:
    if config.data.name != "latent_records":
        return None
    if not path:
        raise UserError("this run was trained on latents and records no autoencoder to decode them; "
                        "pass --autoencoder=DIR (a folder written by tools/convert_autoencoder.py or `diffcorrupt autoencoder`)")
    if not Path(path).is_dir():
        raise UserError(f"the run's autoencoder {path} is not there; pass --autoencoder=DIR to use a copy of it")
    return load_autoencoder(path)


def _check_shapes(saved: Any, target: Any, model_name: str, where: Path) -> None:
    """Names the first parameter whose saved shape the configured model does not have: a checkpoint
    of another model gets one sentence instead of an orbax traceback."""
    saved_flat = {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(saved)}
    for path, leaf in jax.tree_util.tree_leaves_with_path(target):
        name = jax.tree_util.keystr(path)
        got = saved_flat.get(name)
        if got != tuple(leaf.shape):
            found = "is missing" if got is None else f"has shape {list(got)}"
            raise UserError(f"the checkpoint in {where} does not fit model '{model_name}': parameter {name} {found}, "
                            f"the model expects {list(leaf.shape)}; sample it with the code and "
                            "config that trained it")
