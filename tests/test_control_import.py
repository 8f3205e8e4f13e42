"""Importing diffusers ``ControlNetModel`` and ``T2IAdapter`` folders as personalized runs of our
U-Net runs: the name rules round trip and cover the branches, an import samples with controls from
the CLI's functions, what does not fit is refused in one sentence, and base + branch computes what
diffusers' U-Net + ControlNet / T2I-Adapter computes on random weights (PyTorch and diffusers only
for that check)."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from diffcorrupt.checkpoint_import.control_names import adapter_rules, controlnet_rules, controlnet_settings
from diffcorrupt.checkpoint_import.dit_names import to_flax, to_source
from diffcorrupt.checkpoint_import.unet_names import diffusers_unet_rules, unet_settings
from diffcorrupt.checkpoint_import.workdir import write_imported_run
from diffcorrupt.config.schema import base_config
from diffcorrupt.config.validate import validate
from diffcorrupt.errors import UserError
from diffcorrupt.models import control_branch
from diffcorrupt.models.registry import example_inputs, model_from_config
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.sampling.restore import restore_ema
from diffcorrupt.sampling.shards import read_shards
from train_runs import REPO, load_tool, sample_run

import_control = load_tool("import_control").import_control

SHAPE, CLASSES = (16, 16, 1), 10  # the embedded Fashion-MNIST at 16x16, in pixels
# A two-level U-Net, attention at the first level only (both diffusers block kinds, the adapter's
# feature added after a transformer and after a plain resnet).
GEOMETRY = dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[1], num_heads=2,
                transformer_depth=1, context_dim=32)
DIFFUSERS_UNET = dict(in_channels=1, block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                      layers_per_block=1, attention_head_dim=2, cross_attention_dim=32, norm_num_groups=32)


def _config():
    config = base_config()
    config.model.name = "LDM-small"
    config.model.unet = json.dumps(GEOMETRY)
    config.data.image_size = SHAPE[0]
    validate(config, check_data=False)
    return config


def _random(module, inputs, seed):
    abstract = jax.eval_shape(lambda: module.init({"params": jax.random.key(0)}, *inputs)["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (0.05 * rng.standard_normal(x.shape)).astype(np.float32), nn.meta.unbox(abstract))


def _base(tmp_path, params=None):
    """A U-Net run of ours (random weights, or ``params`` with a random class table)."""
    config = _config()
    unet = model_from_config(config, SHAPE, CLASSES)
    weights = _random(unet, example_inputs(unet, SHAPE), 0)
    if params is not None:
        weights = dict(params, cond_stage_model=weights["cond_stage_model"])
    write_imported_run(tmp_path / "base", config, weights, SHAPE, CLASSES, None)
    return tmp_path / "base", unet, weights


def _branch(kind, unet, control_shape, seed=1):
    branch = control_branch.make_control(kind, unet, SHAPE[0])
    return branch, _random(branch, control_branch.example_branch_inputs(branch, SHAPE, control_shape), seed)


def _settings():
    return dict(unet_settings(dict(DIFFUSERS_UNET, _class_name="ControlNetModel"), "config.json", "ControlNetModel"))


def _leaves(tree):
    return {tuple(k.key for k in path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _folder(path, config, tensors):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    save_file({name: np.ascontiguousarray(value, np.float32) for name, value in tensors.items()},
              str(path / "diffusion_pytorch_model.safetensors"))
    return path


@pytest.mark.parametrize("copies", [1, 3])
def test_rules_round_trip_and_cover_both_branches(copies):
    unet = model_from_config(_config(), SHAPE, CLASSES)
    branch, params = _branch("controlnet", unet, (32, 32, 1))
    rules = controlnet_rules(_settings(), (16, 32), copies)
    assert set(_leaves(params)) - {rule.path for rule in rules} == {("cond_stage_model", "table", "embedding")}
    tensors = to_source(params, rules)
    assert tensors["controlnet_cond_embedding.conv_in.weight"].shape == (16, copies, 3, 3)
    assert len([n for n in tensors if n.startswith("controlnet_down_blocks.") and n.endswith(".weight")]) == 4
    back = _leaves(to_flax(tensors, rules, params, where="controlnet/", model_name="LDM-test"))
    for path, value in back.items():
        np.testing.assert_allclose(value, _leaves(params)[path], rtol=1e-6, atol=1e-7)

    adapter, params = _branch("t2i-adapter", unet, (64, 64, 1))
    rules = adapter_rules(2, (32, 64), copies)
    assert {rule.path for rule in rules} == set(_leaves(params))
    tensors = to_source(params, rules)
    assert tensors["adapter.conv_in.weight"].shape == (32, 16 * copies, 3, 3) and "adapter.body.1.in_conv.weight" in tensors
    back = _leaves(to_flax(tensors, rules, params, where="adapter/", model_name="LDM-test"))
    for path, value in back.items():
        np.testing.assert_allclose(value, _leaves(params)[path], rtol=1e-6, atol=1e-7)


def _controlnet_folder(tmp_path, unet, copies=3, **config):
    """A ControlNetModel folder of random weights for pixel runs (no halving), written from ours."""
    _, params = _branch("controlnet", unet, SHAPE)
    rules = controlnet_rules(_settings(), (16,), copies)
    settings = dict(DIFFUSERS_UNET, _class_name="ControlNetModel", conditioning_channels=copies,
                    conditioning_embedding_out_channels=[16], **config)
    return _folder(tmp_path / "controlnet", settings, to_source(params, rules)), params


def test_an_imported_controlnet_is_a_personalized_run_that_samples_with_controls(tmp_path):
    base, unet, base_weights = _base(tmp_path)
    folder, params = _controlnet_folder(tmp_path, unet)  # an RGB-canny ControlNet, as SD's
    done = subprocess.run([sys.executable, "tools/import_control.py", f"--from={folder}", f"--base={base}",
                           f"--workdir={tmp_path / 'run'}"], cwd=REPO, check=True, capture_output=True, text=True)
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["method"] == "controlnet" and summary["control_shape"] == [16, 16, 1] and summary["base_step"] == 0

    restored = restore_ema(tmp_path / "run", make_mesh(base_config().mesh))
    assert restored.config.personalize.base == str(base) and restored.config.data.control == "canny"
    got, want = _leaves(restored.params), _leaves(params)
    kernel = ("hint_embedder", "conv_in", "kernel")  # the RGB kernel folded onto one channel: three copies added
    want[kernel] = want[kernel] / 3 * 3
    for path in want:
        if path[0] != "cond_stage_model":
            np.testing.assert_allclose(got[path], want[path], rtol=1e-6, err_msg=str(path))
    np.testing.assert_array_equal(got[("cond_stage_model", "table", "embedding")],
                                  base_weights["cond_stage_model"]["table"]["embedding"])  # the base's, as training

    sample_run(tmp_path / "run", tmp_path / "samples", "dataset:test:[0:8]")
    shards = read_shards(tmp_path / "samples" / "ddim5-cfg2-seed0")
    assert shards["arr_0"].shape == (40, 16, 16, 1) and shards["control"].shape == (40, 16, 16, 1)


def test_what_does_not_fit_is_refused_in_one_sentence(tmp_path):
    base, unet, _ = _base(tmp_path)
    folder, _ = _controlnet_folder(tmp_path, unet, copies=1)
    with pytest.raises(UserError, match="reads 1-channel control images but --control=folder draws 3-channel"):
        import_control(folder, base, tmp_path / "a", control="folder", control_dir=str(tmp_path))
    with pytest.raises(UserError, match="'data.control_dir' is '', which is no folder"):
        import_control(folder, base, tmp_path / "a", control="folder")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, block_out_channels=[64, 128])))
    with pytest.raises(UserError, match="copies a U-Net with model_channels 64 but the base's is 32"):
        import_control(folder, base, tmp_path / "b")
    (folder / "config.json").write_text(json.dumps(dict(config, conditioning_embedding_out_channels=[16, 32])))
    with pytest.raises(UserError, match="reads 32x32 control images .* draws them at 16x16"):
        import_control(folder, base, tmp_path / "c")
    (folder / "config.json").write_text(json.dumps(dict(config, _class_name="UNet2DConditionModel")))
    with pytest.raises(UserError, match="describes a UNet2DConditionModel; only ControlNetModel and T2IAdapter"):
        import_control(folder, base, tmp_path / "d")
    (folder / "config.json").write_text(json.dumps(config))
    import_control(folder, base, tmp_path / "e")
    with pytest.raises(UserError, match="already holds checkpoints; import into a fresh --workdir"):
        import_control(folder, base, tmp_path / "e")
    with pytest.raises(UserError, match="is itself a personalized or distilled run"):
        import_control(folder, tmp_path / "e", tmp_path / "f")
    assert not list(tmp_path.glob("[abcdf]/checkpoints"))


def _torch_peers():
    torch = pytest.importorskip("torch", reason="the reference check needs PyTorch (pip install torch)")
    diffusers = pytest.importorskip("diffusers", reason="the reference check needs diffusers (pip install diffusers)")
    torch.manual_seed(0)
    return torch, diffusers


def _randomised(torch, module):
    with torch.no_grad():
        for name, p in module.named_parameters():  # norms near 1, everything else small and random
            p.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
    return module.eval()


def _nchw(torch, x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _diffusers_base(torch, diffusers, tmp_path):
    """diffusers' U-Net and ours with its weights, written as a run."""
    reference = _randomised(torch, diffusers.UNet2DConditionModel(
        **DIFFUSERS_UNET, out_channels=1, sample_size=SHAPE[0], up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")))
    tensors = {name: p.detach().numpy() for name, p in reference.state_dict().items()}
    unet = model_from_config(_config(), SHAPE, CLASSES)
    abstract = _random(unet, example_inputs(unet, SHAPE), 0)
    params = to_flax(tensors, diffusers_unet_rules(**GEOMETRY), abstract, where="unet/", model_name="LDM-test")
    _, unet, weights = _base(tmp_path, params)
    return reference, unet, weights


def _beside(torch, unet, weights, branch, params):
    """Our base + branch on two random inputs with 64x64 random edge maps: (what the branch adds,
    the output), and the same inputs as diffusers takes them (x, t, context, the edges as RGB)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, *SHAPE)).astype(np.float32)
    t, labels, null = np.array([10, 900], np.int32), np.array([3, 7], np.int32), np.array([False, True])
    edges = (rng.random((2, 64, 64, 1)) < 0.2).astype(np.float32)
    inputs = tuple(map(jnp.asarray, (x, t, labels, null)))
    added = control_branch.residuals(branch, params, *inputs, jnp.asarray(edges))
    ours = np.asarray(unet.apply({"params": weights}, *inputs, control=added))
    table = weights["cond_stage_model"]["table"]["embedding"]
    context = table[np.where(null, CLASSES, labels)][:, None, :]  # our U-Net's one-token class context
    theirs = (_nchw(torch, x), torch.from_numpy(t.astype(np.int64)), torch.from_numpy(np.array(context)),
              _nchw(torch, np.repeat(edges, 3, axis=-1)))
    return added, ours, theirs


def test_controlnet_and_unet_compute_what_diffusers_computes(tmp_path):
    torch, diffusers = _torch_peers()
    reference, unet, weights = _diffusers_base(torch, diffusers, tmp_path)
    # An RGB-canny ControlNet halving its 64x64 control images twice: the stride-2 stages and the folding.
    controlnet = _randomised(torch, diffusers.ControlNetModel(**DIFFUSERS_UNET, conditioning_channels=3,
                                                              conditioning_embedding_out_channels=(16, 32, 96)))
    controlnet.save_pretrained(tmp_path / "controlnet", safe_serialization=True)
    config = json.loads((tmp_path / "controlnet" / "config.json").read_text())
    settings, channels, stages = controlnet_settings(config, "config.json")
    assert (channels, stages) == (3, (16, 32, 96))
    tensors = {name: p.detach().numpy() for name, p in controlnet.state_dict().items()}
    rules = controlnet_rules(settings, stages, copies=3)
    assert set(tensors) == {n for rule in rules for n in rule.names}  # every tensor has its place
    branch, abstract = _branch("controlnet", unet, (64, 64, 1))
    params = to_flax(tensors, rules, abstract, where="controlnet/", model_name="LDM-test")
    params["cond_stage_model"] = weights["cond_stage_model"]

    added, ours, (x, t, context, edges) = _beside(torch, unet, weights, branch, params)
    with torch.no_grad():
        down, middle = controlnet(x, t, encoder_hidden_states=context, controlnet_cond=edges, return_dict=False)
        expected = reference(x, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                             mid_block_additional_residual=middle).sample
    for mine, theirs in zip([*added.skips, added.middle], [*down, middle], strict=True):
        assert np.abs(theirs.numpy()).max() > 0.1  # a meaningful comparison
        np.testing.assert_allclose(np.asarray(mine), theirs.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours, expected.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=0)


def test_t2i_adapter_and_unet_compute_what_diffusers_computes(tmp_path):
    torch, diffusers = _torch_peers()
    reference, unet, weights = _diffusers_base(torch, diffusers, tmp_path)
    adapter = _randomised(torch, diffusers.T2IAdapter(in_channels=3, channels=(32, 64), num_res_blocks=2,
                                                      downscale_factor=4, adapter_type="full_adapter"))
    tensors = {name: p.detach().numpy() for name, p in adapter.state_dict().items()}
    rules = adapter_rules(2, (32, 64), copies=3)
    assert set(tensors) == {n for rule in rules for n in rule.names}
    branch, abstract = _branch("t2i-adapter", unet, (64, 64, 1))
    params = to_flax(tensors, rules, abstract, where="adapter/", model_name="LDM-test")

    added, ours, (x, t, context, edges) = _beside(torch, unet, weights, branch, params)
    with torch.no_grad():
        features = adapter(edges)
        expected = reference(x, t, encoder_hidden_states=context,
                             down_intrablock_additional_residuals=[f.clone() for f in features]).sample
    for mine, theirs in zip(added.levels, features, strict=True):
        np.testing.assert_allclose(np.asarray(mine), theirs.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours, expected.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=0)
