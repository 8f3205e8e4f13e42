"""An imported model written as a workdir that the sample job reads like one the train job wrote.

The checkpoint has the train job's layout (``checkpoints/<step>/{state,config}``, the same orbax
item handlers) and a whole ``TrainState``: the imported weights serve as both the parameters and
the EMA parameters (released DiT weights are the EMA ones), and the optimizer state is the
configured optimizer's fresh ``init``, so the tree is exactly the one training writes and
restores. ``model.json`` records what the config does not fix (input shape, class count) and the
autoencoder that decodes the latents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from diffcorrupt.errors import UserError
from diffcorrupt.output_paths import output_folder
from diffcorrupt.models.control_branch import example_branch_inputs, make_control
from diffcorrupt.models.registry import example_inputs, model_from_config
from diffcorrupt.sampling.restore import write_model_spec
from diffcorrupt.training.optimizer import make_optimizer
from diffcorrupt.training.state import TrainState


def check_fresh_workdir(workdir: str | Path) -> Path:
    """``workdir`` (absolute) when an import may write there: a folder, or a path one can be made
    at, that holds no checkpoints. Checked before the weights are read, and again before writing."""
    workdir = output_folder(workdir, "--workdir").absolute()
    checkpoints = workdir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        raise UserError(f"--workdir={workdir} already holds checkpoints; import into a fresh --workdir")
    return workdir


def write_imported_run(workdir: str | Path, config: ml_collections.ConfigDict, params: Any,
                       input_shape: tuple[int, int, int], num_classes: int, autoencoder: str | None,
                       step: int = 0, control_shape: tuple[int, int, int] | None = None) -> Path:
    """Writes ``<workdir>/checkpoints/<step>/`` and ``<workdir>/model.json``; returns the step folder.

    ``params`` must have the tree and shapes of ``config``'s model (checked, naming the first
    difference), or for a personalized run (``config.personalize.base`` set) of its control branch
    reading control images of ``control_shape``. A workdir that already holds checkpoints is
    refused: an import never mixes with, or overwrites, a run.
    """
    workdir = check_fresh_workdir(workdir)
    directory = workdir / "checkpoints"
    params = jax.tree.map(jnp.asarray, params)
    _check_tree(params, config, input_shape, num_classes, control_shape)
    optimizer, _ = make_optimizer(config.train)
    state = TrainState(
        step=jnp.asarray(step, jnp.int32), params=params, ema_params=params, opt_state=optimizer.init(params),
        rng=jax.random.key_data(jax.random.split(jax.random.key(config.seed))[1]),  # the run key create_state makes
        first_nonfinite_step=jnp.full((), -1, jnp.int32),
    )
    directory.mkdir(parents=True, exist_ok=True)
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=False),
        item_handlers={"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()},
    )
    try:
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   config=ocp.args.JsonSave(config.to_dict())), force=True)
        manager.wait_until_finished()
    finally:
        manager.close()
    write_model_spec(workdir, input_shape, num_classes, autoencoder, control_shape)
    return directory / str(step)


def _check_tree(params: Any, config: ml_collections.ConfigDict, input_shape: tuple[int, int, int],
                num_classes: int, control_shape: tuple[int, int, int] | None) -> None:
    """Names the first parameter whose presence or shape differs from the configured model's."""
    model = model_from_config(config, input_shape, num_classes)
    inputs = example_inputs(model, input_shape)
    if config.personalize.base:
        model = make_control(config.personalize.method, model, input_shape[0], config.personalize.copies)
        inputs = example_branch_inputs(model, input_shape, control_shape)
    abstract = nn.meta.unbox(jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *inputs)["params"]))
    want = {jax.tree_util.keystr(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_leaves_with_path(abstract)}
    have = {jax.tree_util.keystr(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_leaves_with_path(params)}
    for name in sorted(set(want) | set(have)):
        if want.get(name) != have.get(name):
            found = "is missing" if name not in have else f"has shape {list(have[name])}"
            needed = f"the model needs {list(want[name])}" if name in want else "the model has no such parameter"
            raise UserError(f"the imported parameter {name} {found} but {needed} for model '{config.model.name}'; "
                            "import with the --model the weights were trained as")
