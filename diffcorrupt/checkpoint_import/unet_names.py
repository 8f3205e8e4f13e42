"""How the tensors of a diffusers ``UNet2DConditionModel`` map onto our latent-diffusion ``UNet``.

The same ``Rule`` machinery as the DiT import (``dit_names``): each rule names one of our
parameters, the diffusers tensors it is made of and the layout change both ways, so
``dit_names.to_flax`` / ``to_source`` / ``expected_source_shapes`` apply unchanged.

Which diffusers folders fit: a ``UNet2DConditionModel`` is CompVis' ``UNetModel`` with
``use_spatial_transformer`` renamed (diffusers' ``scripts/convert_ldm_original_checkpoint_to_diffusers.py``
is the renaming), and computes the same function when its config says so; ``unet_settings``
reads a config and refuses, by key, whatever our U-Net does not compute. Two things are not
there and cannot be:
- a ``UNet2DModel`` (the unconditional / ``class_embed_type`` U-Net): its attention blocks are
  single GroupNorm self-attention layers (``AttnDownBlock2D``), not spatial transformers, so it is
  a different network;
- ``class_embed_type``/``num_class_embeds``: diffusers adds the class embedding to the timestep
  embedding, while LDM (and our U-Net) feeds the class embedding as a one-token cross-attention
  context. The class table of an LDM lives outside ``unet/`` (CompVis ``cond_stage_model``).

Layout: numeric segments of diffusers' names become part of our module names the CompVis way
(see ``models/unet.py``), and the block indices change: diffusers groups by level
(``down_blocks.{level}.resnets.{j}``), CompVis numbers blocks in order
(``input_blocks_{1 + level*(n+1) + j}``). Linear (out, in) -> Dense kernel (in, out); Conv2d OIHW
-> HWIO; norms' ``weight`` -> ``scale``. With ``use_linear_projection`` the transformer's
``proj_in``/``proj_out`` are Linear layers, which equal our 1x1 convolutions: (out, in) -> (1, 1, in, out).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from diffcorrupt.checkpoint_import.dit_names import Path, Rule, _linear, _patch_embed, _same
from diffcorrupt.errors import UserError


def _conv(path: Path, name: str) -> list[Rule]:
    return _patch_embed(path, name)  # Conv2d OIHW -> Flax HWIO, bias unchanged


def _norm(path: Path, name: str) -> list[Rule]:
    """GroupNorm / LayerNorm: weight -> scale."""
    return [_same(path + ("scale",), f"{name}.weight"), _same(path + ("bias",), f"{name}.bias")]


def _linear_as_conv1x1(path: Path, name: str) -> list[Rule]:
    """nn.Linear (out, in) -> 1x1 conv kernel (1, 1, in, out)."""
    return [Rule(path + ("kernel",), (f"{name}.weight",), lambda a, shape: a[0].T.reshape(shape),
                 lambda p: (p.reshape(p.shape[-2:]).T,)),
            _same(path + ("bias",), f"{name}.bias")]


def _resnet(path: Path, name: str, shortcut: bool) -> list[Rule]:
    """diffusers ``ResnetBlock2D`` -> our ``ResBlock`` (CompVis names)."""
    rules = (_norm(path + ("in_layers_0",), f"{name}.norm1") + _conv(path + ("in_layers_2",), f"{name}.conv1")
             + _linear(path + ("emb_layers_1",), f"{name}.time_emb_proj")
             + _norm(path + ("out_layers_0",), f"{name}.norm2") + _conv(path + ("out_layers_3",), f"{name}.conv2"))
    if shortcut:
        rules += _conv(path + ("skip_connection",), f"{name}.conv_shortcut")
    return rules


def _attention(path: Path, name: str) -> list[Rule]:
    """diffusers ``Attention`` (bias-free to_q/k/v, biased to_out.0) -> our ``CrossAttention``:
    both split the flat heads*head_dim axis heads-major, so the kernels are plain transposes."""
    rules = [Rule(path + (f"to_{p}", "kernel"), (f"{name}.to_{p}.weight",), lambda a, shape: a[0].T, lambda p: (p.T,))
             for p in "qkv"]
    return rules + _linear(path + ("to_out_0",), f"{name}.to_out.0")


def _transformer(path: Path, name: str, depth: int, linear_projection: bool) -> list[Rule]:
    """diffusers ``Transformer2DModel`` -> our ``SpatialTransformer``."""
    projection = _linear_as_conv1x1 if linear_projection else _conv
    rules = _norm(path + ("norm",), f"{name}.norm") + projection(path + ("proj_in",), f"{name}.proj_in")
    for d in range(depth):
        ours, theirs = path + (f"transformer_blocks_{d}",), f"{name}.transformer_blocks.{d}"
        rules += (_norm(ours + ("norm1",), f"{theirs}.norm1") + _attention(ours + ("attn1",), f"{theirs}.attn1")
                  + _norm(ours + ("norm2",), f"{theirs}.norm2") + _attention(ours + ("attn2",), f"{theirs}.attn2")
                  + _norm(ours + ("norm3",), f"{theirs}.norm3")
                  + _linear(ours + ("ff", "net_0", "proj"), f"{theirs}.ff.net.0.proj")
                  + _linear(ours + ("ff", "net_2"), f"{theirs}.ff.net.2"))
    return rules + projection(path + ("proj_out",), f"{name}.proj_out")


def _encoder_rules(model_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                   attention_resolutions: Sequence[int], transformer: Callable[[Path, str], list[Rule]]
                   ) -> tuple[list[Rule], list[int]]:
    """(rules, the widths of the skips in order) of the embedders, input blocks and middle block:
    what a U-Net and a ControlNet's copy of it share."""
    rules = (_linear(("time_embed", "fc1"), "time_embedding.linear_1")
             + _linear(("time_embed", "fc2"), "time_embedding.linear_2")
             + _conv(("input_blocks_0_0",), "conv_in"))
    channels = model_channels
    skips, block, ds, levels = [channels], 1, 1, len(channel_mult)
    for level, mult in enumerate(channel_mult):
        for j in range(num_res_blocks):
            out, name = mult * model_channels, f"down_blocks.{level}"
            rules += _resnet((f"input_blocks_{block}_0",), f"{name}.resnets.{j}", channels != out)
            if ds in attention_resolutions:
                rules += transformer((f"input_blocks_{block}_1",), f"{name}.attentions.{j}")
            channels = out
            skips.append(channels)
            block += 1
        if level != levels - 1:
            rules += _conv((f"input_blocks_{block}_0", "op"), f"down_blocks.{level}.downsamplers.0.conv")
            skips.append(channels)
            block, ds = block + 1, ds * 2

    rules += (_resnet(("middle_block_0",), "mid_block.resnets.0", False)
              + transformer(("middle_block_1",), "mid_block.attentions.0")
              + _resnet(("middle_block_2",), "mid_block.resnets.1", False))
    return rules, skips


def _transformers(transformer_depth: int, linear_projection: bool) -> Callable[[Path, str], list[Rule]]:
    return lambda path, name: _transformer(path, name, transformer_depth, linear_projection)


def diffusers_encoder_rules(*, model_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                            attention_resolutions: Sequence[int], transformer_depth: int,
                            linear_projection: bool = False, **_: Any) -> list[Rule]:
    """Rules for the embedders, input blocks and middle block of a ``UNet`` with these fields, as a
    diffusers ``ControlNetModel`` names its copy of them (the same names as the U-Net's)."""
    return _encoder_rules(model_channels, channel_mult, num_res_blocks, attention_resolutions,
                          _transformers(transformer_depth, linear_projection))[0]


def diffusers_unet_rules(*, model_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                         attention_resolutions: Sequence[int], transformer_depth: int,
                         linear_projection: bool = False, **_: Any) -> list[Rule]:
    """Rules for every U-Net parameter of a ``UNet`` with these fields (extra keyword arguments,
    e.g. a whole ``UNET_PRESETS`` entry, are ignored). The condition embedder
    (``cond_stage_model``) and ``context_proj`` are not part of a diffusers U-Net and get no rule."""
    transformer = _transformers(transformer_depth, linear_projection)
    rules, skips = _encoder_rules(model_channels, channel_mult, num_res_blocks, attention_resolutions, transformer)
    channels, ds = skips[-1], 2 ** (len(channel_mult) - 1)
    block = 0
    for up, (level, mult) in enumerate(reversed(list(enumerate(channel_mult)))):
        name = f"up_blocks.{up}"
        for j in range(num_res_blocks + 1):
            out, sub = mult * model_channels, 1
            rules += _resnet((f"output_blocks_{block}_0",), f"{name}.resnets.{j}", channels + skips.pop() != out)
            channels = out
            if ds in attention_resolutions:
                rules += transformer((f"output_blocks_{block}_1",), f"{name}.attentions.{j}")
                sub += 1
            if level and j == num_res_blocks:
                rules += _conv((f"output_blocks_{block}_{sub}", "conv"), f"{name}.upsamplers.0.conv")
                ds //= 2
            block += 1
    return rules + _norm(("out_0",), "conv_norm_out") + _conv(("out_2",), "conv_out")


# Config values of a UNet2DConditionModel that our U-Net computes; anything else is refused.
_REQUIRED: dict[str, Any] = {
    "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0, "mid_block_type": "UNetMidBlock2DCrossAttn",
    "only_cross_attention": False, "downsample_padding": 1, "mid_block_scale_factor": 1, "act_fn": "silu",
    "norm_num_groups": 32, "norm_eps": 1e-5, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "num_attention_heads": None, "dual_cross_attention": False, "class_embed_type": None,
    "addition_embed_type": None, "num_class_embeds": None, "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0, "time_embedding_type": "positional", "time_embedding_dim": None,
    "time_embedding_act_fn": None, "timestep_post_act": None, "time_cond_proj_dim": None, "conv_in_kernel": 3,
    "conv_out_kernel": 3, "projection_class_embeddings_input_dim": None, "attention_type": "default",
    "class_embeddings_concat": False, "mid_block_only_cross_attention": None, "cross_attention_norm": None,
    "reverse_transformer_layers_per_block": None,
}


def _one(value: Any, key: str, where: str) -> Any:
    """A per-level setting that our U-Net has once: a scalar, or a list of equal values."""
    if isinstance(value, (list, tuple)):
        if len(set(map(str, value))) != 1:
            raise UserError(f"{where} sets '{key}' to {value}, different per level; our U-Net has one value "
                            "for all levels")
        return value[0]
    return value


def unet_settings(config: dict[str, Any], where: str, kind: str = "UNet2DConditionModel") -> dict[str, Any]:
    """Our ``UNet`` fields (without the conditioning ones) and ``linear_projection``, from a
    diffusers ``unet/config.json`` (or, with ``kind="ControlNetModel"``, from a ControlNet's
    config, whose copy has no up blocks); a ``UserError`` names the first setting we do not compute."""
    if config.get("_class_name") != kind:
        raise UserError(f"{where} describes a {config.get('_class_name') or 'model of no _class_name'}, not a {kind}; "
                        "only latent-diffusion U-Nets with spatial transformers (cross-attention) can be imported")
    for key, value in _REQUIRED.items():
        got = config.get(key, value)
        if isinstance(got, (list, tuple)) and got and all(g == got[0] for g in got):
            got = got[0]  # a per-level setting, equal on every level
        if got != value:
            raise UserError(f"{where} sets '{key}' to {config[key]!r}; our U-Net computes only {value!r} there")
    down = list(config["down_block_types"])
    up = list(config.get("up_block_types", [k.replace("Down", "Up") for k in reversed(down)]))
    channels = [int(c) for c in config["block_out_channels"]]
    model_channels = channels[0]
    if any(c % model_channels for c in channels):
        raise UserError(f"{where} has block_out_channels {channels}, not multiples of the first; "
                        "our U-Net needs them")
    kinds = set(down) - {"CrossAttnDownBlock2D", "DownBlock2D"} or set(up) - {"CrossAttnUpBlock2D", "UpBlock2D"}
    if kinds or not len(down) == len(channels) == len(up):
        raise UserError(f"{where} has blocks {down} / {up}; only (CrossAttn)DownBlock2D / (CrossAttn)UpBlock2D, "
                        "one per level, can be imported")
    attention_levels = [i for i, kind in enumerate(down) if kind.startswith("CrossAttn")]
    if [len(up) - 1 - i for i, kind in enumerate(up) if kind.startswith("CrossAttn")][::-1] != attention_levels:
        raise UserError(f"{where} has attention at different levels going down ({down}) and up ({up}); "
                        "our U-Net mirrors them")
    return dict(
        in_channels=int(config.get("in_channels", 4)),
        out_channels=int(config.get("out_channels", config.get("in_channels", 4))),
        model_channels=model_channels, channel_mult=tuple(c // model_channels for c in channels),
        num_res_blocks=int(_one(config.get("layers_per_block", 2), "layers_per_block", where)),
        attention_resolutions=tuple(2**i for i in attention_levels),
        # diffusers' 'attention_head_dim' is the number of heads (its issue #2011).
        num_heads=int(_one(config.get("attention_head_dim", 8), "attention_head_dim", where)),
        transformer_depth=int(_one(config.get("transformer_layers_per_block", 1), "transformer_layers_per_block",
                                   where)),
        context_dim=int(_one(config.get("cross_attention_dim", 1280), "cross_attention_dim", where)),
        use_scale_shift_norm={"default": False, "scale_shift": True}[_check_shift(config, where)],
        linear_projection=bool(config.get("use_linear_projection", False)),
    )


def _check_shift(config: dict[str, Any], where: str) -> str:
    shift = config.get("resnet_time_scale_shift", "default")
    if shift not in ("default", "scale_shift"):
        raise UserError(f"{where} sets 'resnet_time_scale_shift' to {shift!r}; our U-Net computes 'default' "
                        "or 'scale_shift'")
    return shift
