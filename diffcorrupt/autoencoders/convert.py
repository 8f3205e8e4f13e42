"""Released autoencoder weights -> Flax params, shape-checked against the configured module.

Two layouts: a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` or
``.bin``), which carries its own architecture, and a CompVis / taming checkpoint (a Lightning
``.ckpt`` with the tensors under ``state_dict``, or a bare state dict), which does not, so a preset
names it. PyTorch files are read by ``diffcorrupt.weights.torch_pickle``, which runs nothing from
them. Every Flax parameter is looked up by its CompVis name (diffusers names are derived from it),
so both layouts share one table; the first missing or misshapen tensor is named in the error.
"""

from __future__ import annotations

import pathlib
import re
from typing import Callable

import numpy as np
import safetensors
import safetensors.numpy

from diffcorrupt.autoencoders.presets import AutoencoderConfig, preset as preset_config
from diffcorrupt.autoencoders.storage import param_shapes, unflatten_params
from diffcorrupt.errors import UserError
from diffcorrupt.weights.json_settings import read_json_object
from diffcorrupt.weights.torch_pickle import load_state_dict

MODEL_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

# Flax module names (see blocks.py) -> CompVis module names.
_FLAX_TO_COMPVIS = [
    (re.compile(r"\b(down|up)_(\d+)_block_(\d+)\b"), r"\1.\2.block.\3"),
    (re.compile(r"\bdown_(\d+)_downsample\b"), r"down.\1.downsample"),
    (re.compile(r"\bup_(\d+)_upsample\b"), r"up.\1.upsample"),
    (re.compile(r"\bmid_(block_1|block_2|attn_1)\b"), r"mid.\1"),
]
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}

# CompVis names -> diffusers names; the attention has had two sets of names in diffusers.
_COMPVIS_TO_DIFFUSERS = [
    (r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
    (r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0."),
    (r"\.mid\.block_1\.", ".mid_block.resnets.0."),
    (r"\.mid\.block_2\.", ".mid_block.resnets.1."),
    (r"\.mid\.attn_1\.norm\.", ".mid_block.attentions.0.group_norm."),
    (r"\.mid\.attn_1\.", ".mid_block.attentions.0."),
    (r"\.nin_shortcut\.", ".conv_shortcut."),
    (r"\.norm_out\.", ".conv_norm_out."),
]
_ATTENTION_NAMES = {
    "q": ("to_q", "query"),
    "k": ("to_k", "key"),
    "v": ("to_v", "value"),
    "proj_out": ("to_out.0", "proj_attn"),
}


def compvis_name(flax_path: str) -> str:
    """``decoder/up_1_block_0/conv1/kernel`` -> ``decoder.up.1.block.0.conv1.weight``."""
    if flax_path == "codebook":
        return "quantize.embedding.weight"
    *modules, leaf = flax_path.split("/")
    name = ".".join(modules)
    for pattern, replacement in _FLAX_TO_COMPVIS:
        name = pattern.sub(replacement, name)
    return f"{name}.{_LEAVES[leaf]}"


def diffusers_names(name: str, levels: int) -> list[str]:
    """The diffusers names of a CompVis tensor name (current first, then the pre-0.15 attention
    names); the decoder's ``up`` list counts levels from the finest, diffusers' ``up_blocks`` from
    the coarsest."""
    up = re.match(r"^decoder\.up\.(\d+)\.(block\.(\d+)|upsample)\.", name)
    if up:
        inner = f"resnets.{up.group(3)}." if up.group(3) is not None else "upsamplers.0."
        name = f"decoder.up_blocks.{levels - 1 - int(up.group(1))}.{inner}{name[up.end():]}"
    for pattern, replacement in _COMPVIS_TO_DIFFUSERS:
        name = re.sub(pattern, replacement, name)
    attention = re.match(r"^(.*\.attentions\.0\.)(q|k|v|proj_out)\.(weight|bias)$", name)
    if attention:
        head, which, leaf = attention.groups()
        return [f"{head}{alias}.{leaf}" for alias in _ATTENTION_NAMES[which]]
    return [name]


def _torch_shape(path: str, shape: tuple[int, ...], dense_is_conv: bool) -> list[int]:
    """The shape the PyTorch tensor of Flax parameter ``path`` must have."""
    if len(shape) == 4:  # conv kernel: Flax HWIO, torch OIHW
        return [shape[3], shape[2], shape[0], shape[1]]
    if path.endswith("/kernel"):  # attention projection: Flax (in, out), torch Linear or 1x1 conv
        return [shape[1], shape[0], 1, 1] if dense_is_conv else [shape[1], shape[0]]
    return list(shape)  # biases, norms, the codebook


def _to_flax(array: np.ndarray, path: str, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor of the shape ``_torch_shape`` gave, in Flax layout."""
    if len(shape) == 4:
        return array.transpose(2, 3, 1, 0)
    if path.endswith("/kernel"):
        return array.reshape(shape[1], shape[0]).T
    return array


def _assemble(
    tensors: dict[str, np.ndarray],
    config: AutoencoderConfig,
    names_of: Callable[[str], list[str]],
    dense_is_conv: bool,
    where: str,
) -> dict:
    """Flax params for ``config`` from ``tensors``; ``UserError`` at the first tensor that is
    missing or misshapen, or for a model tensor left over (a different architecture)."""
    flat: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for path, shape in param_shapes(config).items():
        candidates = names_of(path)
        expected = _torch_shape(path, shape, dense_is_conv)
        found = next((name for name in candidates if name in tensors), None)
        if found is None:
            raise UserError(f"{where}: {candidates[0]} is missing, expected shape {expected}")
        if list(tensors[found].shape) != expected:
            raise UserError(f"{where}: {found} has shape {list(tensors[found].shape)}, expected {expected}")
        flat[path] = np.ascontiguousarray(_to_flax(np.asarray(tensors[found], dtype=np.float32), path, shape))
        used.add(found)
    extra = sorted(name for name in tensors if name.startswith(MODEL_PREFIXES) and name not in used)
    if extra:
        raise UserError(f"{where}: it has {extra[0]}, which the configured autoencoder lacks")
    return unflatten_params(flat)


def import_compvis(ckpt_path: str | pathlib.Path, preset: str) -> tuple[AutoencoderConfig, dict]:
    """A CompVis / taming first-stage checkpoint as (config of ``preset``, Flax params).

    Tensors outside the model (``loss.*``, optimiser state, ...) are ignored.
    """
    config = preset_config(preset)
    tensors = load_state_dict(ckpt_path)
    if any(name.startswith("state_dict.") for name in tensors):
        prefix = "state_dict."
        tensors = {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}
    where = f"{ckpt_path} does not fit preset {preset!r}"
    params = _assemble(tensors, config, lambda path: [compvis_name(path)], True, where)
    return config, params


def _diffusers_config(folder: pathlib.Path) -> AutoencoderConfig:
    path = folder / "config.json"
    raw = read_json_object(path, "point --from at a diffusers autoencoder folder")
    kind = {"AutoencoderKL": "kl", "VQModel": "vq"}.get(raw.get("_class_name"))
    if kind is None:
        raise UserError(f"{path} describes a {raw.get('_class_name')!r}; only AutoencoderKL and VQModel are supported")
    blocks = tuple(raw.get("block_out_channels", (64,)))
    latent = raw.get("latent_channels", 4 if kind == "kl" else 3)
    # The only block types supported; a config without them gets diffusers' default, one of each.
    down, up = ("DownEncoderBlock2D",) * len(blocks), ("UpDecoderBlock2D",) * len(blocks)
    unsupported = {
        "act_fn": (raw.get("act_fn", "silu"), "silu"),
        "down_block_types": (tuple(raw.get("down_block_types", down[:1])), down),
        "up_block_types": (tuple(raw.get("up_block_types", up[:1])), up),
        "norm_type": (raw.get("norm_type", "group"), "group"),
        "use_quant_conv": (raw.get("use_quant_conv", True), True),
        "use_post_quant_conv": (raw.get("use_post_quant_conv", True), True),
        "vq_embed_dim": (raw.get("vq_embed_dim") or latent, latent),
    }
    for key, (value, supported) in unsupported.items():
        if value != supported:
            raise UserError(f"{path} sets {key} to {value!r}; only {supported!r} is supported")
    return AutoencoderConfig(
        kind=kind,
        in_channels=raw.get("in_channels", 3),
        out_channels=raw.get("out_channels", 3),
        block_out_channels=blocks,
        layers_per_block=raw.get("layers_per_block", 1),
        latent_channels=latent,
        norm_num_groups=raw.get("norm_num_groups", 32),
        codebook_size=raw.get("num_vq_embeddings", 256) if kind == "vq" else 0,
        mid_attention=raw.get("mid_block_add_attention", True),
        scale_factor=float(raw.get("scaling_factor", 0.18215 if kind == "kl" else 1.0)),
    )


def _read_diffusers_weights(folder: pathlib.Path) -> dict[str, np.ndarray]:
    for name in DIFFUSERS_WEIGHTS:
        path = folder / name
        if path.is_file() and name.endswith(".safetensors"):
            try:
                return safetensors.numpy.load_file(str(path))
            except (safetensors.SafetensorError, OSError) as error:
                raise UserError(f"{path} is not a readable safetensors file ({error}); download it again") from None
        if path.is_file():
            return load_state_dict(path)
    raise UserError(f"{folder} has none of {', '.join(DIFFUSERS_WEIGHTS)}; download the autoencoder's weights")


def import_diffusers(folder: str | pathlib.Path) -> tuple[AutoencoderConfig, dict]:
    """A diffusers ``AutoencoderKL`` / ``VQModel`` folder as (its config, Flax params)."""
    folder = pathlib.Path(folder)
    config = _diffusers_config(folder)
    tensors = _read_diffusers_weights(folder)
    levels = len(config.block_out_channels)
    names_of = lambda path: diffusers_names(compvis_name(path), levels)  # noqa: E731
    return config, _assemble(tensors, config, names_of, False, f"{folder} does not fit its config.json")
