"""CLIP BPE tokenizer: hand-worked ids on a small merge list, the encode_batch layout, from_path's inputs and
errors, and parity with Hugging Face's CLIPTokenizer (synthetic vocabulary, and the real one when
DIFFCORRUPT_CLIP_BPE names OpenAI's bpe_simple_vocab_16e6.txt.gz)."""

import gzip
import json
import os

import numpy as np
import pytest

from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.clip_tokenizer import ClipTokenizer, bytes_to_unicode

MERGES = [
    ("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o</w>"),  # 512..515: hello</w> = 515
    ("c", "a"), ("ca", "t</w>"),  # 516, 517: cat</w> = 517
    ("'", "s</w>"),  # 518
    ("t", "o"), ("to", "p</w>"),  # 519, 520: top</w> = 520
    ("s", "h"), ("i", "r"), ("ir", "t</w>"), ("sh", "irt</w>"),  # 521..524: shirt</w> = 524
    ("e", "l"),  # 525: ranked after ("l", "l"), so "cello" keeps e and merges ll
]
SOT, EOT = 526, 527  # 256 bytes + 256 bytes</w> + 14 merges, then the two special tokens


def ch(c: str) -> int:
    """Id of a printable ASCII character as a non-final symbol: bytes_to_unicode lists '!'..'~' first."""
    return ord(c) - 33


def end(c: str) -> int:
    """Id of the same character as a word's last symbol (with </w>)."""
    return 256 + ch(c)


def openai_vocab(merges) -> dict[str, int]:
    """The vocabulary as OpenAI's simple_tokenizer builds it, for a vocab.json beside merges.txt."""
    symbols = list(bytes_to_unicode().values())
    words = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {w: i for i, w in enumerate(words)}


def write_hf_folder(folder, merges, vocab=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    (folder / "vocab.json").write_text(json.dumps(vocab or openai_vocab(merges), ensure_ascii=False), encoding="utf-8")
    return folder


def write_openai_gz(path, merges):
    """OpenAI's layout: a quoted-name header line, one merge a line, a final newline."""
    text = '"bpe_simple_vocab_16e6.txt#version: 0.2\n' + "".join(f"{a} {b}\n" for a, b in merges)
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


@pytest.fixture
def tok():
    return ClipTokenizer(MERGES)


def test_bytes_to_unicode_is_printable_and_reversible():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "\u0120"  # GPT-2's Ġ for a space
    assert not any(c.isspace() or not c.isprintable() for c in table.values())


@pytest.mark.parametrize("text, ids", [
    ("hello", [515]),  # fully merged
    ("help", [512, ch("l"), end("p")]),  # partly merged: h+e only
    ("cello", [ch("c"), ch("e"), 513, end("o")]),  # lowest rank first (l+l), not left to right (e+l)
    ("cat's", [517, 518]),  # apostrophe contraction split off and merged
    ("it's", [ch("i"), end("t"), 518]),
    ("don't", [ch("d"), ch("o"), end("n"), ch("'"), end("t")]),
    ("hello!!", [515, ch("!"), end("!")]),  # a punctuation run is one word
    ("...?", [ch("."), ch("."), ch("."), end("?")]),
    ("2024", [end("2"), end("0"), end("2"), end("4")]),  # digits one by one
    ("cat5", [517, end("5")]),
    ("T-shirt/top", [end("t"), end("-"), 524, end("/"), 520]),
    ("cat &amp; hello", [517, end("&"), 515]),  # html entities unescaped
    ("&amp;lt;", [end("<")]),  # ... twice
    ("&quot;hello&quot;", [end('"'), 515, end('"')]),
    ("  hello \n\t cat  ", [515, 517]),  # whitespace collapsed
    ("HELLO Cat IT'S", [515, 517, ch("i"), end("t"), 518]),  # lower-cased, contraction included
    ("café", [516, ch("f"), 127, 256 + 102]),  # é = bytes C3 A9, printed as Ã (127) and © (102)
    ("ā", [128, 256 + 223]),  # bytes C4 81; 0x81 is not printable, so it maps past the printable bytes
    ("hello<|endoftext|>", [515, EOT]),  # special tokens in the text encode as themselves, as OpenAI's
    ("", []),
])
def test_encode_hand_worked_ids(tok, text, ids):
    assert tok.encode(text) == ids


def test_special_ids_and_vocab_size(tok):
    assert (tok.sot_id, tok.eot_id, tok.vocab_size) == (SOT, EOT, 528)


def test_encode_batch_layout(tok):
    out = tok.encode_batch(["hello", "cat's", ""], context_length=6)
    assert out.dtype == np.int32 and out.shape == (3, 6)
    np.testing.assert_array_equal(out, [[SOT, 515, EOT, 0, 0, 0], [SOT, 517, 518, EOT, 0, 0], [SOT, EOT, 0, 0, 0, 0]])
    assert tok.encode_batch(["hello"]).shape == (1, 77)
    np.testing.assert_array_equal(tok.encode_batch("hello", context_length=3), [[SOT, 515, EOT]])


def test_encode_batch_truncates_to_end_in_eot(tok):
    np.testing.assert_array_equal(tok.encode_batch(["cat hello top"], context_length=3), [[SOT, 517, EOT]])
    np.testing.assert_array_equal(tok.encode_batch(["hello " * 10], context_length=5), [[SOT, 515, 515, 515, EOT]])


def test_merges_rebuild_the_tokenizer(tok):
    assert tok.merges == MERGES
    tok.merges.clear()  # a copy: the tokenizer is unchanged
    stored = np.array(tok.merges)  # as a weights file keeps them: an (n, 2) array of strings
    rebuilt = ClipTokenizer(stored)
    assert rebuilt.merges == MERGES and all(type(s) is str for pair in rebuilt.merges for s in pair)
    text = "a T-shirt/top, hello cat's café 2024"
    assert rebuilt.encode(text) == tok.encode(text)


def test_from_path_reads_every_layout(tmp_path, tok):
    folder = write_hf_folder(tmp_path / "hf", MERGES)
    (tmp_path / "openai").mkdir()
    gz = write_openai_gz(tmp_path / "openai" / "bpe_simple_vocab_16e6.txt.gz", MERGES)
    text = "Hello, cat's T-shirt/top!"
    for path in (folder, str(folder / "merges.txt"), gz, gz.parent):
        loaded = ClipTokenizer.from_path(path)
        assert loaded.merges == MERGES and loaded.encode(text) == tok.encode(text), path
    (folder / "vocab.json").unlink()  # vocab.json is optional
    assert ClipTokenizer.from_path(folder).merges == MERGES


def test_from_path_keeps_openais_merge_count(tmp_path):
    """OpenAI's file lists more merges than CLIP uses; only the first 48894 count, giving 49408 tokens."""
    merges = [(f"a{i}", f"b{i}") for i in range(48894 + 5)]
    loaded = ClipTokenizer.from_path(write_openai_gz(tmp_path / "bpe.txt.gz", merges))
    assert loaded.merges == merges[:48894]
    assert (loaded.vocab_size, loaded.sot_id, loaded.eot_id) == (49408, 49406, 49407)


def test_from_path_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ClipTokenizer.from_path(tmp_path / "missing")
    with pytest.raises(UserError, match="holds neither merges.txt nor bpe_simple_vocab_16e6.txt.gz"):
        ClipTokenizer.from_path(tmp_path)

    vocab = openai_vocab(MERGES)
    vocab["he"], vocab["ll"] = vocab["ll"], vocab["he"]
    with pytest.raises(UserError, match="vocab.json does not match"):
        ClipTokenizer.from_path(write_hf_folder(tmp_path / "hf", MERGES, vocab))

    gz = write_openai_gz(tmp_path / "bpe.txt.gz", MERGES)
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(UserError, match="Cannot read CLIP BPE merges"):
        ClipTokenizer.from_path(gz)

    bad = tmp_path / "merges.txt"
    bad.write_text("#version: 0.2\nh e\nnot-a-pair\n")
    with pytest.raises(UserError, match="is not a CLIP BPE merges file"):
        ClipTokenizer.from_path(bad)


# Without ftfy (not installed here or in CI), transformers 4.57's CLIPTokenizer cleans text with BERT's
# BasicTokenizer instead of OpenAI's ftfy + html.unescape: it does not unescape html entities, drops control
# characters, puts spaces around CJK ideographs and NFC-normalises. The strings below avoid all four, so both
# cleanings give the same text; html entities are checked by hand above.
PARITY_TEXTS = [
    "a photo of a cat.", "hello world", "A Photo Of The HELLO", "T-shirt/top", "Ankle boot", "it's a cat's toy",
    "don't we'll they're I'm you've he'd", "2024 was 13.5% better", "3.14159", "hello!!! what?!",
    "(cat) [hello] {top}", "café crème brûlée", "naïve façade", "salt & pepper", "  lots   of\tspace\n here ",
    "", "email@example.com #tag", "shirt-top/cat_hello", "über straße", "αβγ ωmega", "hello<|endoftext|>cat",
]


def hf_parity(hf_tokenizer, tokenizer, texts):
    expected = hf_tokenizer(texts)["input_ids"]
    got = [[tokenizer.sot_id, *tokenizer.encode(t), tokenizer.eot_id] for t in texts]
    assert got == expected


def test_parity_with_transformers_synthetic_vocab(tmp_path, tok):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (parity check only)")
    folder = write_hf_folder(tmp_path / "hf", MERGES)
    hf = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    hf_parity(hf, tok, PARITY_TEXTS)


REAL_BPE = os.environ.get("DIFFCORRUPT_CLIP_BPE")
needs_real_bpe = pytest.mark.skipif(
    not REAL_BPE, reason="set DIFFCORRUPT_CLIP_BPE to OpenAI's bpe_simple_vocab_16e6.txt.gz (it ships in the "
    "open_clip_torch wheel as open_clip/bpe_simple_vocab_16e6.txt.gz) to check the real vocabulary")


@needs_real_bpe
def test_real_vocabulary_known_ids():
    real = ClipTokenizer.from_path(REAL_BPE)
    assert (real.vocab_size, real.sot_id, real.eot_id) == (49408, 49406, 49407)
    assert real.encode("a photo of a cat.") == [320, 1125, 539, 320, 2368, 269]


@needs_real_bpe
def test_parity_with_transformers_real_vocab(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (parity check only)")
    with gzip.open(REAL_BPE, "rt", encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")[1:48894 + 1]]  # OpenAI's slice
    folder = write_hf_folder(tmp_path / "hf", merges)
    hf = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    real = ClipTokenizer.from_path(REAL_BPE)
    captions = ["a photo of a {}.".format(c) for c in ("T-shirt/top", "trouser", "pullover", "sandal", "ankle boot")]
    hf_parity(hf, real, PARITY_TEXTS + captions + ["An astronaut riding a horse on Mars, 4k, trending on artstation"])

    long_text = " ".join(["a very long caption about a small red bicycle"] * 20)
    expected = hf([long_text], truncation=True, max_length=77)["input_ids"][0]
    assert len(expected) == 77 and real.encode_batch([long_text])[0].tolist() == expected
