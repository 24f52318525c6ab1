"""Byte-level tokenizer for the tiny model: token id = byte value, plus two specials.

No vocabulary file, no merges: any UTF-8 text round-trips, and a learner can read token ids
as characters. The cost is length (one token per byte), which is fine for a toy model.
"""

from __future__ import annotations

import codecs

BOS = 256           # start of a story (prepended to every prompt)
EOS = 257           # end of a story (generation stops here)
VOCAB_SIZE = 258


def encode(text: str, bos: bool = True) -> list[int]:
    ids = list(text.encode("utf-8"))
    return [BOS] + ids if bos else ids


def decode(ids) -> str:
    """Bytes back to text; specials are dropped, broken UTF-8 is replaced, never raised."""
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class StreamDecoder:
    """Turn token ids into text one at a time, holding back partial UTF-8 characters, so a
    streamed multi-byte character is never printed as two replacement marks."""

    def __init__(self):
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        if token_id >= 256:
            return ""
        return self._dec.decode(bytes([token_id]))

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
