"""Control branches beside a frozen pre-trained model: which one fits which model, how it starts
from the base's weights and how the pair is called.

``controlnet`` is a trainable copy of the base (all of a U-Net's encoder, a DiT's first blocks)
joined to it by zero-initialised layers; ``t2i-adapter`` is a small network of its own, for
U-Nets. Either way the control branch is a separate module with separate parameters, so the
base's weights are only read: the base stays exactly what its pre-training (clean or corrupted)
made it, which is what the personalization half of the study compares.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffcorrupt.errors import ConfigError
from diffcorrupt.models.conditioning import ConditionNoise
from diffcorrupt.models.dit import DiT
from diffcorrupt.models.dit_control import DiTControlNet
from diffcorrupt.models.registry import example_inputs
from diffcorrupt.models.t2i_adapter import T2IAdapter
from diffcorrupt.models.unet import UNet
from diffcorrupt.models.unet_control import UNetControlNet

KINDS = ("controlnet", "t2i-adapter")


def make_control(kind: str, base: nn.Module, model_size: int, copies: int = 0) -> nn.Module:
    """The ``kind`` branch for ``base`` (whose inputs are ``model_size`` square). A ControlNet copy
    perturbs no condition: CEP and condition dropout belong to pre-training, not to the branch."""
    if kind not in KINDS:
        raise ConfigError(f"config key 'personalize.method' is '{kind}'; use one of {', '.join(KINDS)}")
    if copies and not (kind == "controlnet" and isinstance(base, DiT)):
        raise ConfigError("config key 'personalize.copies' counts the DiT blocks a ControlNet copies; set it to 0 "
                          "for a U-Net or a T2I-Adapter")
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.name not in ("parent", "name")}
    fields["noise"] = ConditionNoise()
    if kind == "t2i-adapter":
        if not isinstance(base, UNet):
            raise ConfigError("T2I-Adapter adds features to a U-Net's encoder and a DiT has none; "
                              "set personalize.method to 'controlnet' for a DiT")
        return T2IAdapter.for_unet(base, model_size)
    if isinstance(base, DiT):
        if copies > base.depth:
            raise ConfigError(f"config key 'personalize.copies' is {copies} but the DiT has {base.depth} blocks")
        return DiTControlNet(**fields, copies=copies)
    return UNetControlNet(**fields)


def residuals(control: nn.Module, params: Any, x: jax.Array, t: jax.Array, cond: jax.Array, null_mask: jax.Array,
              hint: jax.Array, train: bool = False, rngs: dict | None = None) -> Any:
    """What ``control`` adds to its base for these inputs: the base's ``control=`` argument."""
    if isinstance(control, T2IAdapter):
        return control.apply({"params": params}, hint)
    return control.apply({"params": params}, x, t, cond, null_mask, hint, train, rngs=rngs or {})


def example_branch_inputs(control: nn.Module, input_shape: tuple[int, int, int], control_shape: tuple[int, int, int],
                          batch: int = 1) -> tuple:
    """What ``control.init`` takes, of the right shapes and dtypes: the base's example inputs and
    the control images (a T2I-Adapter: the control images alone)."""
    hint = jnp.zeros((batch, *control_shape), jnp.float32)
    return (hint,) if isinstance(control, T2IAdapter) else (*example_inputs(control, input_shape, batch), hint)
