"""How the tensors of a diffusers ``ControlNetModel`` and ``T2IAdapter`` map onto our control branches.

The ``Rule`` machinery of the DiT and U-Net imports (``dit_names``, ``unet_names``), so
``to_flax`` / ``to_source`` / ``expected_source_shapes`` apply unchanged.

- ``ControlNetModel`` -> ``UNetControlNet``: the copy's embedders, input blocks and middle block
  carry the U-Net's own names (``unet_names.diffusers_encoder_rules``); its
  ``controlnet_cond_embedding`` is our ``hint_embedder`` (the same layers in the same order);
  ``controlnet_down_blocks.{i}`` are our ``zero_convs_{i}`` (one per skip, in order) and
  ``controlnet_mid_block`` our ``middle_block_out``. What the copy has that the folder cannot hold
  (the condition embedder: diffusers feeds a ControlNet the pipeline's text states) comes from the
  base, as training starts it (``control_sources``).
- ``T2IAdapter`` (``full_adapter``) -> ``T2IAdapter``: ``adapter.conv_in``,
  ``adapter.body.{i}.in_conv`` and ``adapter.body.{i}.resnets.{j}.block1/block2``, the same layers.
- A branch trained on Canny edges fed as RGB (SD's canny ControlNets) reads our one-channel edge
  maps exactly once its first kernel's three copies are added up (``folded_conv``).

Which configs fit is read by ``controlnet_settings`` / ``adapter_settings``, which refuse by key
whatever our branches do not compute.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from diffcorrupt.checkpoint_import.dit_names import Path, Rule, _same
from diffcorrupt.checkpoint_import.unet_names import _conv, diffusers_encoder_rules, unet_settings
from diffcorrupt.errors import UserError

# ControlNetModel settings that only ours compute, beside the U-Net's (``unet_settings``).
_CONTROLNET_REQUIRED: dict[str, Any] = {"controlnet_conditioning_channel_order": "rgb", "global_pool_conditions": False}


def folded_conv(path: Path, name: str, copies: int) -> list[Rule]:
    """A Conv2d whose input holds ``copies`` identical copies of ours, channel-major (an edge map
    fed as RGB, before or after a pixel-unshuffle), as a convolution reading it once: the kernels
    of the copies add up, which is exact. ``copies=1`` is a plain convolution."""
    if copies == 1:
        return _conv(path, name)

    def fold(a: Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        out, inputs, height, width = a[0].shape
        return a[0].reshape(out, copies, inputs // copies, height, width).sum(1).transpose(2, 3, 1, 0)

    def unfold(p: Any) -> tuple[Any, ...]:
        return (jnp.concatenate([p.transpose(3, 2, 0, 1) / copies] * copies, axis=1),)

    return [Rule(path + ("kernel",), (f"{name}.weight",), fold, unfold), _same(path + ("bias",), f"{name}.bias")]


def hint_embedder_rules(stages: Sequence[int], copies: int = 1) -> list[Rule]:
    """``ControlNetConditioningEmbedding`` -> our ``HintEmbedder`` (``stages`` its widths), its
    control images ``copies`` times our channels (``folded_conv``)."""
    prefix = "controlnet_cond_embedding"
    rules = folded_conv(("hint_embedder", "conv_in"), f"{prefix}.conv_in", copies)
    for k in range(2 * (len(stages) - 1)):
        rules += _conv(("hint_embedder", f"blocks_{k}"), f"{prefix}.blocks.{k}")
    return rules + _conv(("hint_embedder", "conv_out"), f"{prefix}.conv_out")


def controlnet_rules(settings: dict[str, Any], stages: Sequence[int], copies: int = 1) -> list[Rule]:
    """Rules for every parameter of a ``UNetControlNet`` with these U-Net ``settings`` (as
    ``unet_settings`` returns them) whose hint embedder has ``stages``, but its condition embedder."""
    rules = diffusers_encoder_rules(**settings) + hint_embedder_rules(stages, copies)
    levels, per_level = len(settings["channel_mult"]), settings["num_res_blocks"]
    skips = 1 + levels * per_level + levels - 1  # conv_in, each resnet, each downsampler
    for i in range(skips):
        rules += _conv((f"zero_convs_{i}",), f"controlnet_down_blocks.{i}")
    return rules + _conv(("middle_block_out",), "controlnet_mid_block")


def controlnet_settings(config: dict[str, Any], where: str) -> tuple[dict[str, Any], int, tuple[int, ...]]:
    """(the copy's U-Net settings, the control images' channels, the hint embedder's stage widths)
    of a ``ControlNetModel`` config; a ``UserError`` names the first setting we do not compute."""
    settings = unet_settings(config, where, kind="ControlNetModel")
    for key, value in _CONTROLNET_REQUIRED.items():
        if config.get(key, value) != value:
            raise UserError(f"{where} sets '{key}' to {config[key]!r}; our ControlNet computes only {value!r} there")
    stages = tuple(int(c) for c in config.get("conditioning_embedding_out_channels") or (16, 32, 96, 256))
    return settings, int(config.get("conditioning_channels", 3)), stages


def adapter_rules(num_res_blocks: int, widths: Sequence[int], copies: int = 1) -> list[Rule]:
    """Rules for every parameter of our ``T2IAdapter`` of these level ``widths`` (diffusers'
    ``FullAdapter``: a 1x1 ``in_conv`` where a level widens)."""
    rules = folded_conv(("conv_in",), "adapter.conv_in", copies)
    for i in range(len(widths)):
        body = f"adapter.body.{i}"
        if i and widths[i] != widths[i - 1]:
            rules += _conv((f"body_{i}", "in_conv"), f"{body}.in_conv")
        for j in range(num_res_blocks):
            for block in ("block1", "block2"):
                rules += _conv((f"body_{i}", f"resnets_{j}", block), f"{body}.resnets.{j}.{block}")
    return rules


def adapter_settings(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The fields of a ``T2IAdapter`` config that ours has (in_channels, channels, num_res_blocks,
    downscale_factor); a ``UserError`` names what ours does not compute."""
    if config.get("_class_name") != "T2IAdapter":
        raise UserError(f"{where} describes a {config.get('_class_name') or 'model of no _class_name'}, not a "
                        "T2IAdapter")
    kind = config.get("adapter_type", "full_adapter")
    if kind != "full_adapter":
        raise UserError(f"{where} sets 'adapter_type' to {kind!r}; only 'full_adapter' (the SD-1.x adapters) is "
                        "computed")
    return {"in_channels": int(config.get("in_channels", 3)),
            "channels": tuple(int(c) for c in config.get("channels", (320, 640, 1280, 1280))),
            "num_res_blocks": int(config.get("num_res_blocks", 2)),
            "downscale_factor": int(config.get("downscale_factor", 8))}
