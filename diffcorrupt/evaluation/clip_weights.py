"""CLIP weights: importing the user's published checkpoint into the project's ``.npz``, and reading it.

CLIP's weights are not on a package registry, so they are the user's to bring, in either layout:

- a Hugging Face CLIP folder (``openai/clip-vit-base-patch16``: ``config.json``, ``model.safetensors``
  or ``pytorch_model.bin``, and the tokenizer's ``merges.txt``/``vocab.json``);
- an OpenAI ``.pt`` (``ViT-B-16.pt``, a TorchScript archive) or an open_clip checkpoint of a ViT CLIP,
  with the BPE file (``bpe_simple_vocab_16e6.txt.gz`` from the ``open_clip_torch`` wheel, or a
  ``merges.txt``) given beside it.

PyTorch files go through the restricted reader (``weights/torch_pickle``): nothing in them runs.
The geometry is read off the tensors (widths, depths, patch, image size, vocabulary); heads come
from ``config.json`` where there is one and are width / 64 otherwise, as OpenAI builds them. Every
tensor is checked against the shape that geometry needs, and the converted file holds the
parameters, the geometry and the tokenizer's merges, so that it alone is enough to score.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diffcorrupt.cache import cache_root
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.clip import Clip, ClipShape
from diffcorrupt.evaluation.clip_tokenizer import ClipTokenizer
from diffcorrupt.models.text_encoder import ACTIVATIONS
from diffcorrupt.weights.hashing import file_sha256
from diffcorrupt.weights.json_settings import read_json_object
from diffcorrupt.weights.params_npz import abstract_shapes, read_params_npz, save_params_npz, unflatten
from diffcorrupt.weights.safetensors_file import read_safetensors
from diffcorrupt.weights.torch_pickle import load_state_dict

WEIGHTS_FILENAME = "clip_vit_b16.npz"
CONVERT_HINT = ("convert your CLIP checkpoint once with `python tools/convert_clip.py --from=<Hugging Face CLIP folder "
                "or OpenAI/open_clip .pt>`")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF, OPENAI = "Hugging Face CLIPModel", "OpenAI/open_clip state dict"
_FORMAT = "diffcorrupt-clip-1"
_IGNORED = re.compile(r"(^|\.)(logit_scale|position_ids|input_resolution|context_length|vocab_size)$")


@dataclasses.dataclass(frozen=True)
class ClipWeights:
    """Flax parameters (nested dicts of float32 numpy arrays), the geometry, the tokenizer and provenance."""

    params: dict
    shape: ClipShape
    tokenizer: ClipTokenizer
    sha256: str
    source: str


def default_weights_path() -> pathlib.Path:
    """``$DIFFCORRUPT_CACHE/clip/clip_vit_b16.npz`` (cache default ``~/.cache/diffcorrupt``)."""
    return cache_root() / "clip" / WEIGHTS_FILENAME


def expected_shapes(shape: ClipShape) -> dict[str, tuple[int, ...]]:
    pixels = jnp.zeros((1, shape.image_size, shape.image_size, 3), jnp.float32)
    tokens = jnp.zeros((1, shape.context_length), jnp.int32)
    return abstract_shapes(nn.meta.unbox(jax.eval_shape(Clip(shape).init, jax.random.key(0), pixels, tokens)["params"]))


class _Taker:
    """Reads a checkpoint's tensors by name, each checked against the shape this CLIP needs, and
    remembers which it read, so that the leftovers can be refused."""

    def __init__(self, tensors: dict[str, np.ndarray], path: pathlib.Path):
        self.tensors, self.path, self.used = tensors, path, set()

    def __call__(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.tensors:
            raise UserError(f"{self.path} has no tensor `{name}` (expected shape {shape}); it is not a ViT CLIP "
                            "checkpoint in the Hugging Face or OpenAI layout")
        value = self.tensors[name]
        if tuple(value.shape) != tuple(shape):
            raise UserError(f"{self.path} has `{name}` of shape {tuple(value.shape)} where this CLIP needs "
                            f"{tuple(shape)}; the checkpoint's tensors disagree with each other or it is another network")
        self.used.add(name)
        return np.asarray(value, dtype=np.float32)


# Our names -> each layout's, for the parts that differ only in name.
_NAMES = {
    HF: {"image": "vision_model.", "text": "text_model.", "image_layer": "vision_model.encoder.layers.{}.",
         "text_layer": "text_model.encoder.layers.{}.", "norm1": "layer_norm1", "norm2": "layer_norm2",
         "fc1": "mlp.fc1", "fc2": "mlp.fc2", "class": "vision_model.embeddings.class_embedding",
         "patch": "vision_model.embeddings.patch_embedding.weight",
         "image_positions": "vision_model.embeddings.position_embedding.weight",
         "pre_norm": "vision_model.pre_layrnorm", "post_norm": "vision_model.post_layernorm",
         "tokens": "text_model.embeddings.token_embedding.weight",
         "text_positions": "text_model.embeddings.position_embedding.weight",
         "final_norm": "text_model.final_layer_norm", "image_projection": "visual_projection.weight",
         "text_projection": "text_projection.weight"},
    OPENAI: {"image_layer": "visual.transformer.resblocks.{}.", "text_layer": "transformer.resblocks.{}.",
             "norm1": "ln_1", "norm2": "ln_2", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj", "class": "visual.class_embedding",
             "patch": "visual.conv1.weight", "image_positions": "visual.positional_embedding",
             "pre_norm": "visual.ln_pre", "post_norm": "visual.ln_post", "tokens": "token_embedding.weight",
             "text_positions": "positional_embedding", "final_norm": "ln_final", "image_projection": "visual.proj",
             "text_projection": "text_projection"},
}


def _layers(tensors: dict[str, np.ndarray], pattern: str) -> int:
    found = {int(m.group(1)) for name in tensors if (m := re.match(re.escape(pattern).replace(r"\{\}", r"(\d+)"), name))}
    return max(found) + 1 if found else 0


def infer_shape(tensors: dict[str, np.ndarray], layout: str, path: pathlib.Path,
                config: dict | None = None, activation: str | None = None) -> ClipShape:
    names = _NAMES[layout]
    missing = [names[key] for key in ("class", "patch", "image_positions", "tokens", "text_positions",
                                      "image_projection") if names[key] not in tensors]
    if missing:
        raise UserError(f"{path} has no tensor `{missing[0]}`; it is not a ViT CLIP checkpoint in the {layout} layout")
    width = tensors[names["class"]].shape[0]
    patch = tensors[names["patch"]].shape[-1]
    grid = int(round((tensors[names["image_positions"]].shape[0] - 1) ** 0.5))
    vocab, text_width = tensors[names["tokens"]].shape
    projection = tensors[names["image_projection"]].shape
    vision, text = ((config or {}).get(key) or {} for key in ("vision_config", "text_config"))
    act = activation or vision.get("hidden_act") or "quick_gelu"
    if act not in ACTIVATIONS:
        raise UserError(f"{path} uses activation '{act}', which this CLIP does not have ({', '.join(ACTIVATIONS)})")
    return ClipShape(
        embed_dim=projection[0] if layout == HF else projection[1], image_size=grid * patch, patch_size=patch,
        vision_width=width, vision_layers=_layers(tensors, names["image_layer"]),
        vision_heads=vision.get("num_attention_heads") or width // 64,
        context_length=tensors[names["text_positions"]].shape[0], vocab_size=vocab, text_width=text_width,
        text_layers=_layers(tensors, names["text_layer"]), text_heads=text.get("num_attention_heads") or text_width // 64,
        activation=act, norm_eps=float(vision.get("layer_norm_eps") or 1e-5))


def _block(take: _Taker, layout: str, theirs: str, width: int, heads: int) -> dict[str, np.ndarray]:
    """One transformer block: q, k, v (fused in OpenAI's ``in_proj``) into our (in, 3, heads, head_dim) kernel."""
    names = _NAMES[layout]
    if layout == HF:
        attn = theirs + "self_attn."
        qkv = np.stack([take(f"{attn}{n}_proj.weight", (width, width)) for n in "qkv"])
        qkv_bias = np.stack([take(f"{attn}{n}_proj.bias", (width,)) for n in "qkv"])
    else:
        attn = theirs + "attn."
        qkv = take(attn + "in_proj_weight", (3 * width, width)).reshape(3, width, width)
        qkv_bias = take(attn + "in_proj_bias", (3 * width,)).reshape(3, width)
    head_dim = width // heads
    out = {"attn/qkv/kernel": qkv.transpose(2, 0, 1).reshape(width, 3, heads, head_dim),
           "attn/qkv/bias": qkv_bias.reshape(3, heads, head_dim),
           "attn/out/kernel": take(attn + "out_proj.weight", (width, width)).T.reshape(heads, head_dim, width),
           "attn/out/bias": take(attn + "out_proj.bias", (width,)),
           "fc1/kernel": take(f"{theirs}{names['fc1']}.weight", (4 * width, width)).T,
           "fc1/bias": take(f"{theirs}{names['fc1']}.bias", (4 * width,)),
           "fc2/kernel": take(f"{theirs}{names['fc2']}.weight", (width, 4 * width)).T,
           "fc2/bias": take(f"{theirs}{names['fc2']}.bias", (width,))}
    for norm in ("norm1", "norm2"):
        out.update(_norm(take, norm, f"{theirs}{names[norm]}", width))
    return out


def _norm(take: _Taker, ours: str, theirs: str, width: int) -> dict[str, np.ndarray]:
    return {f"{ours}/scale": take(theirs + ".weight", (width,)), f"{ours}/bias": take(theirs + ".bias", (width,))}


def convert_tensors(tensors: dict[str, np.ndarray], layout: str, shape: ClipShape, path: pathlib.Path) -> dict:
    """Our nested parameters from a checkpoint's tensors; every tensor's shape checked."""
    names, take, s = _NAMES[layout], _Taker(tensors, path), shape
    w, t, e = s.vision_width, s.text_width, s.embed_dim
    grid = s.image_size // s.patch_size
    flat = {"image/patch_embed/kernel": take(names["patch"], (w, 3, s.patch_size, s.patch_size)).transpose(2, 3, 1, 0),
            "image/class_embedding": take(names["class"], (w,)),
            "image/positions": take(names["image_positions"], (grid * grid + 1, w)),
            "text/encoder/token_embedding/embedding": take(names["tokens"], (s.vocab_size, t)),
            "text/encoder/positions": take(names["text_positions"], (s.context_length, t))}
    if layout == HF:
        flat["image/projection/kernel"] = take(names["image_projection"], (e, w)).T
        flat["text/projection/kernel"] = take(names["text_projection"], (e, t)).T
    else:
        flat["image/projection/kernel"] = take(names["image_projection"], (w, e))
        flat["text/projection/kernel"] = take(names["text_projection"], (t, e))
    for ours, norm, width in (("image/pre_norm", "pre_norm", w), ("image/post_norm", "post_norm", w),
                              ("text/encoder/final_norm", "final_norm", t)):
        flat.update(_norm(take, ours, names[norm], width))
    for tower, prefix, layers, width, heads in (("image", "image/", s.vision_layers, w, s.vision_heads),
                                                ("text", "text/encoder/", s.text_layers, t, s.text_heads)):
        for i in range(layers):
            block = _block(take, layout, names[f"{tower}_layer"].format(i), width, heads)
            flat.update({f"{prefix}blocks_{i}/{key}": value for key, value in block.items()})
    unused = sorted(name for name in tensors if name not in take.used and not _IGNORED.search(name))
    if unused:
        raise UserError(f"{path} has tensors this CLIP has no place for (`{unused[0]}` and {len(unused) - 1} more); it is "
                        "not a plain ViT CLIP (a ResNet CLIP or a model with extra heads?)")
    _check_against_module(flat, shape, path)
    return unflatten(flat)


def _check_against_module(flat: dict[str, np.ndarray], shape: ClipShape, path: pathlib.Path) -> None:
    expected = expected_shapes(shape)
    wrong = [name for name in expected if name not in flat or flat[name].shape != expected[name]]
    if wrong or len(flat) != len(expected):
        raise UserError(f"{path} does not make the CLIP its geometry describes (first mismatch: "
                        f"{wrong[0] if wrong else sorted(set(flat) - set(expected))[0]}); {CONVERT_HINT}")


def _state_dict(path: pathlib.Path) -> dict[str, np.ndarray]:
    """A ``.pt``/``.bin``'s tensors, with open_clip's ``state_dict.`` and DDP's ``module.`` prefixes dropped."""
    tensors = load_state_dict(path)
    for prefix in ("state_dict.", "module."):
        if tensors and all(name.startswith(prefix) for name in tensors):
            tensors = {name[len(prefix):]: value for name, value in tensors.items()}
    return tensors


def import_clip(source: str | pathlib.Path, tokenizer: str | pathlib.Path | None = None,
                activation: str | None = None) -> ClipWeights:
    """A published CLIP checkpoint (see the module docstring) as ``ClipWeights``. ``tokenizer`` is
    the BPE file or folder (default: the Hugging Face folder itself); ``activation`` overrides the
    MLP's (``gelu`` for open_clip's non-OpenAI ViT weights, which a state dict does not record)."""
    source = pathlib.Path(source).expanduser()
    if not source.exists():
        raise UserError(f"the CLIP checkpoint {source} does not exist; pass a Hugging Face CLIP folder or an "
                        "OpenAI/open_clip .pt")
    config = None
    if source.is_dir():
        weights = next((source / name for name in HF_WEIGHTS if (source / name).is_file()), None)
        if weights is None:
            raise UserError(f"{source} holds neither {' nor '.join(HF_WEIGHTS)}; pass a Hugging Face CLIP folder "
                            "(openai/clip-vit-base-patch16) or an OpenAI/open_clip .pt")
        if (source / "config.json").is_file():
            config = read_json_object(source / "config.json", "download the folder again")
        tensors = read_safetensors(weights) if weights.suffix == ".safetensors" else _state_dict(weights)
        tokenizer = tokenizer or source
    else:
        weights = source
        tensors = read_safetensors(source) if source.suffix == ".safetensors" else _state_dict(source)
        if tokenizer is None:
            raise UserError(f"{source} carries no tokenizer; pass its BPE file too (bpe_simple_vocab_16e6.txt.gz "
                            "from the open_clip_torch wheel, or a Hugging Face merges.txt)")
    layout = HF if _NAMES[HF]["class"] in tensors else OPENAI
    shape = infer_shape(tensors, layout, weights, config, activation)
    params = convert_tensors(tensors, layout, shape, weights)
    bpe = ClipTokenizer.from_path(tokenizer)
    if bpe.vocab_size != shape.vocab_size:
        raise UserError(f"the tokenizer {tokenizer} has {bpe.vocab_size} tokens but {weights}'s text tower embeds "
                        f"{shape.vocab_size}; pass the BPE file this CLIP was trained with")
    return ClipWeights(params, shape, bpe, file_sha256(weights), layout)


def save_clip_npz(weights: ClipWeights, path: str | pathlib.Path) -> None:
    meta = {"format": _FORMAT, "source": weights.source, "source_sha256": weights.sha256,
            "shape": dataclasses.asdict(weights.shape), "merges": [" ".join(pair) for pair in weights.tokenizer.merges]}
    save_params_npz(path, weights.params, meta)


def existing_weights(path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"the CLIP weights {path} do not exist; {CONVERT_HINT}")
    return path


def load_clip(path: str | pathlib.Path) -> ClipWeights:
    """The project's CLIP ``.npz`` (what ``tools/convert_clip.py`` writes); every parameter checked."""
    path = existing_weights(path)
    arrays, meta = read_params_npz(path, "CLIP weights", CONVERT_HINT)
    if meta.get("format") != _FORMAT:
        raise UserError(f"{path} is not a CLIP weights file of this project (format {meta.get('format')!r}); {CONVERT_HINT}")
    shape = ClipShape(**meta["shape"])
    _check_against_module(arrays, shape, path)
    tokenizer = ClipTokenizer([tuple(line.split(" ")) for line in meta["merges"]])
    return ClipWeights(unflatten(arrays), shape, tokenizer, file_sha256(path), str(meta["source"]))
