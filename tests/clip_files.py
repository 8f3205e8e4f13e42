"""Tiny CLIP checkpoints for tests: random parameters in our layout, written as a Hugging Face folder
or in OpenAI's names (an independent inverse of the importer's tables), with a small BPE vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from diffcorrupt.evaluation.clip import Clip, ClipShape
from diffcorrupt.evaluation.clip_tokenizer import ClipTokenizer, bytes_to_unicode
from diffcorrupt.evaluation.clip_weights import import_clip, save_clip_npz
from diffcorrupt.weights.params_npz import flatten

MERGES = [("t", "h"), ("th", "e</w>"), ("p", "h"), ("ph", "o"), ("pho", "t"), ("phot", "o</w>"),
          ("o", "f</w>"), ("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
VOCAB = 2 * 256 + len(MERGES) + 2
TINY = ClipShape(embed_dim=24, image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=4,
                 context_length=16, vocab_size=VOCAB, text_width=16, text_layers=2, text_heads=2)
CAPTIONS = ["a photo of a cat.", "a photo of a dog.", "the dog", "T-shirt/top", "ankle boot 9"]


def write_tokenizer(folder) -> None:
    """merges.txt and vocab.json, as a Hugging Face CLIP folder holds them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    tokenizer = ClipTokenizer(MERGES)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in MERGES] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == tokenizer.vocab_size
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))


def random_params(shape: ClipShape, seed: int = 0) -> dict:
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


def to_layout(params: dict, shape: ClipShape, layout: str) -> dict[str, np.ndarray]:
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


def hf_config(shape: ClipShape) -> dict:
    return {"projection_dim": shape.embed_dim,
            "vision_config": {"hidden_size": shape.vision_width, "num_hidden_layers": shape.vision_layers,
                              "num_attention_heads": shape.vision_heads, "intermediate_size": 4 * shape.vision_width,
                              "image_size": shape.image_size, "patch_size": shape.patch_size, "hidden_act": shape.activation},
            "text_config": {"hidden_size": shape.text_width, "num_hidden_layers": shape.text_layers,
                            "num_attention_heads": shape.text_heads, "intermediate_size": 4 * shape.text_width,
                            "vocab_size": shape.vocab_size, "max_position_embeddings": shape.context_length,
                            "eos_token_id": shape.vocab_size - 1, "bos_token_id": shape.vocab_size - 2,
                            "hidden_act": shape.activation}}


def hf_folder(tmp_path, params, shape):
    folder = tmp_path / "clip-hf"
    write_tokenizer(folder)
    safetensors.numpy.save_file(to_layout(params, shape, "hf"), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(hf_config(shape)))
    return folder




def tiny_clip_npz(directory: Path) -> Path:
    """The project's CLIP .npz of a random TINY CLIP, as tools/convert_clip.py would write it."""
    path = Path(directory) / "clip.npz"
    save_clip_npz(import_clip(hf_folder(Path(directory), random_params(TINY), TINY)), path)
    return path
