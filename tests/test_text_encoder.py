"""Byte tokenizer, caption encoder and the text embedder (null captions, CEP)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcorrupt.models.conditioning import ConditionNoise
from diffcorrupt.models.text_encoder import TextEmbedder, TextEncoder
from diffcorrupt.models.tokenizer import BOS, EOS, PAD, ByteTokenizer


def test_tokenizer_round_trip():
    tokenizer = ByteTokenizer(32)
    text = "a wörld ✓"
    ids = tokenizer.encode(text)
    n = len(text.encode("utf-8"))
    assert ids.shape == (32,) and ids.dtype == np.int32
    assert ids[0] == BOS and ids[n + 1] == EOS and (ids[n + 2:] == PAD).all()
    assert tokenizer.decode(ids) == text
    assert ids[1] == ord("a") + 3 and ByteTokenizer.vocab_size == 259
    batch = tokenizer.encode_batch(["x", text])
    assert batch.shape == (2, 32) and tokenizer.decode(batch[1]) == text


def test_tokenizer_truncates_at_a_character_boundary():
    tokenizer = ByteTokenizer(8)  # room for 6 bytes
    ids = tokenizer.encode("abcde€")  # '€' is 3 bytes: bytes 6..8 of 8, so it cannot fit
    assert tokenizer.decode(ids) == "abcde"
    assert ids[6] == EOS and ids[7] == PAD
    assert tokenizer.decode(tokenizer.encode("abc€xyz")) == "abc€"  # exactly 6 bytes kept
    assert tokenizer.decode(tokenizer.encode("a" * 100)) == "a" * 6


def test_empty_caption():
    empty = ByteTokenizer(10).empty
    np.testing.assert_array_equal(empty, [BOS, EOS] + [PAD] * 8)
    assert ByteTokenizer(10).decode(empty) == ""


def test_text_encoder_shape_and_padding_mask():
    encoder = TextEncoder(ByteTokenizer.vocab_size, max_length=32, width=32, depth=2, num_heads=2)
    texts = ["a red square", "blue circles"]  # both fit in 16 tokens
    short, long = ByteTokenizer(16).encode_batch(texts), ByteTokenizer(32).encode_batch(texts)
    variables = jax.jit(encoder.init)(jax.random.key(0), long)
    apply = jax.jit(encoder.apply)
    out_short, out_long = apply(variables, short), apply(variables, long)
    assert out_short.shape == (2, 16, 32) and out_long.shape == (2, 32, 32)
    real = short != PAD
    # More padding after a caption leaves its real positions' features unchanged.
    np.testing.assert_allclose(np.asarray(out_long[:, :16])[real], np.asarray(out_short)[real], atol=1e-5)
    # The same positions filled with real tokens are attended to: the mask is what kept them out.
    filled = np.where(long == PAD, BOS, long)
    assert not np.allclose(np.asarray(apply(variables, filled)[:, :16])[real], np.asarray(out_short)[real], atol=1e-3)


def test_text_embedder_null_rows_and_cep():
    tokenizer = ByteTokenizer(16)
    tokens = jnp.asarray(tokenizer.encode_batch(["a cat", "a dog", ""]))
    null_mask = jnp.array([True, False, False])
    embedder = TextEmbedder("small", max_length=16, noise=ConditionNoise(cep="uniform", gamma=4.0))
    variables = jax.jit(embedder.init)(jax.random.key(0), tokens, null_mask)

    @jax.jit
    def run(variables, tokens, rng):
        eval_out = embedder.apply(variables, tokens, null_mask)
        train_out = embedder.apply(variables, tokens, null_mask, train=True, rngs={"cep": rng})
        return eval_out, train_out

    (context, mask), (train_context, _) = run(variables, tokens, jax.random.key(1))
    assert context.shape == (3, 16, 256) and mask.dtype == jnp.bool_
    # The null row is encoded as the empty caption (row 2), with the empty caption's key mask.
    np.testing.assert_allclose(context[0], context[2], atol=1e-6)
    np.testing.assert_array_equal(mask[0], tokenizer.empty != PAD)
    np.testing.assert_array_equal(mask[1], tokens[1] != PAD)
    # CEP perturbs conditioned rows in training, within gamma / sqrt(d), and leaves the null row alone.
    np.testing.assert_array_equal(train_context[0], context[0])
    delta = np.asarray(train_context[1:] - context[1:])
    assert np.abs(delta).max() > 0 and np.abs(delta).max() <= 4.0 / np.sqrt(256) + 1e-6


def test_text_embedder_rejects_other_lengths():
    embedder = TextEmbedder("small", max_length=16)
    with pytest.raises(ValueError, match="16 tokens"):
        jax.eval_shape(embedder.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32), jnp.zeros((1,), bool))
