"""Caption tokenizers: byte-level (the default) and BERT's WordPiece (for imported text encoders).

The text encoder is trained from scratch with the diffusion model (as LDM's text models train
their BERT-shaped encoder), so no pretrained word-piece vocabulary is needed; bytes keep the
tokenizer exact and reproducible on machines without network access. A released model whose
encoder was trained on WordPiece ids (diffusers' ``LDMTextToImagePipeline``: ``tokenizer/vocab.txt``)
must be fed the same ids, so ``WordPieceTokenizer`` computes what BERT's tokenizer computes from
that file. Both share one interface: ``encode``, ``encode_batch``, ``decode``, ``empty``,
``vocab_size``, ``pad_id``, ``max_length``.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from pathlib import Path
from typing import Sequence, Union

import ml_collections
import numpy as np

from diffcorrupt.errors import ConfigError, UserError

PAD, BOS, EOS = 0, 1, 2
BYTE_OFFSET = 3  # byte b is token b + 3


class ByteTokenizer:
    """UTF-8 bytes -> ids: [BOS, bytes..., EOS, PAD...], always ``max_length`` long."""

    vocab_size = 256 + BYTE_OFFSET
    pad_id = PAD

    def __init__(self, max_length: int = 77):
        if max_length < 2:
            raise ValueError(f"max_length must leave room for BOS and EOS, got {max_length}")
        self.max_length = max_length

    def encode(self, text: str) -> np.ndarray:
        """(max_length,) int32; text longer than max_length - 2 bytes is cut at a character boundary,
        so that decoding a truncated caption never yields a broken character."""
        data = text.encode("utf-8")
        budget = self.max_length - 2
        if len(data) > budget:
            # Drop UTF-8 continuation bytes (0b10xxxxxx) and the lead byte of the cut character.
            cut = budget
            while cut > 0 and (data[cut] & 0xC0) == 0x80:
                cut -= 1
            data = data[:cut]
        ids = np.full(self.max_length, PAD, np.int32)
        ids[0] = BOS
        ids[1:1 + len(data)] = np.frombuffer(data, np.uint8).astype(np.int32) + BYTE_OFFSET
        ids[1 + len(data)] = EOS
        return ids

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), max_length) int32."""
        return np.stack([self.encode(text) for text in texts]) if texts else np.zeros((0, self.max_length), np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of the byte tokens, up to the first EOS; special tokens are skipped."""
        data = bytearray()
        for token in np.asarray(ids).tolist():
            if token == EOS:
                break
            if token >= BYTE_OFFSET:
                data.append(token - BYTE_OFFSET)
        return data.decode("utf-8", errors="replace")

    @property
    def empty(self) -> np.ndarray:
        """The empty caption: the null condition of classifier-free guidance for text."""
        return self.encode("")


# The CJK Unified Ideograph blocks BERT splits into single-character words (Chinese and Japanese
# kanji; not Hangul or kana, which are written with spaces or as syllables).
_CJK_BLOCKS = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
MAX_WORD_CHARS = 100  # longer words become [UNK] whole, as BERT's WordPiece does
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
    """BERT counts every non-alphanumeric printable ASCII character ('$', '^', '`', ...) as
    punctuation, besides Unicode's P* categories."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_BLOCKS)


class WordPieceTokenizer:
    """BERT's tokenizer over a ``vocab.txt`` (one token per line, id = line number):
    ``[CLS] pieces... [SEP] [PAD]...``, always ``max_length`` long; pieces past ``max_length - 2``
    are cut, and [SEP] is kept.

    Basic tokenisation first: control characters dropped, whitespace split, CJK ideographs and
    punctuation made words of their own, lower-casing and accent stripping when ``do_lower_case``
    (``strip_accents`` None follows it, as in BERT). Then each word is split greedily into the
    longest vocabulary pieces from its start, continuations prefixed '##'; a word with a part no
    piece matches, or of over 100 characters, becomes [UNK] whole.
    """

    def __init__(self, vocab_file: str | Path, max_length: int = 77, do_lower_case: bool = True,
                 strip_accents: bool | None = None):
        if max_length < 2:
            raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
        self.max_length = max_length
        self.do_lower_case = do_lower_case
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        lines = Path(vocab_file).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the newline that ends the last line
        self.tokens = lines
        self.vocab = {token: index for index, token in enumerate(lines)}  # a repeated line: the last id, as BERT
        missing = [token for token in SPECIAL_TOKENS if token not in self.vocab]
        if missing:
            raise UserError(f"the vocabulary {vocab_file} has no {missing[0]} token; give a BERT vocab.txt")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (self.vocab[token] for token in SPECIAL_TOKENS)

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table the ids index: one per line of the file."""
        return len(self.tokens)

    def words(self, text: str) -> list[str]:
        """BERT's basic tokenisation of ``text`` into words and punctuation marks."""
        spaced = []
        for char in text:
            if char in "\x00\ufffd" or _is_control(char):
                continue
            if _is_cjk(char):
                spaced.append(f" {char} ")
            else:
                spaced.append(" " if _is_whitespace(char) else char)
        words = []
        for word in "".join(spaced).split():
            if self.do_lower_case:
                word = word.lower()
            if self.strip_accents:
                word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
            current = ""
            for char in word:
                if _is_punctuation(char):
                    words += [current, char] if current else [char]
                    current = ""
                else:
                    current += char
            if current:
                words.append(current)
        return words

    def pieces(self, word: str) -> list[int]:
        """Greedy longest-match-first WordPiece ids of one word."""
        if len(word) > MAX_WORD_CHARS:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.unk_id]
        return ids

    def encode(self, text: str) -> np.ndarray:
        """(max_length,) int32."""
        body = [piece for word in self.words(text) for piece in self.pieces(word)][:self.max_length - 2]
        ids = np.full(self.max_length, self.pad_id, np.int32)
        ids[:len(body) + 2] = [self.cls_id, *body, self.sep_id]
        return ids

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), max_length) int32."""
        return np.stack([self.encode(text) for text in texts]) if texts else np.zeros((0, self.max_length), np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The pieces up to the first [SEP], '##' continuations joined to their word, words spaced
        (so punctuation comes back spaced and case and accents as normalised)."""
        words: list[str] = []
        for token in np.asarray(ids).tolist():
            if token == self.sep_id:
                break
            if token in (self.cls_id, self.pad_id):
                continue
            piece = self.tokens[token]
            if piece.startswith("##") and words:
                words[-1] += piece[2:]
            else:
                words.append(piece)
        return " ".join(words)

    @property
    def empty(self) -> np.ndarray:
        """The empty caption, ``[CLS] [SEP] [PAD]...``: the null condition, as the LDM pipeline's ""."""
        return self.encode("")


Tokenizer = Union[ByteTokenizer, WordPieceTokenizer]


@functools.lru_cache(maxsize=8)
def make_tokenizer(spec: str, max_length: int) -> Tokenizer:
    """The tokenizer of config value ``spec``: 'bytes', or the path of a WordPiece ``vocab.txt``
    (with, optionally, the Hugging Face ``tokenizer_config.json`` beside it, whose
    ``do_lower_case``/``strip_accents`` are honoured). Cached: the models ask for it at every trace."""
    if spec == "bytes":
        return ByteTokenizer(max_length)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"config key 'model.tokenizer' is '{spec}', which is neither 'bytes' nor an existing "
                          "vocab.txt file; give the path of the WordPiece vocabulary the model was trained with")
    settings_path = path.with_name("tokenizer_config.json")
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    if settings.get("tokenize_chinese_chars", True) is not True:
        raise UserError(f"{settings_path} turns off tokenize_chinese_chars; only BERT's default (true) is computed")
    return WordPieceTokenizer(path, max_length, bool(settings.get("do_lower_case", True)), settings.get("strip_accents"))


def tokenizer_from_config(model_config: ml_collections.ConfigDict) -> Tokenizer:
    """The tokenizer of a run's ``config.model`` (keys ``tokenizer`` and ``text_max_length``)."""
    return make_tokenizer(model_config.tokenizer, model_config.text_max_length)
