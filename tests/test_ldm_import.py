"""Importing a diffusers LDMTextToImagePipeline folder: the WordPiece tokenizer, the config keys
it adds, refusals in one sentence, and agreement with diffusers and transformers on a tiny random
pipeline (PyTorch, diffusers and transformers only for that check)."""

import importlib.util
import json
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt import sample
from diffcorrupt.checkpoint_import.ldm_sources import read_ldm
from diffcorrupt.config.schema import base_config
from diffcorrupt.config.validate import validate
from diffcorrupt.errors import ConfigError, UserError
from diffcorrupt.models.text_encoder import TextEmbedder
from diffcorrupt.models.tokenizer import WordPieceTokenizer, make_tokenizer
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.sampling.restore import restore_ema
from diffcorrupt.sampling.shards import read_shards

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["a", "red", "blue", "cat", "dog", "on", "the", "mat", "un", "##believ", "##able", "##s", "##ing", "play",
         "cafe", "naive", ",", ".", "!", "'", "-", "$", "中", "x", "##x"]
VOCAB = SPECIALS + WORDS
PAD, UNK, CLS, SEP = range(4)


def _ids(*tokens: str) -> list[int]:
    return [VOCAB.index(token) for token in tokens]


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return path


def _body(tokenizer, text):
    ids = tokenizer.encode(text).tolist()
    return ids[1:ids.index(SEP)]


def test_wordpiece_lower_case_accents_punctuation_and_pieces(vocab_file):
    tokenizer = WordPieceTokenizer(vocab_file, max_length=16)
    assert tokenizer.vocab_size == len(VOCAB) and tokenizer.pad_id == PAD
    assert _body(tokenizer, "A RED Cat") == _ids("a", "red", "cat")
    assert _body(tokenizer, "Café  naïve") == _ids("cafe", "naive")  # accents stripped with lower-casing
    assert _body(tokenizer, "cat,dog!'$") == _ids("cat", ",", "dog", "!", "'", "$")  # ASCII symbols split off
    assert _body(tokenizer, "cats unbelievable playing") == _ids("cat", "##s", "un", "##believ", "##able", "play",
                                                                  "##ing")
    assert _body(tokenizer, "xxx") == _ids("x", "##x", "##x")
    assert _body(tokenizer, "a\tred\x07\ufffd cat") == _ids("a", "red", "cat")  # control characters dropped
    assert _body(tokenizer, "中中") == _ids("中", "中")  # CJK ideographs are words of their own
    # A word with a part no piece matches is [UNK] whole, and so is a word of over 100 characters.
    assert _body(tokenizer, "catz dog") == [UNK] + _ids("dog")
    long = WordPieceTokenizer(vocab_file, max_length=128)
    assert _body(long, "x" * 100) == _ids("x") + _ids("##x") * 99
    assert _body(long, "x" * 101) == [UNK]
    assert tokenizer.decode(tokenizer.encode("Cats, unbelievable!")) == "cats , unbelievable !"

    cased = WordPieceTokenizer(vocab_file, max_length=16, do_lower_case=False)
    assert _body(cased, "Red red café") == [UNK] + _ids("red") + [UNK]


def test_wordpiece_truncation_padding_and_empty(vocab_file):
    tokenizer = WordPieceTokenizer(vocab_file, max_length=6)
    ids = tokenizer.encode("the red cats on the mat")
    np.testing.assert_array_equal(ids, [CLS] + _ids("the", "red", "cat", "##s") + [SEP])  # [SEP] survives the cut
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(tokenizer.encode("a dog"), [CLS] + _ids("a", "dog") + [SEP, PAD, PAD])
    np.testing.assert_array_equal(tokenizer.empty, [CLS, SEP] + [PAD] * 4)
    assert tokenizer.encode_batch(["a", "dog"]).shape == (2, 6) and tokenizer.encode_batch([]).shape == (0, 6)


def test_tokenizer_and_model_config_keys(vocab_file, tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    assert _body(make_tokenizer(str(vocab_file), 8), "Red") == [UNK]  # the Hugging Face settings beside it
    config = base_config()
    validate(config, check_data=False)  # the defaults: bytes, the model's encoder, no U-Net overrides
    config.model.tokenizer = str(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="'model.tokenizer' is .*missing.txt', which is neither 'bytes' nor"):
        validate(config, check_data=False)
    (tmp_path / "bad.txt").write_text("a\nb\n")
    config.model.tokenizer = str(tmp_path / "bad.txt")
    with pytest.raises(UserError, match=r"has no \[PAD\] token"):
        validate(config, check_data=False)
    config.model.tokenizer = "bytes"
    config.model.text_encoder = "bert-large"
    with pytest.raises(ConfigError, match="'model.text_encoder' is 'bert-large', which is no text encoder"):
        validate(config, check_data=False)
    config.model.text_encoder = '{"width": 32, "depth": 1, "num_heads": 2, "heads": 3}'
    with pytest.raises(ConfigError, match="'model.text_encoder' sets 'heads', which is not a field it may set"):
        validate(config, check_data=False)
    config.model.text_encoder = "ldm-bert"
    config.model.unet = '{"model_channels": 64}'
    with pytest.raises(ConfigError, match="'model.unet' is set but model.name 'DiT-S/4' is no U-Net"):
        validate(config, check_data=False)
    config.model.name = "LDM-small"
    config.model.unet = '{"model_channels": 64, "channels": [1, 2]}'
    with pytest.raises(ConfigError, match="'model.unet' sets 'channels', which is not a field it may set"):
        validate(config, check_data=False)
    config.model.unet = '{"channel_mult": [1, 2.5]}'
    with pytest.raises(ConfigError, match="'channel_mult' to \\[1, 2.5\\]; it must be a list of integers"):
        validate(config, check_data=False)


# ---------------------------------------------------------------------------------------------
# Pipeline folders

CONTEXT = 32  # the tiny LDMBert's width = the U-Net's cross_attention_dim
UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            layers_per_block=1, attention_head_dim=2, cross_attention_dim=CONTEXT, norm_num_groups=32)
# Two heads of 8: an inner attention width (16) unlike the model width, as LDMBert's 8 x 64 in 1280.
BERT = dict(vocab_size=len(VOCAB), max_position_embeddings=77, encoder_layers=2, encoder_ffn_dim=48,
            encoder_attention_heads=2, head_dim=8, d_model=CONTEXT)
SCHEDULER = dict(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def _fake_folder(root):
    """Configs only, no weights: enough for every refusal that the configs decide."""
    for name in ("unet", "bert", "tokenizer", "scheduler", "vqvae"):
        (root / name).mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "LDMTextToImagePipeline"}))
    (root / "unet" / "config.json").write_text(json.dumps(dict(UNET, _class_name="UNet2DConditionModel")))
    (root / "bert" / "config.json").write_text(json.dumps(dict(BERT, model_type="ldmbert",
                                                               architectures=["LDMBertModel"])))
    (root / "tokenizer" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(dict(SCHEDULER, _class_name="DDIMScheduler")))
    return root


def _edit(path, **changes):
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **changes)))


def _tool(repo):
    spec = importlib.util.spec_from_file_location("import_ldm", repo / "tools" / "import_ldm.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_refusals_name_the_problem(tmp_path, repo, capsys):
    folder = _fake_folder(tmp_path / "pipe")
    with pytest.raises(UserError, match=r"vqvae/config.json is missing or not JSON"):
        read_ldm(folder)  # every other config fits: the first file it needs and lacks is named
    _edit(folder / "scheduler" / "scheduler_config.json", beta_start=0.00085, beta_end=0.012)
    with pytest.raises(UserError, match=r"vqvae/config.json is missing"):
        read_ldm(folder)  # CompVis' text-to-image betas are ours too (ldm_txt_linear)
    _edit(folder / "scheduler" / "scheduler_config.json", beta_start=0.001, beta_end=0.012)
    with pytest.raises(UserError, match=r"sets a scaled_linear schedule from 0.001 to 0.012; we compute only ldm_linear "
                                        r"\(0.0015 to 0.0195\); ldm_txt_linear \(0.00085 to 0.012\)"):
        read_ldm(folder)
    _edit(folder / "scheduler" / "scheduler_config.json", _class_name="EulerDiscreteScheduler")
    with pytest.raises(UserError, match="describes a EulerDiscreteScheduler; the pipeline takes DDIMScheduler"):
        read_ldm(folder)
    _edit(folder / "bert" / "config.json", d_model=64)
    with pytest.raises(UserError, match="cross-attends to 32 features but bert/ outputs 64"):
        read_ldm(folder)
    _edit(folder / "bert" / "config.json", model_type="bert", architectures=["BertModel"])
    with pytest.raises(UserError, match="describes a bert, not an LDMBertModel"):
        read_ldm(folder)
    _edit(folder / "unet" / "config.json", class_embed_type="timestep", num_class_embeds=1000)
    with pytest.raises(UserError, match="is class-conditional"):
        read_ldm(folder)
    _edit(folder / "unet" / "config.json", _class_name="UNet2DModel", class_embed_type=None, num_class_embeds=None)
    with pytest.raises(UserError, match="describes a UNet2DModel, not a UNet2DConditionModel"):
        read_ldm(folder)
    _edit(folder / "model_index.json", _class_name="LDMPipeline")
    with pytest.raises(UserError, match="describes a LDMPipeline, not an LDMTextToImagePipeline"):
        read_ldm(folder)
    (folder / "model_index.json").unlink()
    (folder / "bert" / "config.json").unlink()
    (folder / "bert").rmdir()
    assert _tool(repo).main([f"--from={folder}", f"--workdir={tmp_path / 'run'}"]) == 2
    error = capsys.readouterr().err
    assert "has no bert/ subfolder" in error and "class-conditional LDMs have no bert/" in error


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny random LDMTextToImagePipeline written with save_pretrained, every parameter random."""
    torch = pytest.importorskip("torch", reason="the reference check needs PyTorch (pip install torch)")
    diffusers = pytest.importorskip("diffusers", reason="the reference check needs diffusers (pip install diffusers)")
    transformers = pytest.importorskip("transformers",
                                       reason="the reference check needs transformers (pip install transformers)")
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

    root = tmp_path_factory.mktemp("ldm")
    vocab = root / "vocab"
    vocab.mkdir()
    (vocab / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = transformers.BertTokenizer.from_pretrained(str(vocab))
    torch.manual_seed(0)

    def randomised(module):
        with torch.no_grad():
            for name, p in module.named_parameters():  # norms near 1, everything else small and random
                p.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
        return module.eval()

    unet = randomised(diffusers.UNet2DConditionModel(**UNET))
    bert = randomised(LDMBertModel(LDMBertConfig(**BERT)))
    vae = randomised(diffusers.AutoencoderKL(
        block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8, latent_channels=4,
        sample_size=16))
    pipe = diffusers.LDMTextToImagePipeline(vqvae=vae, bert=bert, tokenizer=tokenizer, unet=unet,
                                            scheduler=diffusers.DDIMScheduler(**SCHEDULER))
    pipe.save_pretrained(root / "pipe", safe_serialization=True)
    # The released folders carry vocab.txt; transformers 5 saves tokenizer.json instead.
    (root / "pipe" / "tokenizer" / "vocab.txt").write_text((vocab / "vocab.txt").read_text())
    return types.SimpleNamespace(root=root, folder=root / "pipe", unet=unet, bert=bert, tokenizer=tokenizer,
                                 torch=torch)


CAPTIONS = ["A red cat on the mat.", "Unbelievable dogs, playing!", "", "Café naïve x-xx $", "a zebra 中 cats",
            " ".join(["the red cat"] * 40)]  # 120 pieces: truncated to 75 and [SEP]


def test_imported_pipeline_matches_the_reference(pipeline, repo, capsys):
    torch = pipeline.torch
    record = _tool(repo).import_ldm(pipeline.folder, pipeline.root / "run")
    assert record["schedule"] == "ldm_linear" and record["prediction"] == "eps" and record["input_shape"] == [8, 8, 4]
    restored = restore_ema(pipeline.root / "run", make_mesh(base_config().mesh))
    config, params = restored.config, restored.params
    assert config.model.tokenizer == str(pipeline.root / "run" / "tokenizer" / "vocab.txt")

    # (a) The same ids as BERT's tokenizer, as the pipeline calls it.
    ours = restored.tokenizer.encode_batch(CAPTIONS)
    theirs = pipeline.tokenizer(CAPTIONS, padding="max_length", max_length=77, truncation=True).input_ids
    np.testing.assert_array_equal(ours, np.asarray(theirs))

    # (b) The text encoder computes LDMBert's last hidden state, pads attended to.
    embedder = TextEmbedder(config.model.text_encoder, 77, tokenizer=config.model.tokenizer)
    null = np.array([False, False, False, False, False, True])
    context, mask = jax.jit(embedder.apply)({"params": params["cond_stage_model"]}, jnp.asarray(ours),
                                            jnp.asarray(null))
    with torch.no_grad():
        expected = pipeline.bert(torch.from_numpy(ours.astype(np.int64)))[0].numpy()
    expected[null] = expected[2]  # a null row is the empty caption, which is caption 2
    text_difference = float(np.abs(np.asarray(context) - expected).max())
    assert mask is None and text_difference < 1e-4

    # (c) The U-Net's eps with that context is diffusers'.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((len(CAPTIONS), 8, 8, 4)).astype(np.float32)
    t = np.array([0, 10, 250, 500, 750, 999], np.int32)
    eps = jax.jit(restored.model.apply)({"params": params}, jnp.asarray(x), jnp.asarray(t), jnp.asarray(ours),
                                        jnp.asarray(null))
    with torch.no_grad():
        reference = pipeline.unet(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t.astype(np.int64)),
                                  encoder_hidden_states=torch.from_numpy(expected)).sample.numpy().transpose(0, 2, 3, 1)
    unet_difference = float(np.abs(np.asarray(eps) - reference).max())
    assert np.abs(reference).max() > 0.1 and unet_difference < 1e-4
    with capsys.disabled():  # the measured agreement, for -s runs
        print(f"\nLDMBert max |ours - reference| = {text_difference:.2e} (|reference| <= {np.abs(expected).max():.2f}); "
              f"U-Net eps {unet_difference:.2e} (|reference| <= {np.abs(reference).max():.2f})")

    # (d) The sample job runs on the imported workdir.
    (pipeline.root / "captions.txt").write_text("a red cat\nblue dogs, playing\n")
    flags = dict(workdir=str(pipeline.root / "run"), step=None, num_samples=2, sampler="ddim", steps=2,
                 cfg_scale="3", eta=None, seed=0, batch_size=2, captions=str(pipeline.root / "captions.txt"),
                 out=str(pipeline.root / "samples"), mesh="-1,1,1", autoencoder=None, controls=None)
    folder = sample.sample_run(types.SimpleNamespace(**flags))[0]["samples"]
    shards = read_shards(pathlib.Path(folder))
    assert shards["arr_0"].shape == (2, 16, 16, 3) and list(shards["captions"]) == ["a red cat", "blue dogs, playing"]
