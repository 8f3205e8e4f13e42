"""A byte-level caption tokenizer: no vocabulary file to download, every string encodable.

The text encoder is trained from scratch with the diffusion model (as LDM's text models train
their BERT-shaped encoder), so no pretrained word-piece vocabulary is needed; bytes keep the
tokenizer exact and reproducible on machines without network access.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PAD, BOS, EOS = 0, 1, 2
BYTE_OFFSET = 3  # byte b is token b + 3


class ByteTokenizer:
    """UTF-8 bytes -> ids: [BOS, bytes..., EOS, PAD...], always ``max_length`` long."""

    vocab_size = 256 + BYTE_OFFSET

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
