"""Importing diffusers ``UNet2DConditionModel`` weights into our latent-diffusion U-Net: the name
and layout rules round trip, refuse what our U-Net does not compute, and give the same outputs as
diffusers itself on random weights (PyTorch and diffusers only for that check)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.checkpoint_import.dit_names import to_flax, to_source
from diffcorrupt.checkpoint_import.unet_names import diffusers_unet_rules, unet_settings
from diffcorrupt.errors import UserError
from diffcorrupt.models.registry import example_inputs
from diffcorrupt.models.unet import UNet

INPUT_SHAPE, NUM_CLASSES, CONTEXT = (8, 8, 4), 10, 16
# A scaled-down cin256-v2: two levels, attention at the second only (both block kinds), two
# resnets per level (the index arithmetic), two heads (the head layout).
SMALL = dict(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2), num_res_blocks=2,
             attention_resolutions=(2,), num_heads=2, transformer_depth=1, context_dim=CONTEXT)


def _model(scale_shift: bool = False) -> UNet:
    return UNet(**SMALL, num_classes=NUM_CLASSES, use_scale_shift_norm=scale_shift)


def _random_params(model, seed=0):
    """Every parameter random (zero-initialised output convolutions too)."""
    abstract = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0)}, *example_inputs(model, INPUT_SHAPE))["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (0.05 * rng.standard_normal(x.shape)).astype(np.float32), nn.meta.unbox(abstract))


def _diffusers_config(linear_projection: bool, scale_shift: bool) -> dict:
    return dict(sample_size=INPUT_SHAPE[0], in_channels=4, out_channels=4, block_out_channels=(32, 64),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                layers_per_block=2, attention_head_dim=2, cross_attention_dim=CONTEXT, norm_num_groups=32,
                use_linear_projection=linear_projection,
                resnet_time_scale_shift="scale_shift" if scale_shift else "default")


@pytest.mark.parametrize("linear_projection", [False, True])
def test_rules_round_trip_and_cover_the_unet(linear_projection):
    model = _model()
    params = _random_params(model)
    rules = diffusers_unet_rules(**SMALL, linear_projection=linear_projection)
    covered = {rule.path for rule in rules}
    ours = {tuple(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    assert ours - covered == {("cond_stage_model", "table", "embedding")}  # the class table is not in unet/
    assert not covered - ours
    tensors = to_source(params, rules)
    assert tensors["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape == (64, CONTEXT)
    assert tensors["up_blocks.0.resnets.2.conv_shortcut.weight"].shape == (64, 96, 1, 1)
    proj_in = tensors["down_blocks.1.attentions.1.proj_in.weight"]
    assert proj_in.shape == ((64, 64) if linear_projection else (64, 64, 1, 1))
    back = to_flax(tensors, rules, params, where="unet/", model_name="LDM-test")
    for path in covered:
        a, b = back, params
        for key in path:
            a, b = a[key], b[key]
        np.testing.assert_array_equal(a, b)


def test_misfit_and_unsupported_configs_are_named():
    model = _model()
    params = _random_params(model)
    rules = diffusers_unet_rules(**SMALL)
    tensors = to_source(params, rules)
    tensors["mid_block.resnets.1.conv2.weight"] = tensors["mid_block.resnets.1.conv2.weight"][:32]
    with pytest.raises(UserError, match=r"'mid_block.resnets.1.conv2.weight' has shape \[32, 64, 3, 3\]"):
        to_flax(tensors, rules, params, where="unet/", model_name="LDM-test")
    config = dict(_diffusers_config(False, False), _class_name="UNet2DConditionModel")
    settings = unet_settings(config, "unet/config.json")
    assert {k: settings[k] for k in SMALL} == SMALL and settings["linear_projection"] is False
    with pytest.raises(UserError, match="'class_embed_type' to 'timestep'"):
        unet_settings(dict(config, class_embed_type="timestep", num_class_embeds=10), "unet/config.json")
    with pytest.raises(UserError, match="'flip_sin_to_cos' to False"):
        unet_settings(dict(config, flip_sin_to_cos=False), "unet/config.json")
    with pytest.raises(UserError, match="not a UNet2DConditionModel"):
        unet_settings(dict(config, _class_name="UNet2DModel"), "unet/config.json")


@pytest.mark.parametrize("linear_projection,scale_shift", [(False, False), (True, True)])
def test_matches_diffusers(tmp_path, linear_projection, scale_shift):
    torch = pytest.importorskip("torch", reason="the reference check needs PyTorch (pip install torch)")
    diffusers = pytest.importorskip("diffusers", reason="the reference check needs diffusers (pip install diffusers)")
    from safetensors.numpy import load_file

    torch.manual_seed(0)
    reference = diffusers.UNet2DConditionModel(**_diffusers_config(linear_projection, scale_shift)).eval()
    with torch.no_grad():
        for name, p in reference.named_parameters():  # norms near 1, everything else small and random
            p.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
    reference.save_pretrained(tmp_path / "unet", safe_serialization=True)

    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    settings = unet_settings(config, "unet/config.json")
    assert settings["use_scale_shift_norm"] is scale_shift and settings["linear_projection"] is linear_projection
    tensors = load_file(str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    rules = diffusers_unet_rules(**settings)
    assert set(tensors) == {n for rule in rules for n in rule.names}  # every tensor has its place

    settings.pop("linear_projection")
    model = UNet(**settings, num_classes=NUM_CLASSES)
    assert {k: getattr(model, k) for k in SMALL} == SMALL
    abstract = _random_params(model)
    params = to_flax(tensors, rules, abstract, where=str(tmp_path), model_name="LDM-test")
    params["cond_stage_model"] = abstract["cond_stage_model"]  # LDM's class table lives outside unet/

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, *INPUT_SHAPE)).astype(np.float32)
    t = np.array([10, 900], np.int32)
    labels, null = np.array([3, 7], np.int32), np.array([False, True])
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(x), jnp.asarray(t), jnp.asarray(labels),
                                  jnp.asarray(null)))
    table = abstract["cond_stage_model"]["table"]["embedding"]
    context = table[np.where(null, NUM_CLASSES, labels)][:, None, :]  # the one-token context of our UNet
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t.astype(np.int64)),
                             encoder_hidden_states=torch.from_numpy(context)).sample.numpy().transpose(0, 2, 3, 1)
    assert np.abs(expected).max() > 0.1  # a meaningful comparison
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
