"""CLIP: the towers against transformers' CLIPModel, the importer's two layouts, the project's .npz,
CLIP's preprocessing, and the feature network on several devices."""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from jax.sharding import Mesh

from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.clip import Clip, ClipShape
from diffcorrupt.evaluation.clip_features import ClipFeatures, normalise, resize_and_crop
from diffcorrupt.evaluation.clip_tokenizer import ClipTokenizer, bytes_to_unicode
from diffcorrupt.evaluation.clip_weights import import_clip, load_clip, save_clip_npz
from diffcorrupt.weights.params_npz import flatten
from torch_files import state_dict_file

MERGES = [("t", "h"), ("th", "e</w>"), ("p", "h"), ("ph", "o"), ("pho", "t"), ("phot", "o</w>"),
          ("o", "f</w>"), ("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
VOCAB = 2 * 256 + len(MERGES) + 2
TINY = ClipShape(embed_dim=24, image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=4,
                 context_length=16, vocab_size=VOCAB, text_width=16, text_layers=2, text_heads=2)
CAPTIONS = ["a photo of a cat.", "a photo of a dog.", "the dog", "T-shirt/top", "ankle boot 9"]


def _write_tokenizer(folder) -> None:
    """merges.txt and vocab.json, as a Hugging Face CLIP folder holds them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    tokenizer = ClipTokenizer(MERGES)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in MERGES] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == tokenizer.vocab_size
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))


def _random_params(shape: ClipShape, seed: int = 0) -> dict:
    """Our parameters, every one random (norm scales around 1), so that no layer can be a no-op."""
    pixels = jnp.zeros((1, shape.image_size, shape.image_size, 3))
    abstract = nn.meta.unbox(jax.eval_shape(Clip(shape).init, jax.random.key(0), pixels,
                                            jnp.zeros((1, shape.context_length), jnp.int32)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = "/".join(k.key for k in path)
        value = rng.standard_normal(leaf.shape).astype(np.float32)
        return (1 + 0.1 * value if name.endswith("scale") else value * (0.5 / np.sqrt(max(leaf.shape[0], 1)))).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, abstract["params"])


def _to_layout(params: dict, shape: ClipShape, layout: str) -> dict[str, np.ndarray]:
    """Our parameters in the names and orientations of a Hugging Face or OpenAI checkpoint."""
    hf = layout == "hf"
    flat, out = flatten(params), {}

    def block(ours: str, theirs: str, width: int) -> None:
        qkv = flat[f"{ours}/attn/qkv/kernel"].reshape(width, 3, width).transpose(1, 2, 0)  # (3, out, in)
        bias = flat[f"{ours}/attn/qkv/bias"].reshape(3, width)
        if hf:
            for i, n in enumerate("qkv"):
                out[f"{theirs}self_attn.{n}_proj.weight"], out[f"{theirs}self_attn.{n}_proj.bias"] = qkv[i], bias[i]
        else:
            out[f"{theirs}attn.in_proj_weight"], out[f"{theirs}attn.in_proj_bias"] = qkv.reshape(3 * width, width), bias.reshape(-1)
        attn = f"{theirs}{'self_attn' if hf else 'attn'}.out_proj."
        out[attn + "weight"] = flat[f"{ours}/attn/out/kernel"].reshape(width, width).T
        out[attn + "bias"] = flat[f"{ours}/attn/out/bias"]
        for n, (h, o) in {"norm1": ("layer_norm1", "ln_1"), "norm2": ("layer_norm2", "ln_2")}.items():
            out[f"{theirs}{h if hf else o}.weight"], out[f"{theirs}{h if hf else o}.bias"] = flat[f"{ours}/{n}/scale"], flat[f"{ours}/{n}/bias"]
        for n, (h, o) in {"fc1": ("mlp.fc1", "mlp.c_fc"), "fc2": ("mlp.fc2", "mlp.c_proj")}.items():
            out[f"{theirs}{h if hf else o}.weight"], out[f"{theirs}{h if hf else o}.bias"] = flat[f"{ours}/{n}/kernel"].T, flat[f"{ours}/{n}/bias"]

    v, t = ("vision_model.", "text_model.") if hf else ("visual.", "")
    names = {"image/patch_embed/kernel": v + ("embeddings.patch_embedding.weight" if hf else "conv1.weight"),
             "image/class_embedding": v + ("embeddings.class_embedding" if hf else "class_embedding"),
             "image/positions": v + ("embeddings.position_embedding.weight" if hf else "positional_embedding"),
             "text/encoder/token_embedding/embedding": t + ("embeddings.token_embedding.weight" if hf else "token_embedding.weight"),
             "text/encoder/positions": t + ("embeddings.position_embedding.weight" if hf else "positional_embedding")}
    for ours, theirs in names.items():
        out[theirs] = flat[ours].transpose(3, 2, 0, 1) if ours.endswith("kernel") else flat[ours]
    for ours, h, o in (("image/pre_norm", "vision_model.pre_layrnorm", "visual.ln_pre"),
                       ("image/post_norm", "vision_model.post_layernorm", "visual.ln_post"),
                       ("text/encoder/final_norm", "text_model.final_layer_norm", "ln_final")):
        out[f"{h if hf else o}.weight"], out[f"{h if hf else o}.bias"] = flat[f"{ours}/scale"], flat[f"{ours}/bias"]
    projections = {"image/projection/kernel": ("visual_projection.weight", "visual.proj"),
                   "text/projection/kernel": ("text_projection.weight", "text_projection")}
    for ours, (h, o) in projections.items():
        out[h if hf else o] = flat[ours].T if hf else flat[ours]
    for i in range(shape.vision_layers):
        block(f"image/blocks_{i}", f"vision_model.encoder.layers.{i}." if hf else f"visual.transformer.resblocks.{i}.", shape.vision_width)
    for i in range(shape.text_layers):
        block(f"text/encoder/blocks_{i}", f"text_model.encoder.layers.{i}." if hf else f"transformer.resblocks.{i}.", shape.text_width)
    out["logit_scale"] = np.float32(np.log(100.0)).reshape(())
    return {name: np.ascontiguousarray(value, np.float32) for name, value in out.items()}


def _hf_config(shape: ClipShape) -> dict:
    return {"projection_dim": shape.embed_dim,
            "vision_config": {"hidden_size": shape.vision_width, "num_hidden_layers": shape.vision_layers,
                              "num_attention_heads": shape.vision_heads, "intermediate_size": 4 * shape.vision_width,
                              "image_size": shape.image_size, "patch_size": shape.patch_size, "hidden_act": shape.activation},
            "text_config": {"hidden_size": shape.text_width, "num_hidden_layers": shape.text_layers,
                            "num_attention_heads": shape.text_heads, "intermediate_size": 4 * shape.text_width,
                            "vocab_size": shape.vocab_size, "max_position_embeddings": shape.context_length,
                            "eos_token_id": shape.vocab_size - 1, "bos_token_id": shape.vocab_size - 2,
                            "hidden_act": shape.activation}}


def _hf_folder(tmp_path, params, shape):
    folder = tmp_path / "clip-hf"
    _write_tokenizer(folder)
    safetensors.numpy.save_file(_to_layout(params, shape, "hf"), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(_hf_config(shape)))
    return folder


def _same_params(a: dict, b: dict) -> None:
    a, b = flatten(a), flatten(b)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def _encode(params, shape, pixels, tokens):
    model = Clip(shape)
    image = model.apply({"params": params}, pixels, method=Clip.encode_image)
    return np.asarray(image), np.asarray(model.apply({"params": params}, tokens, method=Clip.encode_text))


def test_a_hugging_face_folder_imports_exactly_and_round_trips_through_the_npz(tmp_path):
    params = _random_params(TINY)
    weights = import_clip(_hf_folder(tmp_path, params, TINY))
    assert weights.shape == TINY and weights.source == "Hugging Face CLIPModel"
    _same_params(weights.params, params)
    save_clip_npz(weights, tmp_path / "clip.npz")
    first = (tmp_path / "clip.npz").read_bytes()
    loaded = load_clip(tmp_path / "clip.npz")
    _same_params(loaded.params, params)
    assert loaded.shape == TINY and loaded.tokenizer.merges == ClipTokenizer(MERGES).merges
    save_clip_npz(loaded, tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() != b"" and len(first) == len((tmp_path / "again.npz").read_bytes())


def test_an_openai_state_dict_imports_to_the_same_parameters(tmp_path):
    """OpenAI's names, its fused in_proj (q, k, v stacked) and its (in, out) projections; heads are width / 64
    there, so this geometry keeps 64-wide heads."""
    shape = dataclasses.replace(TINY, vision_width=128, vision_heads=2, text_width=64, text_heads=1)
    params = _random_params(shape, seed=1)
    _write_tokenizer(tmp_path / "bpe")
    pt = state_dict_file(tmp_path / "ViT-T.pt", _to_layout(params, shape, "openai"))
    weights = import_clip(pt, tokenizer=tmp_path / "bpe" / "merges.txt")
    assert weights.shape == shape and weights.source == "OpenAI/open_clip state dict"
    _same_params(weights.params, params)


def test_import_refuses_what_is_not_a_vit_clip(tmp_path):
    params = _random_params(TINY)
    folder = _hf_folder(tmp_path, params, TINY)
    tensors = _to_layout(params, TINY, "hf")
    cases = {
        "no tensor `text_model.encoder.layers.1.mlp.fc2.bias`":
            {k: v for k, v in tensors.items() if k != "text_model.encoder.layers.1.mlp.fc2.bias"},
        "of shape (32,) where this CLIP needs (128,)": {**tensors, "vision_model.encoder.layers.0.mlp.fc1.bias": np.zeros(32, np.float32)},
        "has no place for (`vision_model.head.weight`": {**tensors, "vision_model.head.weight": np.zeros(3, np.float32)},
    }
    for words, broken in cases.items():
        safetensors.numpy.save_file(broken, str(folder / "model.safetensors"))
        with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
            import_clip(folder)
    pt = state_dict_file(tmp_path / "ViT.pt", _to_layout(params, TINY, "openai"))
    with pytest.raises(UserError, match="carries no tokenizer"):
        import_clip(pt)
    with pytest.raises(UserError, match="does not exist"):
        import_clip(tmp_path / "nowhere")
    with pytest.raises(UserError, match="convert_clip"):
        load_clip(tmp_path / "missing.npz")
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="not a readable CLIP weights"):
        load_clip(tmp_path / "cut.npz")


def test_features_are_the_same_on_one_and_on_eight_devices(tmp_path):
    weights = import_clip(_hf_folder(tmp_path, _random_params(TINY), TINY))
    images = np.random.default_rng(0).integers(0, 256, (13, 20, 20, 1), dtype=np.uint8)
    one = ClipFeatures(weights, batch_size=8, mesh=Mesh(np.array(jax.devices()[:1]), ("data",)))
    eight = ClipFeatures(weights, batch_size=8, mesh=Mesh(np.array(jax.devices()), ("data",)))
    a, b = one(images)["pool"], eight(images)["pool"]
    assert a.shape == (13, TINY.embed_dim)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    direct, _ = _encode(weights.params, TINY, normalise(resize_and_crop(images, TINY.image_size)),
                        jnp.zeros((1, TINY.context_length), jnp.int32))
    np.testing.assert_allclose(a, direct, rtol=1e-5, atol=1e-6)
    text = one.text_embeddings(CAPTIONS)
    assert text.shape == (len(CAPTIONS), TINY.embed_dim) and np.all(np.isfinite(text))
    assert one(images[:0])["pool"].shape == (0, TINY.embed_dim)


def test_resize_and_crop_takes_the_shorter_side_and_the_centre():
    image = np.zeros((1, 40, 80, 3), np.uint8)
    image[:, :, 30:50] = 255  # a central band survives the crop, the sides do not
    out = resize_and_crop(image, 32)
    assert out.shape == (1, 32, 32, 3)
    assert out[0, :, 16].min() == 255 and out[0, :, 0].max() == 0
    grey = resize_and_crop(np.full((2, 28, 28, 1), 7, np.uint8), 32)
    assert grey.shape == (2, 32, 32, 3) and np.all(grey == 7)


PARITY_SHAPES = {"tiny": TINY,
                 "vit-b/16": ClipShape(vocab_size=VOCAB)}  # OpenAI's ViT-B/16 geometry, with the test's vocabulary


def _tensor(output) -> np.ndarray:
    """transformers 4 returns the projected embeddings, 5 an output whose pooler_output holds them."""
    return (output if hasattr(output, "numpy") else output.pooler_output).numpy()


@pytest.mark.parametrize("name", list(PARITY_SHAPES))
def test_embeddings_match_transformers_clip_model(tmp_path, name):
    torch = pytest.importorskip("torch", reason="the parity check needs PyTorch (the `peers` extra)")
    transformers = pytest.importorskip("transformers", reason="the parity check needs transformers (the `peers` extra)")
    shape = PARITY_SHAPES[name]
    config = _hf_config(shape)
    model = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=config["text_config"], vision_config=config["vision_config"], projection_dim=shape.embed_dim)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, parameter in model.named_parameters():  # not the initialiser's near-identity: every layer matters
            noise = torch.randn(parameter.shape, generator=generator)
            is_scale = "norm" in key and key.endswith(".weight")
            parameter.copy_(1 + 0.1 * noise if is_scale else noise * 0.5 / (parameter.shape or (1,))[-1] ** 0.5)
    folder = tmp_path / "hf"
    model.save_pretrained(folder, safe_serialization=True)
    _write_tokenizer(folder)
    weights = import_clip(folder)
    images = np.random.default_rng(2).integers(0, 256, (3, 40, 30, 3), dtype=np.uint8)
    pixels = np.asarray(normalise(resize_and_crop(images, shape.image_size)))
    tokens = ClipTokenizer.from_path(folder).encode_batch(CAPTIONS, shape.context_length)
    ours_image, ours_text = _encode(weights.params, shape, pixels, tokens)
    with torch.no_grad():
        theirs_image = _tensor(model.get_image_features(pixel_values=torch.from_numpy(pixels.copy()).permute(0, 3, 1, 2)))
        theirs_text = _tensor(model.get_text_features(input_ids=torch.from_numpy(tokens.astype(np.int64))))
    for ours, theirs in ((ours_image, theirs_image), (ours_text, theirs_text)):
        relative = np.abs(ours - theirs).max() / np.abs(theirs).max()
        print(f"{name}: largest difference {relative:.2e} of the largest embedding value")
        assert relative < 1e-5


def test_preprocessing_matches_hugging_faces_clip_image_processor():
    transformers = pytest.importorskip("transformers", reason="the parity check needs transformers (the `peers` extra)")
    # OpenAI's transform resizes with Pillow; so does transformers 4's CLIPImageProcessor and 5's CLIPImageProcessorPil
    # (5's CLIPImageProcessor resizes with torch's bicubic, a level or two off on 0.4% of the values).
    processor = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)()
    rng = np.random.default_rng(3)
    # Sizes whose crop offset is whole: HF floors (long - 224) / 2 where OpenAI's torchvision rounds it.
    for size in ((32, 32, 3), (28, 28, 1), (64, 48, 3), (300, 256, 3)):
        images = rng.integers(0, 256, (2, *size), dtype=np.uint8)
        ours = np.asarray(normalise(resize_and_crop(images, 224)))
        theirs = processor(images=[np.repeat(image, 3, -1) if size[-1] == 1 else image for image in images],
                           return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=str(size))
