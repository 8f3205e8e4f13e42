"""Importing released DiT checkpoints: exact name/layout round trips, one sentence for a misfit,
a workdir the sample job and the train job's restore read, and the same outputs as the reference
PyTorch implementation (diffusers) on random weights."""

import importlib.util
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.autoencoders.presets import PRESETS
from diffcorrupt.autoencoders.storage import param_shapes, save_autoencoder, unflatten_params
from diffcorrupt.checkpoint_import.dit_names import diffusers_rules, facebook_rules, to_flax, to_source
from diffcorrupt.checkpoint_import.dit_sources import read_dit
from diffcorrupt.checkpoint_import.workdir import write_imported_run
from diffcorrupt.config.loading import load_config
from diffcorrupt.errors import UserError
from diffcorrupt.models.registry import example_inputs, make_model, model_from_config
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.parallel.sharding import rules_from_config
from diffcorrupt.sampling.generate import SampleSettings, conditions, make_generator
from diffcorrupt.sampling.restore import restore_ema, saved_run_config
from diffcorrupt.training.checkpoints import Checkpointer
from diffcorrupt.training.optimizer import make_optimizer
from diffcorrupt.training.state import abstract_state, create_state

INPUT_SHAPE, NUM_CLASSES = (8, 8, 4), 10


def _random_params(model, seed=0):
    """Every parameter random (the zero-initialised adaLN and final layers too), so that a wrong
    layout anywhere changes the output."""
    abstract = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *example_inputs(model, INPUT_SHAPE))["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (0.05 * rng.standard_normal(x.shape)).astype(np.float32), nn.meta.unbox(abstract))


@pytest.fixture(scope="module")
def model():
    return make_model("DiT-T/2", input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, learned_sigma=True)


@pytest.mark.parametrize("rules", [facebook_rules, diffusers_rules])
def test_state_dict_round_trips_exactly(model, rules):
    params = _random_params(model)
    tensors = to_source(params, rules(model.depth))
    if rules is facebook_rules:  # the original's names and PyTorch layouts
        assert tensors["blocks.0.attn.qkv.weight"].shape == (3 * 192, 192)
        assert tensors["x_embedder.proj.weight"].shape == (192, 4, 2, 2)
        assert tensors["y_embedder.embedding_table.weight"].shape == (NUM_CLASSES + 1, 192)
    back = to_flax(tensors, rules(model.depth), params, where="test.pt", model_name="DiT-T/2")
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_misfit_tensor_is_named(model):
    params = _random_params(model)
    tensors = to_source(params, facebook_rules(model.depth))
    tensors["blocks.2.attn.qkv.weight"] = tensors["blocks.2.attn.qkv.weight"][:-3]
    with pytest.raises(UserError, match=r"does not fit model 'DiT-T/2': tensor 'blocks.2.attn.qkv.weight' has "
                                        r"shape \[573, 192\] where \[576, 192\] is needed"):
        to_flax(tensors, facebook_rules(model.depth), params, where="x.pt", model_name="DiT-T/2")
    del tensors["blocks.1.mlp.fc2.bias"]
    with pytest.raises(UserError, match=r"'blocks.1.mlp.fc2.bias' is missing where \[192\] is needed"):
        to_flax(tensors, facebook_rules(model.depth), params, where="x.pt", model_name="DiT-T/2")


def test_imported_workdir_is_sampled_and_restores_as_a_train_state(model, tmp_path):
    # A pixel-space config: the sample job does not decode latents yet.
    config = load_config("configs/fmnist.py:tiny", ["model.name=DiT-T/2", "model.learned_sigma=True"])
    params = _random_params(model, seed=1)
    step_dir = write_imported_run(str(tmp_path), config, params, INPUT_SHAPE, NUM_CLASSES, "vae/", step=7)  # as the tools pass it
    assert step_dir == tmp_path / "checkpoints" / "7"
    assert json.loads((tmp_path / "model.json").read_text()) == {
        "input_shape": list(INPUT_SHAPE), "num_classes": NUM_CLASSES, "autoencoder": "vae/"}
    with pytest.raises(UserError, match="already holds checkpoints"):
        write_imported_run(tmp_path, config, params, INPUT_SHAPE, NUM_CLASSES, None)

    mesh = make_mesh(config.mesh)
    restored = restore_ema(tmp_path, mesh)
    assert restored.step == 7 and restored.input_shape == INPUT_SHAPE and restored.num_classes == NUM_CLASSES
    for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), b)
    generate = make_generator(restored, SampleSettings("ddim", 2, 1.5, 0.0, seed=0), mesh, 8)
    images = generate(np.arange(8), conditions(restored, np.arange(8), None).model_input)
    assert images.shape == (8, *INPUT_SHAPE) and images.dtype == np.uint8

    # The train job's own restore reads the whole state into the tree it creates.
    rules = rules_from_config(config.mesh.rules)
    fresh, _ = create_state(model_from_config(config, INPUT_SHAPE, NUM_CLASSES), make_optimizer(config.train)[0],
                            INPUT_SHAPE, config.seed, mesh, rules)
    checkpointer = Checkpointer(tmp_path, every_steps=1, keep=1, async_save=False)
    state, step = checkpointer.restore(abstract_state(fresh))
    checkpointer.close()
    assert step == 7 and int(state.step) == 7
    np.testing.assert_array_equal(np.asarray(state.params["blocks_0"]["attn"]["qkv"]["kernel"]),
                                  params["blocks_0"]["attn"]["qkv"]["kernel"])
    np.testing.assert_array_equal(np.asarray(state.rng), np.asarray(fresh.rng))


def test_wrong_params_for_the_config_are_refused(model, tmp_path):
    config = load_config("configs/fmnist.py:tiny", ["model.name=DiT-T/2"])  # learned_sigma off: 4 output channels
    with pytest.raises(UserError, match=r"\['final_layer'\]\['linear'\]\['bias'\] has shape \[32\] but the model "
                                        r"needs \[16\]"):
        write_imported_run(tmp_path, config, _random_params(model), INPUT_SHAPE, NUM_CLASSES, None)
    assert not (tmp_path / "checkpoints").exists()


# --- against the PyTorch reference ----------------------------------------------------------------

def _diffusers_dit(torch, diffusers):
    """A random DiT-T/2 in diffusers (sizes: our T preset; sample 8, patch 2, 4 -> 8 channels, 10
    classes), every parameter random, the per-block embedder copies equal as in converted files."""
    torch.manual_seed(0)
    reference = diffusers.DiTTransformer2DModel(
        num_attention_heads=3, attention_head_dim=64, in_channels=4, out_channels=8, num_layers=6, sample_size=8,
        patch_size=2, num_embeds_ada_norm=NUM_CLASSES, norm_eps=1e-6)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.normal_(0.0, 0.05)
        for block in reference.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(reference.transformer_blocks[0].norm1.emb.state_dict())
    return reference.eval()


def _as_original_dit(reference) -> None:
    """diffusers' DiT computes timestep frequencies exp(-ln(1e4) i / (half - 1)) (its
    CombinedTimestepLabelEmbeddings passes downscale_freq_shift=1); the original DiT, whose weights
    these are, and ours divide by half. Setting the shift to 0 makes the reference the original."""
    for block in reference.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0


def _facebook_state_dict(reference, torch) -> dict:
    """The original's state dict from the diffusers model, by the correspondence of diffusers'
    scripts/convert_dit_to_diffusers.py read backwards (q, k, v concatenated into qkv)."""
    sd = reference.state_dict()
    emb = "transformer_blocks.0.norm1.emb"
    out = {"x_embedder.proj.weight": sd["pos_embed.proj.weight"], "x_embedder.proj.bias": sd["pos_embed.proj.bias"],
           "pos_embed": reference.pos_embed.pos_embed.clone(),
           "y_embedder.embedding_table.weight": sd[f"{emb}.class_embedder.embedding_table.weight"]}
    for i, source in ((0, "linear_1"), (2, "linear_2")):
        for kind in ("weight", "bias"):
            out[f"t_embedder.mlp.{i}.{kind}"] = sd[f"{emb}.timestep_embedder.{source}.{kind}"]
    for d in range(len(reference.transformer_blocks)):
        block = f"transformer_blocks.{d}"
        for kind in ("weight", "bias"):
            out[f"blocks.{d}.attn.qkv.{kind}"] = torch.cat([sd[f"{block}.attn1.to_{p}.{kind}"] for p in "qkv"])
            for ours, theirs in (("attn.proj", "attn1.to_out.0"), ("mlp.fc1", "ff.net.0.proj"), ("mlp.fc2", "ff.net.2"),
                                 ("adaLN_modulation.1", "norm1.linear")):
                out[f"blocks.{d}.{ours}.{kind}"] = sd[f"{block}.{theirs}.{kind}"]
    for ours, theirs in (("final_layer.adaLN_modulation.1", "proj_out_1"), ("final_layer.linear", "proj_out_2")):
        for kind in ("weight", "bias"):
            out[f"{ours}.{kind}"] = sd[f"{theirs}.{kind}"]
    return {key: value.clone().contiguous() for key, value in out.items()}


def test_matches_the_pytorch_reference(model, tmp_path, repo, capsys):
    torch = pytest.importorskip("torch", reason="the reference check needs PyTorch (pip install torch==2.13.0)")
    diffusers = pytest.importorskip("diffusers", reason="the reference check needs diffusers (pip install diffusers)")
    pytest.importorskip("safetensors", reason="diffusers folders are read with safetensors")
    reference = _diffusers_dit(torch, diffusers)
    reference.save_pretrained(tmp_path / "pipeline" / "transformer")
    _as_original_dit(reference)
    torch.save(_facebook_state_dict(reference, torch), tmp_path / "DiT-T-2.pt")

    x = np.random.default_rng(0).standard_normal((4, 4, 8, 8)).astype(np.float32)  # NCHW
    t = np.asarray([0, 17, 500, 999])
    labels = np.asarray([0, 3, 9, NUM_CLASSES])  # the last is the null class
    with torch.no_grad():
        expected = reference(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(labels)).sample.numpy()

    for source in (tmp_path / "pipeline", tmp_path / "DiT-T-2.pt"):
        imported = read_dit(source)
        assert (imported.model_name, imported.input_shape, imported.num_classes, imported.learned_sigma) == (
            "DiT-T/2", INPUT_SHAPE, NUM_CLASSES, True)
        out = model.apply({"params": imported.params}, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t),
                          jnp.asarray(np.minimum(labels, NUM_CLASSES - 1)), jnp.asarray(labels == NUM_CLASSES))
        difference = float(np.abs(np.asarray(out).transpose(0, 3, 1, 2) - expected).max())
        assert difference < 1e-4, (source.name, difference)
        with capsys.disabled():  # the measured agreement, for -s runs
            print(f"\n{source.name}: max |ours - reference| = {difference:.2e} (|reference| <= {np.abs(expected).max():.2f})")

    with pytest.raises(UserError, match=r"tensor 'x_embedder.proj.weight' has shape \[192, 4, 2, 2\] where "
                                        r"\[384, 4, 2, 2\] is needed; pass the --model"):
        read_dit(tmp_path / "DiT-T-2.pt", "DiT-S/2")

    # The tool: a workdir with DiT's config and the autoencoder recorded for the sample job.
    spec = importlib.util.spec_from_file_location("import_dit", repo / "tools" / "import_dit.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([f"--from={tmp_path / 'DiT-T-2.pt'}", f"--workdir={tmp_path / 'run'}",
                      f"--autoencoder={tmp_path / 'missing'}"]) == 2
    assert "is not an autoencoder folder" in capsys.readouterr().err
    vae = PRESETS["kl-f4-small"]  # any stored autoencoder: the tool records its folder, the sample job reads it
    save_autoencoder(tmp_path / "vae", vae, unflatten_params({name: np.zeros(shape, np.float32) for name, shape
                                                              in param_shapes(vae).items()}), {"source": "test"})
    assert tool.main([f"--from={tmp_path / 'pipeline'}", f"--workdir={tmp_path / 'run'}",
                      f"--autoencoder={tmp_path / 'vae'}"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["model"] == "DiT-T/2" and line["source"] == "diffusers" and line["learned_sigma"]
    assert json.loads((tmp_path / "run" / "model.json").read_text())["autoencoder"] == str(tmp_path / "vae")
    config = saved_run_config(tmp_path / "run")
    assert (config.model.name, config.data.name, config.data.image_size, config.diffusion.schedule,
            config.diffusion.num_steps, config.model.learned_sigma) == ("DiT-T/2", "latent_records", 64, "linear", 1000, True)
    assert tool.main([f"--from={tmp_path / 'DiT-T-2.pt'}", f"--workdir={tmp_path / 'run'}"]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
