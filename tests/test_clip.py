"""CLIP: the towers against transformers' CLIPModel, the importer's two layouts, the project's .npz,
CLIP's preprocessing, and the feature network on several devices."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from jax.sharding import Mesh

from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.clip import Clip, ClipShape
from diffcorrupt.evaluation.clip_score import clip_score, sample_captions
from diffcorrupt.evaluation.clip_features import ClipFeatures, normalise, resize_and_crop
from diffcorrupt.evaluation.clip_tokenizer import ClipTokenizer
from diffcorrupt.evaluation.clip_weights import import_clip, load_clip, save_clip_npz
from diffcorrupt.weights.params_npz import flatten
from clip_files import CAPTIONS, MERGES, TINY, VOCAB, hf_config, hf_folder, random_params, to_layout, write_tokenizer
from torch_files import state_dict_file

def same_params(a: dict, b: dict) -> None:
    a, b = flatten(a), flatten(b)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def _encode(params, shape, pixels, tokens):
    model = Clip(shape)
    image = model.apply({"params": params}, pixels, method=Clip.encode_image)
    return np.asarray(image), np.asarray(model.apply({"params": params}, tokens, method=Clip.encode_text))


def test_a_hugging_face_folder_imports_exactly_and_round_trips_through_the_npz(tmp_path):
    params = random_params(TINY)
    weights = import_clip(hf_folder(tmp_path, params, TINY))
    assert weights.shape == TINY and weights.source == "Hugging Face CLIPModel"
    same_params(weights.params, params)
    save_clip_npz(weights, tmp_path / "clip.npz")
    first = (tmp_path / "clip.npz").read_bytes()
    loaded = load_clip(tmp_path / "clip.npz")
    same_params(loaded.params, params)
    assert loaded.shape == TINY and loaded.tokenizer.merges == ClipTokenizer(MERGES).merges
    save_clip_npz(loaded, tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() != b"" and len(first) == len((tmp_path / "again.npz").read_bytes())


def test_a_hugging_face_folder_with_a_pytorch_bin_imports_the_same(tmp_path):
    params = random_params(TINY)
    folder = hf_folder(tmp_path, params, TINY)
    (folder / "model.safetensors").unlink()
    state_dict_file(folder / "pytorch_model.bin", to_layout(params, TINY, "hf"))
    same_params(import_clip(folder).params, params)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(UserError, match="holds neither model.safetensors nor pytorch_model.bin"):
        import_clip(folder)


def test_an_openai_state_dict_imports_to_the_same_parameters(tmp_path):
    """OpenAI's names, its fused in_proj (q, k, v stacked) and its (in, out) projections; heads are width / 64
    there, so this geometry keeps 64-wide heads."""
    shape = dataclasses.replace(TINY, vision_width=128, vision_heads=2, text_width=64, text_heads=1)
    params = random_params(shape, seed=1)
    write_tokenizer(tmp_path / "bpe")
    pt = state_dict_file(tmp_path / "ViT-T.pt", to_layout(params, shape, "openai"))
    weights = import_clip(pt, tokenizer=tmp_path / "bpe" / "merges.txt")
    assert weights.shape == shape and weights.source == "OpenAI/open_clip state dict"
    same_params(weights.params, params)


def test_import_refuses_what_is_not_a_vit_clip(tmp_path):
    params = random_params(TINY)
    folder = hf_folder(tmp_path, params, TINY)
    tensors = to_layout(params, TINY, "hf")
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
    pt = state_dict_file(tmp_path / "ViT.pt", to_layout(params, TINY, "openai"))
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
    weights = import_clip(hf_folder(tmp_path, random_params(TINY), TINY))
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
    config = hf_config(shape)
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
    write_tokenizer(folder)
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


def test_clip_score_is_a_hundred_times_the_clipped_cosine():
    images = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    texts = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, -1.0]])  # cos 1, 1/sqrt(2), -1 (clipped to 0)
    scores = 100 * np.array([1.0, 2 ** -0.5, 0.0])
    assert clip_score(images, texts) == pytest.approx({"clip_score": scores.mean(), "clip_score_std": scores.std()})


def test_each_sample_gets_its_caption_or_the_reason_it_has_none():
    names = ["T-shirt/top", "ankle_boot"]
    assert sample_captions(np.array([1, 0]), names) == (["a photo of a ankle boot.", "a photo of a T-shirt/top."], None)
    assert sample_captions(np.array(["a red circle", "a blue square"]), None) == (["a red circle", "a blue square"], None)
    for conditions, known, words in ((None, names, "no labels or captions"), (np.array([0]), None, "--class_names"),
                                     (np.array([2]), names, "label 2 but 2 class names"),
                                     (np.array([0]), ["n01440764", "n01443537"], "WordNet id")):
        captions, note = sample_captions(conditions, known)
        assert captions is None and words in note
