"""How the tensors of released DiT checkpoints map onto our DiT's Flax parameters, both ways.

Two layouts hold the same network (diffusers' ``scripts/convert_dit_to_diffusers.py`` renames one
into the other): the original facebookresearch ``.pt`` state dict and diffusers'
``DiTTransformer2DModel``. Each ``Rule`` names one of our parameters, the source tensors it is
made of, and the layout change in both directions. The reverse direction is not only for tests:
applied to abstract shapes it gives the shape every source tensor must have, so a checkpoint of
another size is refused by the name of its first wrong tensor rather than by a reshape error.

Layouts (PyTorch stores a linear weight as (out, in), convolutions as OIHW):
- our Dense kernels are (in, out): the transpose;
- the patch embedding is a Flax conv kernel (kh, kw, in, out) = OIHW transposed (2, 3, 1, 0);
- attention keeps an explicit head axis (``layers.MultiHeadAttention``): the fused qkv kernel is
  (embed, 3, heads, head_dim). timm's ``Attention`` reshapes the 3*hidden outputs of ``qkv`` to
  (3, heads, head_dim), and diffusers' ``to_q/to_k/to_v`` each reshape hidden outputs to (heads,
  head_dim), so both are plain reshapes of the transposed weight. The output projection's kernel
  is (heads, head_dim, embed), its input being the heads-major concatenation in both sources.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from diffcorrupt.errors import UserError

Tensors = dict[str, np.ndarray]
Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One of our parameters (``path`` in the params tree) and the source tensors it is made of."""

    path: Path
    names: tuple[str, ...]
    to_flax: Callable[[Sequence[np.ndarray], tuple[int, ...]], np.ndarray]  # (sources, our shape) -> ours
    to_source: Callable[[Any], tuple[Any, ...]]  # ours -> sources; numpy or traced by jax.eval_shape


def _same(path: Path, name: str) -> Rule:
    return Rule(path, (name,), lambda a, shape: a[0], lambda p: (p,))


def _linear(path: Path, name: str) -> list[Rule]:
    """nn.Linear (out, in) -> Dense kernel (in, out), bias unchanged."""
    return [Rule(path + ("kernel",), (f"{name}.weight",), lambda a, shape: a[0].T, lambda p: (p.T,)),
            _same(path + ("bias",), f"{name}.bias")]


def _patch_embed(path: Path, name: str) -> list[Rule]:
    """Conv2d OIHW -> Flax conv HWIO."""
    return [Rule(path + ("kernel",), (f"{name}.weight",), lambda a, shape: a[0].transpose(2, 3, 1, 0),
                 lambda p: (p.transpose(3, 2, 0, 1),)),
            _same(path + ("bias",), f"{name}.bias")]


def _fused_qkv(path: Path, name: str) -> list[Rule]:
    """timm's qkv (3*heads*head_dim, embed) -> kernel (embed, 3, heads, head_dim)."""
    return [Rule(path + ("kernel",), (f"{name}.weight",), lambda a, shape: a[0].T.reshape(shape),
                 lambda p: (p.reshape(p.shape[0], -1).T,)),
            Rule(path + ("bias",), (f"{name}.bias",), lambda a, shape: a[0].reshape(shape),
                 lambda p: (p.reshape(-1),))]


def _split_qkv(path: Path, prefix: str) -> list[Rule]:
    """diffusers' to_q/to_k/to_v (heads*head_dim, embed) each -> one slot of (embed, 3, heads, head_dim)."""
    names = tuple(f"{prefix}.to_{part}" for part in "qkv")
    return [
        Rule(path + ("kernel",), tuple(f"{n}.weight" for n in names),
             lambda a, shape: np.stack([w.T.reshape(shape[0], *shape[2:]) for w in a], axis=1),
             lambda p: tuple(p[:, i].reshape(p.shape[0], -1).T for i in range(3))),
        Rule(path + ("bias",), tuple(f"{n}.bias" for n in names),
             lambda a, shape: np.stack([b.reshape(shape[1:]) for b in a]),
             lambda p: tuple(p[i].reshape(-1) for i in range(3))),
    ]


def _attention_out(path: Path, name: str) -> list[Rule]:
    """Output projection (embed, heads*head_dim) -> kernel (heads, head_dim, embed)."""
    return [Rule(path + ("kernel",), (f"{name}.weight",), lambda a, shape: a[0].T.reshape(shape),
                 lambda p: (p.reshape(-1, p.shape[-1]).T,)),
            _same(path + ("bias",), f"{name}.bias")]


def _block(i: int, attention: list[Rule], out: str, fc1: str, fc2: str, modulation: str) -> list[Rule]:
    block = (f"blocks_{i}",)
    return (_linear(block + ("adaLN_modulation",), modulation) + attention
            + _attention_out(block + ("attn", "out"), out)
            + _linear(block + ("mlp", "fc1"), fc1) + _linear(block + ("mlp", "fc2"), fc2))


def facebook_rules(depth: int) -> list[Rule]:
    """The original state dict (facebookresearch/DiT ``models.py``); ``pos_embed`` is a fixed
    buffer there and computed here, so it has no rule (the reader checks it instead)."""
    rules = (_patch_embed(("x_embedder",), "x_embedder.proj")
             + _linear(("t_embedder", "fc1"), "t_embedder.mlp.0") + _linear(("t_embedder", "fc2"), "t_embedder.mlp.2")
             + [_same(("y_embedder", "table", "embedding"), "y_embedder.embedding_table.weight")])
    for i in range(depth):
        rules += _block(i, _fused_qkv((f"blocks_{i}", "attn", "qkv"), f"blocks.{i}.attn.qkv"), f"blocks.{i}.attn.proj",
                        f"blocks.{i}.mlp.fc1", f"blocks.{i}.mlp.fc2", f"blocks.{i}.adaLN_modulation.1")
    return (rules + _linear(("final_layer", "adaLN_modulation"), "final_layer.adaLN_modulation.1")
            + _linear(("final_layer", "linear"), "final_layer.linear"))


def diffusers_embedder_prefix(i: int) -> str:
    """Where block ``i`` of a ``DiTTransformer2DModel`` keeps its own copy of the timestep and
    class embedders; the model's forward uses block 0's for the final layer, so it is the one read."""
    return f"transformer_blocks.{i}.norm1.emb"


def diffusers_rules(depth: int) -> list[Rule]:
    """``DiTTransformer2DModel`` (diffusers ``models/transformers/dit_transformer_2d.py``)."""
    emb = diffusers_embedder_prefix(0)
    rules = (_patch_embed(("x_embedder",), "pos_embed.proj")
             + _linear(("t_embedder", "fc1"), f"{emb}.timestep_embedder.linear_1")
             + _linear(("t_embedder", "fc2"), f"{emb}.timestep_embedder.linear_2")
             + [_same(("y_embedder", "table", "embedding"), f"{emb}.class_embedder.embedding_table.weight")])
    for i in range(depth):
        block = f"transformer_blocks.{i}"
        rules += _block(i, _split_qkv((f"blocks_{i}", "attn", "qkv"), f"{block}.attn1"), f"{block}.attn1.to_out.0",
                        f"{block}.ff.net.0.proj", f"{block}.ff.net.2", f"{block}.norm1.linear")
    return (rules + _linear(("final_layer", "adaLN_modulation"), "proj_out_1")
            + _linear(("final_layer", "linear"), "proj_out_2"))


def _get(tree: Any, path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: Path, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def expected_source_shapes(rules: Sequence[Rule], abstract_params: Any) -> dict[str, tuple[int, ...]]:
    """The shape each source tensor must have for the model whose (unboxed) abstract params are given."""
    shapes = {}
    for rule in rules:
        leaf = _get(abstract_params, rule.path)
        outs = jax.eval_shape(rule.to_source, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
        shapes.update({name: tuple(out.shape) for name, out in zip(rule.names, outs)})
    return shapes


def first_misfit(tensors: Tensors, expected: dict[str, tuple[int, ...]]) -> str:
    """'tensor NAME is missing / has shape [..] where [..] is needed' for the first tensor, in model order, that
    ``expected`` (name -> shape) does not find as it should be; '' when all fit."""
    for name, shape in expected.items():
        got = tensors.get(name)
        if got is None or tuple(got.shape) != shape:
            found = "is missing" if got is None else f"has shape {list(got.shape)}"
            return f"tensor '{name}' {found} where {list(shape)} is needed"
    return ""


def to_flax(tensors: Tensors, rules: Sequence[Rule], abstract_params: Any, *, where: str, model_name: str) -> dict:
    """Our params tree (float32 numpy) from source ``tensors``; the first missing or misshapen
    tensor, in model order, is named in a ``UserError`` with both shapes."""
    misfit = first_misfit(tensors, expected_source_shapes(rules, abstract_params))
    if misfit:
        raise UserError(f"{where} does not fit model '{model_name}': {misfit}; pass the --model the checkpoint was "
                        "trained as")
    params: dict = {}
    for rule in rules:
        shape = tuple(_get(abstract_params, rule.path).shape)
        value = np.ascontiguousarray(rule.to_flax([np.asarray(tensors[n], np.float32) for n in rule.names], shape))
        assert value.shape == shape, (rule.path, value.shape, shape)  # the rules' own consistency
        _set(params, rule.path, value)
    return params


def to_source(params: Any, rules: Sequence[Rule]) -> Tensors:
    """The inverse: source tensors (numpy) from our params tree."""
    tensors: Tensors = {}
    for rule in rules:
        outs = rule.to_source(np.asarray(_get(params, rule.path)))
        tensors.update({name: np.ascontiguousarray(out) for name, out in zip(rule.names, outs)})
    return tensors
