"""How the tensors of diffusers' ``LDMBertModel`` map onto our ``TextEncoder``, both ways.

The same ``Rule`` machinery as the DiT and U-Net imports (``dit_names``). LDMBert
(``diffusers/pipelines/latent_diffusion/pipeline_latent_diffusion.py``) is BART's encoder made
pre-LN: ``model.embed_tokens`` and a learned ``model.embed_positions`` table, then per layer
``self_attn_layer_norm`` -> bias-free ``q_proj``/``k_proj``/``v_proj`` of inner width
heads x head_dim -> biased ``out_proj``, and ``final_layer_norm`` -> ``fc1`` -> activation ->
``fc2``, each residual; a final ``model.layer_norm``. Our ``EncoderBlock`` is that block with
other names, so the map is one to one, plus two layout changes:
- the three projections become one kernel (embed, 3, heads, head_dim) (``layers.MultiHeadAttention``
  keeps an explicit head axis); each splits its inner width heads-major, so it is a reshape of
  the transposed weight;
- ``out_proj`` (embed, heads*head_dim) becomes (heads, head_dim, embed).
``to_logits`` (the language-model head) is not used by the pipeline and has no place here.
"""

from __future__ import annotations

import numpy as np

from diffcorrupt.checkpoint_import.dit_names import Path, Rule, _attention_out, _linear, _same
from diffcorrupt.checkpoint_import.unet_names import _norm

PREFIX = "model."  # LDMBertModel keeps its encoder in ``self.model``
UNUSED = ("to_logits.weight", "to_logits.bias")


def _qkv(path: Path, layer: str) -> Rule:
    """Bias-free q/k/v_proj (heads*head_dim, embed) each -> one slot of (embed, 3, heads, head_dim)."""
    return Rule(path + ("kernel",), tuple(f"{layer}.self_attn.{p}_proj.weight" for p in "qkv"),
                lambda a, shape: np.stack([w.T.reshape(shape[0], *shape[2:]) for w in a], axis=1),
                lambda p: tuple(p[:, i].reshape(p.shape[0], -1).T for i in range(3)))


def ldm_bert_rules(depth: int, prefix: Path = ()) -> list[Rule]:
    """Rules for every parameter of a ``TextEncoder`` of ``depth`` blocks whose params live at
    ``prefix`` in the tree (inside the U-Net: ``('cond_stage_model', 'encoder')``)."""
    rules = [_same(prefix + ("token_embedding", "embedding"), f"{PREFIX}embed_tokens.weight"),
             _same(prefix + ("positions",), f"{PREFIX}embed_positions.weight")]
    for i in range(depth):
        ours, theirs = prefix + (f"blocks_{i}",), f"{PREFIX}layers.{i}"
        rules += (_norm(ours + ("norm1",), f"{theirs}.self_attn_layer_norm")
                  + [_qkv(ours + ("attn", "qkv"), theirs)]
                  + _attention_out(ours + ("attn", "out"), f"{theirs}.self_attn.out_proj")
                  + _norm(ours + ("norm2",), f"{theirs}.final_layer_norm")
                  + _linear(ours + ("fc1",), f"{theirs}.fc1") + _linear(ours + ("fc2",), f"{theirs}.fc2"))
    return rules + _norm(prefix + ("final_norm",), f"{PREFIX}layer_norm")
