"""Reading a released DiT checkpoint: its format, its geometry, and its tensors as our params.

The geometry (width, depth, patch, channels, classes, latent size) is read from the checkpoint
itself, so the common case needs no flags; the preset name it implies (``DiT-XL/2``) must be one
of ours, because our presets also fix what a state dict cannot show (the head count, the MLP
ratio). A diffusers folder states its head count, which is checked against the preset's.

Nothing in a file is executed: ``.pt``/``.bin`` go through ``weights.torch_pickle`` and
``.safetensors`` through ``safetensors.numpy``. Nothing in it is trusted either: the geometry read
from the tensors' shapes and from ``config.json`` is checked (a patch size of 0 would divide by
zero) before anything is computed from it, each failure one sentence.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from diffcorrupt.checkpoint_import.dit_names import (
    Tensors, diffusers_embedder_prefix, diffusers_rules, facebook_rules, to_flax,
)
from diffcorrupt.errors import UserError
from diffcorrupt.models.layers import sincos_2d
from diffcorrupt.models.registry import DIT_PATCHES, DIT_SIZES, example_inputs, make_model
from diffcorrupt.weights.json_settings import read_json_object
from diffcorrupt.weights.safetensors_file import read_safetensors
from diffcorrupt.weights.torch_pickle import load_state_dict

DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclasses.dataclass(frozen=True)
class ImportedDiT:
    """A checkpoint's weights as our params, with what is needed to rebuild the model."""

    source: str  # facebookresearch | diffusers
    model_name: str  # DiT-{S,B,L,XL}/{2,4,8}
    input_shape: tuple[int, int, int]  # latent (H, W, C)
    num_classes: int
    learned_sigma: bool
    params: dict


@dataclasses.dataclass(frozen=True)
class _Geometry:
    hidden: int
    depth: int
    patch: int
    in_channels: int
    out_channels: int
    num_classes: int
    input_size: int
    num_heads: int | None  # known only from a diffusers config


def read_dit(path: str | Path, model_name: str | None = None) -> ImportedDiT:
    """A facebookresearch DiT ``.pt`` file or a diffusers ``DiTTransformer2DModel`` folder (the
    pipeline folder or its ``transformer/``), as our params for ``model_name`` (default: inferred)."""
    path = Path(path)
    if path.is_dir():
        source, (tensors, geometry) = "diffusers", _read_diffusers(path)
        rules, shared = diffusers_rules(geometry.depth), _shared_embedder_names(geometry.depth)
    elif path.is_file():
        source, (tensors, geometry) = "facebookresearch", _read_facebook(path)
        rules, shared = facebook_rules(geometry.depth), {"pos_embed"}
    else:
        raise UserError(f"--from={path} does not exist; give a DiT .pt file or a diffusers DiT folder")
    name = model_name or _preset_name(geometry, path)
    if not name.startswith("DiT-"):
        raise UserError(f"--model={name} is not a DiT; pass a DiT-{{S,B,L,XL}}/{{2,4,8}} name or leave it out")
    learned_sigma = geometry.out_channels == 2 * geometry.in_channels
    if geometry.out_channels not in (geometry.in_channels, 2 * geometry.in_channels):
        raise UserError(f"{path} outputs {geometry.out_channels} channels for {geometry.in_channels} input channels; "
                        "a DiT outputs the same number or twice as many (learned sigma)")
    input_shape = (geometry.input_size, geometry.input_size, geometry.in_channels)
    model = make_model(name, input_shape=input_shape, num_classes=geometry.num_classes, learned_sigma=learned_sigma)
    if geometry.num_heads is not None and geometry.num_heads != model.num_heads:
        raise UserError(f"{path} has {geometry.num_heads} attention heads but model '{name}' has {model.num_heads}; "
                        "only the DiT presets' head counts can be imported")
    abstract = nn.meta.unbox(jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0)}, *example_inputs(model, input_shape))["params"]))
    params = to_flax(tensors, rules, abstract, where=str(path), model_name=name)
    unused = sorted(set(tensors) - {n for rule in rules for n in rule.names} - shared)
    if unused:
        logging.warning("%s: %d tensors have no place in the model and were left out: %s", path, len(unused),
                        ", ".join(unused[:8]) + (", ..." if len(unused) > 8 else ""))
    return ImportedDiT(source, name, input_shape, geometry.num_classes, learned_sigma, params)


def _preset_name(geometry: _Geometry, path: Path) -> str:
    for size, (hidden, depth, _) in DIT_SIZES.items():
        if (hidden, depth) == (geometry.hidden, geometry.depth):
            return f"DiT-{size}/{geometry.patch}"
    known = ", ".join(f"{s} ({h} wide, {d} deep)" for s, (h, d, _) in DIT_SIZES.items())
    raise UserError(f"{path} is a DiT {geometry.hidden} wide and {geometry.depth} deep, which is none of the sizes "
                    f"{known}; only those can be imported")


def _need(tensors: Tensors, name: str, path: Path, what: str) -> np.ndarray:
    if name not in tensors:
        raise UserError(f"{path} has no tensor '{name}', so it is not {what}; check the path")
    return tensors[name]


def _read_facebook(path: Path) -> tuple[Tensors, _Geometry]:
    """The original state dict, as released (the EMA weights). DiT's own training checkpoints also
    pickle an ``argparse.Namespace``, which the safe reader refuses to construct."""
    tensors = load_state_dict(path)
    what = "a facebookresearch DiT state dict"
    embed = _need(tensors, "x_embedder.proj.weight", path, what)
    if embed.ndim != 4 or embed.shape[2] != embed.shape[3] or embed.shape[2] not in DIT_PATCHES or min(embed.shape) < 1:
        raise UserError(f"{path} has a patch embedding x_embedder.proj.weight of shape {list(embed.shape)}; a DiT's is "
                        f"(hidden, channels, p, p) with p one of {', '.join(map(str, DIT_PATCHES))}")
    hidden, channels, patch, _ = embed.shape
    depth = sum(1 for key in tensors if key.startswith("blocks.") and key.endswith(".adaLN_modulation.1.weight"))
    final = _need(tensors, "final_layer.linear.weight", path, what)
    table = _need(tensors, "y_embedder.embedding_table.weight", path, what)
    if final.ndim != 2 or final.shape[0] % (patch * patch) or table.ndim != 2 or table.shape[0] < 2:
        raise UserError(f"{path} has a final layer of shape {list(final.shape)} or a class table of shape "
                        f"{list(table.shape)} that no DiT has (patch x patch x channels outputs; classes + 1 rows)")
    positions = _need(tensors, "pos_embed", path, what)
    grid = int(round(np.sqrt(positions.shape[1]))) if positions.ndim == 3 else 0
    # The shape is checked first: the table is computed only at the size the file already holds.
    if positions.shape != (1, grid * grid, hidden) or grid < 1 or hidden % 4 \
            or not np.allclose(positions[0], sincos_2d(hidden, grid), atol=1e-5):
        raise UserError(f"{path} has a position table of shape {list(positions.shape)} that is not the fixed 2-D "
                        f"sin-cos table of a {grid}x{grid} grid our DiT computes; it cannot be imported")
    out, classes = final.shape[0] // (patch * patch), table.shape[0] - 1
    return tensors, _Geometry(hidden, depth, patch, channels, out, classes, grid * patch, None)


def _diffusers_folder(path: Path) -> Path:
    for folder in (path, path / "transformer"):
        if (folder / "config.json").is_file():
            return folder
    raise UserError(f"{path} has no config.json (nor transformer/config.json); give a diffusers DiT folder")


def _read_diffusers(path: Path) -> tuple[Tensors, _Geometry]:
    folder = _diffusers_folder(path)
    config = read_json_object(folder / "config.json", "download the model again")
    if config.get("norm_type") != "ada_norm_zero" or not config.get("patch_size") or not config.get("num_embeds_ada_norm"):
        raise UserError(f"{folder / 'config.json'} is not a class-conditional DiT (it needs norm_type 'ada_norm_zero', "
                        "a patch_size and num_embeds_ada_norm); give a DiTTransformer2DModel folder")
    where = folder / "config.json"
    heads, head_dim, depth, patch, size, classes = (_config_int(config, key, None, where) for key in (
        "num_attention_heads", "attention_head_dim", "num_layers", "patch_size", "sample_size", "num_embeds_ada_norm"))
    channels = _config_int(config, "in_channels", 4, where)
    if patch not in DIT_PATCHES or size % patch:
        raise UserError(f"{where} sets patch_size {patch} and sample_size {size}; a DiT's patch size is one of "
                        f"{', '.join(map(str, DIT_PATCHES))} and divides the sample size")
    tensors = _read_diffusers_weights(folder)
    geometry = _Geometry(hidden=heads * head_dim, depth=depth, patch=patch, in_channels=channels,
                         out_channels=_config_int(config, "out_channels", channels, where), num_classes=classes,
                         input_size=size, num_heads=heads)
    _warn_unequal_embedders(tensors, geometry.depth, folder)
    return tensors, geometry




def _config_int(config: dict[str, Any], key: str, default: int | None, path: Path) -> int:
    """``config[key]`` (or ``default``; None or 0 also mean the default), a whole number from 1 up."""
    value = config.get(key) or default
    if type(value) is not int or value < 1:
        raise UserError(f"{path} sets '{key}' to {ascii(config.get(key))[:40]}, where a DiT needs a whole number "
                        "from 1 up")
    return value


def _read_diffusers_weights(folder: Path) -> Tensors:
    for name in DIFFUSERS_WEIGHTS:
        if (folder / name).is_file():
            return load_state_dict(folder / name) if name.endswith(".bin") else read_safetensors(folder / name)
    raise UserError(f"{folder} holds none of {', '.join(DIFFUSERS_WEIGHTS)}; the download is incomplete")


_EMBEDDER_PARTS = ("timestep_embedder.linear_1.weight", "timestep_embedder.linear_1.bias",
                   "timestep_embedder.linear_2.weight", "timestep_embedder.linear_2.bias",
                   "class_embedder.embedding_table.weight")


def _shared_embedder_names(depth: int) -> set[str]:
    """Blocks 1.. of a diffusers DiT carry copies of block 0's embedders, which are read instead."""
    return {f"{diffusers_embedder_prefix(i)}.{part}" for i in range(1, depth) for part in _EMBEDDER_PARTS}


def _warn_unequal_embedders(tensors: Tensors, depth: int, folder: Path) -> None:
    """Our DiT, like the original, has one embedder; a converted checkpoint has equal copies."""
    for i in range(1, depth):
        for part in _EMBEDDER_PARTS:
            copy, first = (tensors.get(f"{diffusers_embedder_prefix(j)}.{part}") for j in (i, 0))
            if copy is not None and first is not None and not np.array_equal(copy, first):
                logging.warning("%s: block %d's %s differs from block 0's, which is the one imported (our DiT has "
                                "one timestep and class embedder, as the original)", folder, i, part)
                return
