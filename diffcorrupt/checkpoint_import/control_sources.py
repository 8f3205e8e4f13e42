"""Reading a diffusers ``ControlNetModel`` or ``T2IAdapter`` folder as a personalized run of one of
our U-Net runs, as if `diffcorrupt train --config.personalize.base=RUN` had trained it.

A control branch means nothing without the model it was trained beside, so the import names that
model: a finished run of ours (e.g. an LDM that ``tools/import_ldm.py`` imported, or one trained
here) whose U-Net is the geometry the ControlNet copied or the adapter feeds. Everything is checked
before any weights are converted, and refused in one sentence naming the setting: the U-Net's
geometry, the control images' channels and size (a ControlNet's conditioning embedding and an
adapter's downscale factor fix how much larger than the latents they are), the folder's kind.

What a diffusers ControlNet does not hold, its condition embedder (diffusers feeds it the
pipeline's text states), is the base's, exactly as training initialises the copy. Weights:
``diffusion_pytorch_model.safetensors`` when present, else the PyTorch ``.bin`` through
``weights.torch_pickle``, which runs nothing from the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from diffcorrupt.checkpoint_import.control_names import (
    adapter_rules, adapter_settings, controlnet_rules, controlnet_settings,
)
from diffcorrupt.checkpoint_import.dit_names import Rule
from diffcorrupt.checkpoint_import.ldm_sources import UNET_WEIGHTS, _convert, _json, _weights
from diffcorrupt.config.schema import base_config
from diffcorrupt.config.validate import validate
from diffcorrupt.data.control_maps import control_channels
from diffcorrupt.data.latent_encoding import pixel_data_config
from diffcorrupt.data.sources.controls import check_control_dir
from diffcorrupt.errors import UserError
from diffcorrupt.models.control_branch import example_branch_inputs, make_control
from diffcorrupt.models.hint_embedder import stage_widths
from diffcorrupt.models.unet import OVERRIDABLE, UNet
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.sampling.restore import RestoredModel, model_spec, restore_ema

KINDS = {"ControlNetModel": "controlnet", "T2IAdapter": "t2i-adapter"}
CONTROLS = ("canny", "folder")  # data.control values: how the run's control images are drawn
ADAPTER_RES_BLOCKS = 2  # our T2IAdapter's, diffusers' default


@dataclasses.dataclass(frozen=True)
class ImportedControl:
    """A control folder as a personalized run: its config (``personalize.base`` the base run), the
    branch's params, and what ``model.json`` records."""

    config: ml_collections.ConfigDict
    params: dict
    input_shape: tuple[int, int, int]
    num_classes: int
    autoencoder: str | None
    control_shape: tuple[int, int, int]


def read_control(folder: str | Path, base: str | Path, control: str = "canny", control_dir: str = "") -> ImportedControl:
    """The ``ControlNetModel`` / ``T2IAdapter`` folder ``folder`` beside the run in ``base``, whose
    control images are drawn as ``data.control=control`` (from ``control_dir`` for ``folder``); a
    ``UserError`` names what does not fit."""
    folder, base = Path(folder), Path(base).absolute()
    if control not in CONTROLS:
        raise UserError(f"--control={control}: name how the control images are drawn, one of {', '.join(CONTROLS)}")
    if control == "folder":
        check_control_dir(control_dir)
    if not (folder / "config.json").is_file():
        raise UserError(f"--from={folder} holds no config.json; give a diffusers ControlNetModel or T2IAdapter folder "
                        "(config.json and diffusion_pytorch_model.safetensors)")
    config = _json(folder / "config.json")
    kind = KINDS.get(config.get("_class_name"))
    if kind is None:
        raise UserError(f"{folder / 'config.json'} describes a {config.get('_class_name') or 'model of no _class_name'}; "
                        f"only {' and '.join(KINDS)} folders are control branches")
    restored = _base(base)
    unet, size, where = restored.model, restored.input_shape[0], folder / "config.json"
    reader = _controlnet if kind == "controlnet" else _adapter
    rules, control_shape = reader(config, where, unet, size, control)
    run = _run_config(restored, base, kind, control, control_dir)
    drawn = pixel_data_config(run.data).image_size
    if control_shape[0] != drawn:
        raise UserError(f"{where} reads {control_shape[0]}x{control_shape[0]} control images for the base's "
                        f"{size}x{size} inputs, but the base's data draws them at {drawn}x{drawn}; import it beside "
                        "the run it was trained on")
    branch = make_control(kind, unet, size)
    abstract = nn.meta.unbox(jax.eval_shape(lambda: branch.init(
        {"params": jax.random.key(0)}, *example_branch_inputs(branch, restored.input_shape, control_shape))["params"]))
    params = _convert(_weights(folder, UNET_WEIGHTS), rules, abstract, folder, ())
    _from_base(params, abstract, rules, restored.params)
    _, _, autoencoder, _ = model_spec(base, restored.config)
    return ImportedControl(run, params, restored.input_shape, restored.num_classes, autoencoder, control_shape)


def _base(base: Path) -> RestoredModel:
    if not (base / "checkpoints").is_dir():
        raise UserError(f"--base={base} holds no checkpoints/; name the run the control branch was trained beside")
    restored = restore_ema(base, make_mesh(base_config().mesh))
    if restored.config.personalize.base or restored.config.distill.teacher:
        raise UserError(f"--base={base} is itself a personalized or distilled run; name the pre-trained run")
    if not isinstance(restored.model, UNet):
        raise UserError(f"--base={base} is a {restored.config.model.name}; diffusers' ControlNetModel and T2IAdapter "
                        "feed a U-Net (an LDM-* run)")
    return restored


def _copies(channels: int, control: str, where: Path) -> int:
    """How many copies of our control channels the folder's branch reads: 1, or 3 for Canny edges
    fed as RGB."""
    ours = control_channels(control)
    if channels == ours or (control == "canny" and channels == 3):
        return channels // ours
    raise UserError(f"{where} reads {channels}-channel control images but --control={control} draws {ours}-channel "
                    "ones; pick the --control it was trained on")


def _controlnet(config: dict[str, Any], where: Path, unet: UNet, size: int,
                control: str) -> tuple[list[Rule], tuple[int, int, int]]:
    settings, channels, stages = controlnet_settings(config, str(where))
    copies = _copies(channels, control, where)
    for key in ("in_channels", *OVERRIDABLE):
        if key in settings and settings[key] != getattr(unet, key):
            raise UserError(f"{where} copies a U-Net with {key} {settings[key]!r} but the base's is "
                            f"{getattr(unet, key)!r}; import it beside the run it was trained on")
    if stages != stage_widths(len(stages) - 1):
        raise UserError(f"{where} sets 'conditioning_embedding_out_channels' to {list(stages)}; our ControlNet's "
                        f"encoder halving {len(stages) - 1} times has {list(stage_widths(len(stages) - 1))}")
    return controlnet_rules(settings, stages, copies), (size * 2 ** (len(stages) - 1),) * 2 + (channels // copies,)


def _adapter(config: dict[str, Any], where: Path, unet: UNet, size: int,
             control: str) -> tuple[list[Rule], tuple[int, int, int]]:
    settings = adapter_settings(config, str(where))
    copies = _copies(settings["in_channels"], control, where)
    widths = tuple(m * unet.model_channels for m in unet.channel_mult)
    if settings["channels"] != widths:
        raise UserError(f"{where} feeds levels of {list(settings['channels'])} channels but the base's U-Net has "
                        f"{list(widths)}; import it beside the run it was trained on")
    if settings["num_res_blocks"] != ADAPTER_RES_BLOCKS:
        raise UserError(f"{where} sets 'num_res_blocks' to {settings['num_res_blocks']}; our T2I-Adapter has "
                        f"{ADAPTER_RES_BLOCKS} per level")
    factor = settings["downscale_factor"]
    if factor & (factor - 1):
        raise UserError(f"{where} sets 'downscale_factor' to {factor}; ours pixel-unshuffles by a power of two")
    return (adapter_rules(ADAPTER_RES_BLOCKS, widths, copies),
            (size * factor, size * factor, settings["in_channels"] // copies))


def _run_config(restored: RestoredModel, base: Path, kind: str, control: str,
                control_dir: str) -> ml_collections.ConfigDict:
    """The base's config turned into its personalization's, as `train` would have saved it."""
    config = ml_collections.ConfigDict(restored.config.to_dict())
    config.personalize.base = str(base)
    config.personalize.base_step = restored.step
    config.personalize.method = kind
    config.personalize.copies = 0
    config.data.control, config.data.control_dir = control, control_dir
    config.train.sample_every = 0
    validate(config, check_data=False)
    return config


def _from_base(params: dict, abstract: Any, rules: list[Rule], base_params: Any) -> None:
    """Fills the branch parameters that no rule covers (the condition embedder) from the base's."""
    covered = {rule.path for rule in rules}
    for path, _ in jax.tree_util.tree_leaves_with_path(abstract):
        keys = tuple(k.key for k in path)
        if keys not in covered:
            node, tree = base_params, params
            for key in keys:
                node = node[key]
            for key in keys[:-1]:
                tree = tree.setdefault(key, {})
            tree[keys[-1]] = np.asarray(node)
