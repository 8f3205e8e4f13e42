"""CLIP's byte-level BPE tokenizer, in pure Python, so text features need neither torch nor transformers.

The ids match OpenAI's ``clip/simple_tokenizer.py`` and Hugging Face's ``CLIPTokenizer`` exactly. OpenAI
first passes text through ``ftfy.fix_text``, which is not a dependency here and is skipped: ftfy leaves
clean text unchanged (the captions and class templates this project feeds in), so ids agree on it; text it
would change gives different ids here: mojibake is not repaired, nor are curly quotes straightened, nor
decomposed accents NFC-normalised, nor control characters removed.
"""

import gzip
import html
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import regex

from diffcorrupt.errors import UserError

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
# OpenAI keeps this many merges of the full list in bpe_simple_vocab_16e6.txt.gz (49408-word vocabulary).
_MAX_MERGES = 49152 - 256 - 2
_HF_MERGES, _HF_VOCAB, _OPENAI_GZ = "merges.txt", "vocab.json", "bpe_simple_vocab_16e6.txt.gz"
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable character, so BPE works on strings without whitespace or controls."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


class ClipTokenizer:
    """Text to CLIP token ids; built from the merge list alone, since the vocabulary follows from it."""

    def __init__(self, merges: Sequence[Sequence[str]]):
        self._merges = [(str(a), str(b)) for a, b in merges]
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in self._merges] + [SOT, EOT]
        self._vocab = {token: i for i, token in enumerate(vocab)}
        self._ranks = {pair: rank for rank, pair in enumerate(self._merges)}
        # Special tokens written in the text encode as themselves, as in OpenAI.
        self._cache = {SOT: [self.sot_id], EOT: [self.eot_id]}

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "ClipTokenizer":
        """Read the merges from a Hugging Face CLIP folder, its merges.txt, or OpenAI's gzipped BPE file."""
        path = Path(path)
        if path.is_dir():
            if (path / _HF_MERGES).is_file():
                tokenizer = cls(_read_merges(path / _HF_MERGES))
                if (path / _HF_VOCAB).is_file() and _read_json(path / _HF_VOCAB) != tokenizer._vocab:
                    raise UserError(f"{path / _HF_VOCAB} does not match the vocabulary built from {_HF_MERGES} "
                                    "beside it; pass a folder whose two files come from the same CLIP tokenizer.")
                return tokenizer
            if (path / _OPENAI_GZ).is_file():
                return cls(_read_merges(path / _OPENAI_GZ))
            raise UserError(f"{path} holds neither {_HF_MERGES} nor {_OPENAI_GZ}; pass a Hugging Face CLIP "
                            f"folder, a {_HF_MERGES} file, or OpenAI's {_OPENAI_GZ}.")
        if path.is_file():
            return cls(_read_merges(path))
        raise UserError(f"CLIP tokenizer path {path} does not exist; pass a Hugging Face CLIP folder, "
                        f"a {_HF_MERGES} file, or OpenAI's {_OPENAI_GZ}.")

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The merges in rank order: all a weights file needs to rebuild this tokenizer."""
        return list(self._merges)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def sot_id(self) -> int:
        return self._vocab[SOT]

    @property
    def eot_id(self) -> int:
        return self._vocab[EOT]

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT/EOT, cleaned as OpenAI does (except ftfy, see module docstring)."""
        text = regex.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip().lower()
        return [i for word in _PATTERN.findall(text) for i in self._word_ids(word)]

    def encode_batch(self, texts: str | Sequence[str], context_length: int = 77) -> np.ndarray:
        """[SOT, ids..., EOT] rows, zero-padded; too long rows end in EOT, as OpenAI's tokenize(truncate=True)."""
        texts = [texts] if isinstance(texts, str) else texts
        out = np.zeros((len(texts), context_length), np.int32)
        for row, text in zip(out, texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > context_length:
                ids = ids[:context_length - 1] + [self.eot_id]
            row[:len(ids)] = ids
        return out

    def _word_ids(self, word: str) -> list[int]:
        """Apply the merges to one pre-split word by ascending rank, as OpenAI's bpe()."""
        if word not in self._cache:
            chars = [bytes_to_unicode()[b] for b in word.encode("utf-8")]
            parts = chars[:-1] + [chars[-1] + "</w>"]
            while len(parts) > 1:
                pair = min(zip(parts, parts[1:]), key=lambda p: self._ranks.get(p, float("inf")))
                if pair not in self._ranks:
                    break
                merged, i = [], 0
                while i < len(parts):
                    if tuple(parts[i:i + 2]) == pair:
                        merged.append(pair[0] + pair[1])
                        i += 2
                    else:
                        merged.append(parts[i])
                        i += 1
                parts = merged
            self._cache[word] = [self._vocab[p] for p in parts]
        return self._cache[word]


def _read_merges(path: Path) -> list[tuple[str, str]]:
    """Merge pairs after the header line; OpenAI's file lists more merges than CLIP uses, hence the cap."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines = raw.decode("utf-8").strip().split("\n")[1:_MAX_MERGES + 1]
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise UserError(f"Cannot read CLIP BPE merges from {path} ({error}); pass an intact {_HF_MERGES} "
                        f"or {_OPENAI_GZ}.") from error
    pairs = [tuple(line.split()) for line in lines]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise UserError(f"{path} is not a CLIP BPE merges file (a header line, then one 'a b' pair per "
                        f"line); pass an intact {_HF_MERGES} or {_OPENAI_GZ}.")
    return pairs


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"Cannot read {path} as JSON ({error}); pass a Hugging Face CLIP folder with an intact "
                        f"{_HF_VOCAB}, or remove it.") from error
