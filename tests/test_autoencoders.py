"""The latent-space autoencoders: shapes of every preset, the codebook lookup, storage, and
imports from diffusers and CompVis layouts.

Equivalence with diffusers' PyTorch modules is checked when diffusers and torch are installed
(neither is a dependency); the other tests need neither.
"""

import importlib.util
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from diffcorrupt.autoencoders.convert import compvis_name, diffusers_names, import_compvis, import_diffusers
from diffcorrupt.autoencoders.presets import PRESETS
from diffcorrupt.autoencoders.storage import (
    flatten_params,
    load_autoencoder,
    make_autoencoder,
    save_autoencoder,
    unflatten_params,
)
from diffcorrupt.errors import UserError

from autoencoder_files import random_flat_params

SMALL_VQ_DIFFUSERS = {
    "_class_name": "VQModel", "in_channels": 3, "out_channels": 3, "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
    "layers_per_block": 1, "latent_channels": 3, "num_vq_embeddings": 256, "vq_embed_dim": 3,
    "norm_num_groups": 8, "scaling_factor": 1.0, "act_fn": "silu",
}


def _init(config, seed=0):
    flat = random_flat_params(config, seed)
    params = unflatten_params({k: jnp.asarray(v) for k, v in flat.items()})
    return make_autoencoder(config), params


def _images(n=2, size=16, seed=3):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 3), minval=-1.0, maxval=1.0)


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "name, latent, count",
    [("kl-f8", (1, 32, 32, 4), 83_653_863), ("vq-f4", (1, 64, 64, 3), 55_322_782)],
)
def test_paper_presets_shapes_and_sizes(name, latent, count):
    config = PRESETS[name]
    module = make_autoencoder(config)
    image = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    params = jax.eval_shape(module.init, jax.random.key(0), image)
    assert _count(params) == count
    encoded = jax.eval_shape(lambda p, x: module.apply(p, x, method="encode"), params, image)
    z = encoded[0] if config.kind == "kl" else encoded
    assert z.shape == latent and 256 // config.downsampling_factor == latent[1]
    decoded = jax.eval_shape(lambda p, z: module.apply(p, z, method="decode"), params, z)
    assert decoded.shape == (1, 256, 256, 3)


def test_small_kl_encode_sample_decode():
    config = PRESETS["kl-f4-small"]
    module, params = _init(config)
    x = _images()
    mean, logvar = module.apply(params, x, method="encode")
    assert mean.shape == logvar.shape == (2, 4, 4, 4)
    draw = module.apply(params, x, jax.random.key(7), method="sample")
    again = module.apply(params, x, jax.random.key(7), method="sample")
    np.testing.assert_array_equal(draw, again)
    assert not np.allclose(draw, mean)
    assert module.apply(params, mean, method="decode").shape == (2, 16, 16, 3)


def test_vq_quantize_picks_the_nearest_code():
    config = PRESETS["vq-f4-small"]
    module, params = _init(config)
    h = module.apply(params, _images(), method="encode")
    assert h.shape == (2, 4, 4, 3)
    codebook = np.asarray(params["params"]["codebook"])
    h = jnp.asarray(np.random.default_rng(0).choice(codebook, 32).reshape(2, 4, 4, 3) * 0.9)
    zq, indices = module.apply(params, h, method="quantize")
    distances = ((np.asarray(h).reshape(-1, 1, 3) - codebook[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(indices).ravel(), distances.argmin(-1))
    np.testing.assert_array_equal(np.asarray(zq).reshape(-1, 3), codebook[distances.argmin(-1)])
    # Decoding quantises: h and its codes decode alike, unlike decoding h as is.
    decoded = module.apply(params, h, method="decode")
    np.testing.assert_allclose(decoded, module.apply(params, zq, False, method="decode"), atol=1e-6)


@pytest.mark.parametrize("name", ["kl-f4-small", "vq-f4-small"])
def test_save_load_round_trip(tmp_path, name):
    config = PRESETS[name]
    module, params = _init(config)
    sha = save_autoencoder(tmp_path / "ae", config, params, {"source": "random", "note": [1, 2]})
    loaded = load_autoencoder(tmp_path / "ae")
    assert loaded.config == config and loaded.sha256 == sha and loaded.meta["note"] == [1, 2]
    assert json.loads((tmp_path / "ae" / "autoencoder.json").read_text())["source"] == "random"
    x = _images()
    np.testing.assert_array_equal(module.apply(params, x), loaded.module.apply(loaded.params, x))
    latents = loaded.encode_latents(x, jax.random.key(0))
    assert latents.shape == (2, 4, 4, config.latent_channels)
    assert loaded.decode_latents(latents).shape == x.shape


def test_truncated_or_missing_folder_is_refused(tmp_path):
    config = PRESETS["vq-f4-small"]
    save_autoencoder(tmp_path / "ae", config, _init(config)[1], {"source": "random"})
    params_file = tmp_path / "ae" / "params.npz"
    params_file.write_bytes(params_file.read_bytes()[:-1000])
    with pytest.raises(UserError, match="truncated or altered"):
        load_autoencoder(tmp_path / "ae")
    with pytest.raises(UserError, match="is not an autoencoder folder"):
        load_autoencoder(tmp_path / "nothing")


OLD_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _diffusers_folder(path, config_json, flat, old_attention=False):
    """A diffusers folder written from Flax params through the inverse of the import's mapping
    (with the attention names of diffusers before 0.15 if ``old_attention``)."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config_json))
    levels = len(config_json["block_out_channels"])
    tensors = {}
    for name, value in flat.items():
        torch_name = diffusers_names(compvis_name(name), levels)[0]
        if old_attention:
            torch_name = re.sub(r"(to_[qkv]|to_out\.0)(?=\.)", lambda m: OLD_ATTENTION_NAMES[m.group(1)], torch_name)
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        elif name.endswith("kernel"):
            value = value.T
        tensors[torch_name] = np.ascontiguousarray(value)
    safetensors.numpy.save_file(tensors, str(path / "diffusion_pytorch_model.safetensors"))
    return tensors


def test_diffusers_layout_round_trip_and_refusals(tmp_path):
    config = PRESETS["vq-f4-small"]
    flat = flatten_params(_init(config)[1])
    tensors = _diffusers_folder(tmp_path / "good", SMALL_VQ_DIFFUSERS, flat)
    imported_config, imported = import_diffusers(tmp_path / "good")
    assert imported_config == config
    imported = flatten_params(imported)
    assert all(np.array_equal(imported[k], v) for k, v in flat.items())
    old = _diffusers_folder(tmp_path / "old", SMALL_VQ_DIFFUSERS, flat, old_attention=True)
    assert "decoder.mid_block.attentions.0.proj_attn.weight" in old
    from_old = flatten_params(import_diffusers(tmp_path / "old")[1])
    assert all(np.array_equal(from_old[k], v) for k, v in flat.items())

    bad = dict(tensors, **{"decoder.up_blocks.0.resnets.0.conv1.weight": np.zeros((64, 64, 1, 1), np.float32)})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps(SMALL_VQ_DIFFUSERS))
    safetensors.numpy.save_file(bad, str(tmp_path / "bad" / "diffusion_pytorch_model.safetensors"))
    message = r"decoder\.up_blocks\.0\.resnets\.0\.conv1\.weight has shape \[64, 64, 1, 1\], expected \[64, 64, 3, 3\]"
    with pytest.raises(UserError, match=message):
        import_diffusers(tmp_path / "bad")
    bad["decoder.up_blocks.0.resnets.0.conv1.weight"] = tensors["decoder.up_blocks.0.resnets.0.conv1.weight"]
    del bad["encoder.conv_in.bias"]
    safetensors.numpy.save_file(bad, str(tmp_path / "bad" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(UserError, match=r"encoder\.conv_in\.bias is missing, expected shape \[32\]"):
        import_diffusers(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text(json.dumps([SMALL_VQ_DIFFUSERS]))
    with pytest.raises(UserError, match="not an object of model settings"):
        import_diffusers(tmp_path / "bad")


def test_convert_tool_writes_a_loadable_folder(tmp_path, capsys, repo):
    spec = importlib.util.spec_from_file_location("convert_autoencoder", repo / "tools" / "convert_autoencoder.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    config = PRESETS["vq-f4-small"]
    flat = flatten_params(_init(config)[1])
    _diffusers_folder(tmp_path / "hub", SMALL_VQ_DIFFUSERS, flat)
    assert tool.main([f"--from={tmp_path / 'hub'}", f"--out={tmp_path / 'out'}", "--preset=vq-f4-small"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["parameters"] == sum(v.size for v in flat.values())
    assert load_autoencoder(tmp_path / "out").sha256 == line["sha256"]
    assert tool.main([f"--from={tmp_path / 'hub'}", f"--out={tmp_path / 'x'}", "--preset=kl-f4-small"]) == 2


# --- against diffusers' PyTorch modules (optional) ---------------------------------------------

def _torch_and_diffusers():
    torch = pytest.importorskip("torch", reason="torch is not installed (optional: reference checks only)")
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (optional: reference checks only)")
    return torch, diffusers


def _randomised(model, torch):
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def _nhwc(tensor):
    return tensor.detach().numpy().transpose(0, 2, 3, 1)


def _small_diffusers_vq(torch, diffusers):
    fields = {k: v for k, v in SMALL_VQ_DIFFUSERS.items() if not k.startswith("_")}
    return _randomised(diffusers.VQModel(sample_size=16, **fields), torch)


def test_kl_matches_diffusers(tmp_path):
    torch, diffusers = _torch_and_diffusers()
    reference = _randomised(diffusers.AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8,
        latent_channels=4, sample_size=32,
    ), torch)
    reference.save_pretrained(tmp_path)
    config, params = import_diffusers(tmp_path)
    module = make_autoencoder(config)
    x = np.asarray(_images(2, 32))
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).latent_dist
        decoded = reference.decode(posterior.mean).sample
    mean, logvar = module.apply(params, jnp.asarray(x), method="encode")
    np.testing.assert_allclose(mean, _nhwc(posterior.mean), atol=1e-4)
    np.testing.assert_allclose(logvar, _nhwc(posterior.logvar), atol=1e-4)
    np.testing.assert_allclose(module.apply(params, mean, method="decode"), _nhwc(decoded), atol=1e-4)


def test_vq_matches_diffusers(tmp_path):
    torch, diffusers = _torch_and_diffusers()
    reference = _small_diffusers_vq(torch, diffusers)
    reference.save_pretrained(tmp_path)
    config, params = import_diffusers(tmp_path)
    module = make_autoencoder(config)
    x = np.asarray(_images())
    with torch.no_grad():
        h_ref = reference.encode(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).latents
        decoded = reference.decode(h_ref).sample
        indices_ref = reference.quantize(h_ref)[2][2]
    h = module.apply(params, jnp.asarray(x), method="encode")
    np.testing.assert_allclose(h, _nhwc(h_ref), atol=1e-4)
    indices = module.apply(params, h, method="quantize")[1]
    np.testing.assert_array_equal(np.asarray(indices).ravel(), indices_ref.numpy().ravel())
    np.testing.assert_allclose(module.apply(params, h, method="decode"), _nhwc(decoded), atol=1e-4)
    # The same weights as a pickled .bin, read by the restricted unpickler.
    reference.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "diffusion_pytorch_model.bin").is_file()
    from_bin = flatten_params(import_diffusers(tmp_path / "bin")[1])
    assert all(np.array_equal(from_bin[k], v) for k, v in flatten_params(params).items())


def _to_compvis(name, levels):
    """diffusers -> CompVis tensor names, written independently of the importer's table."""
    up = re.match(r"decoder\.up_blocks\.(\d+)\.", name)
    if up:
        name = f"decoder.up.{levels - 1 - int(up.group(1))}.{name[up.end():]}"
    for old, new in [
        (r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block."),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample."),
        (r"(up\.\d+\.)resnets\.", r"\1block."), (r"(up\.\d+\.)upsamplers\.0\.", r"\1upsample."),
        (r"mid_block\.resnets\.0\.", "mid.block_1."), (r"mid_block\.resnets\.1\.", "mid.block_2."),
        (r"mid_block\.attentions\.0\.group_norm\.", "mid.attn_1.norm."),
        (r"mid_block\.attentions\.0\.to_q\.", "mid.attn_1.q."),
        (r"mid_block\.attentions\.0\.to_k\.", "mid.attn_1.k."), (r"mid_block\.attentions\.0\.to_v\.", "mid.attn_1.v."),
        (r"mid_block\.attentions\.0\.to_out\.0\.", "mid.attn_1.proj_out."), (r"conv_shortcut\.", "nin_shortcut."),
        (r"conv_norm_out\.", "norm_out."),
    ]:
        name = re.sub(old, new, name)
    return name


def test_compvis_checkpoint_imports_like_diffusers(tmp_path):
    torch, diffusers = _torch_and_diffusers()
    reference = _small_diffusers_vq(torch, diffusers)
    reference.save_pretrained(tmp_path / "hub")
    state = {}
    for name, tensor in reference.state_dict().items():
        if re.search(r"attentions\.0\.(to_[qkv]|to_out\.0)\.weight", name):
            tensor = tensor[:, :, None, None]  # CompVis attention projections are 1x1 convs
        state[_to_compvis(name, 3)] = tensor.clone()
    state["loss.discriminator.main.0.weight"] = torch.zeros(2, 2)
    torch.save({"state_dict": state, "global_step": 3}, tmp_path / "model.ckpt")

    expected = flatten_params(import_diffusers(tmp_path / "hub")[1])
    config, params = import_compvis(tmp_path / "model.ckpt", "vq-f4-small")
    assert config == PRESETS["vq-f4-small"]
    params = flatten_params(params)
    assert all(np.array_equal(params[k], v) for k, v in expected.items())

    state["decoder.up.2.block.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    message = (
        r"does not fit preset 'vq-f4-small': decoder\.up\.2\.block\.0\.conv1\.weight "
        r"has shape \[64, 64, 1, 1\], expected \[64, 64, 3, 3\]"
    )
    with pytest.raises(UserError, match=message):
        import_compvis(tmp_path / "bad.ckpt", "vq-f4-small")
