"""Token counts for estimates (compression savings, the ``x-ferrule-tokens-*`` headers, the
ledger), offline. Anthropic's ``usage`` stays the truth for what is billed.

The tokenizer is Anthropic's legacy Claude tokenizer: the ``tokenizer.json`` that the
MIT-licensed ``anthropic`` Python SDK shipped up to 0.38.0, vendored unmodified as
``data/claude-legacy-tokenizer.json`` (provenance and licence beside it). It is a byte-level BPE
of 65,000 tokens with NFKC normalization and GPT-2's pre-tokenizing pattern. It is run here with
``tiktoken``'s BPE engine, from ranks built from its merges (token = the merge that made it), which
is ~5x faster than the ``tokenizers`` library and gives the same counts (checked in
``tests/test_compress_tokens.py`` and on all 2,467 texts of the public corpora). NOTE: the literal text of
its special tokens (``<EOT>`` and friends) is counted as ordinary text.

How close to real counts: Claude 3 and later use a newer tokenizer that is not public, so this
is an estimate (see ``benches/RESULTS.md``, "Compression", for the measured comparison with the
simulated upstream's one-token-per-4-bytes estimate). Savings are reported as differences of
counts made with the same tokenizer, which is what the ratios in the headers and the ledger need.

Counting costs ~10 MB/s of text, so counts are memoized per text (agents resend the same blocks
every turn: only new blocks are tokenized) and should be read off the event loop
(``asyncio.to_thread``); tiktoken releases the GIL while it encodes. Without ``tiktoken``
installed, :data:`NAME` is ``"estimate"`` and counts are one token per 4 UTF-8 bytes.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from importlib import resources
from typing import Any, Protocol

import orjson

__all__ = ["NAME", "count", "count_texts", "load"]

DATA_FILE = "data/claude-legacy-tokenizer.json"
# GPT-2's pattern, which the tokenizer's ByteLevel pre-tokenizer applies.
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MEMO_CHARS = 16_000_000  # characters of text whose counts are remembered (LRU)
MEMO_MIN_CHARS = 64  # shorter texts are counted again each time (cheaper than the memo)


class _Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable stand-ins for the 256 byte values."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    table = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _ranks() -> dict[bytes, int]:
    raw = resources.files("ferrule").joinpath(DATA_FILE).read_bytes()
    merges = orjson.loads(raw)["model"]["merges"]
    alphabet = _bytes_to_unicode()
    ranks = {bytes([b]): b for b in range(256)}
    for i, merge in enumerate(merges):
        left, right = merge.split(" ")
        token = bytes(alphabet[c] for c in left) + bytes(alphabet[c] for c in right)
        ranks.setdefault(token, 256 + i)
    return ranks


_lock = threading.Lock()
_encoder: _Encoder | None = None
_memo: OrderedDict[str, int] = OrderedDict()
_memo_chars = 0


def _load_encoder() -> _Encoder | None:
    try:
        import tiktoken
    except ImportError:
        return None
    return tiktoken.Encoding(
        "claude-legacy", pat_str=PATTERN, mergeable_ranks=_ranks(), special_tokens={}
    )


def load() -> str:
    """Load the tokenizer now (it loads on first use otherwise; ~0.2 s); returns :data:`NAME`."""
    global _encoder, NAME
    with _lock:
        if _encoder is None:
            _encoder = _load_encoder()
            if _encoder is None:
                NAME = "estimate"
    return NAME


NAME = "claude-legacy"  # "estimate" once load() found no tiktoken


def _count_now(text: str) -> int:
    if _encoder is None:
        load()
    if _encoder is None:
        return (len(text.encode()) + 3) // 4
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return len(_encoder.encode_ordinary(text))


def count(text: str) -> int:
    """Tokens in ``text`` (memoized)."""
    global _memo_chars
    if len(text) < MEMO_MIN_CHARS:
        return _count_now(text)
    with _lock:
        hit = _memo.get(text)
        if hit is not None:
            _memo.move_to_end(text)
            return hit
    n = _count_now(text)
    with _lock:
        if text not in _memo:
            _memo[text] = n
            _memo_chars += len(text)
            while _memo_chars > MEMO_CHARS and _memo:
                old, _ = _memo.popitem(last=False)
                _memo_chars -= len(old)
    return n


def count_texts(units: Iterable[str | bytes | Any]) -> int:
    """Sum of :func:`count` over ``units``: strings, UTF-8 JSON bytes, or objects (as JSON)."""
    total = 0
    for unit in units:
        if isinstance(unit, str):
            total += count(unit)
        elif isinstance(unit, bytes):
            total += count(unit.decode())
        else:
            total += count(orjson.dumps(unit).decode())
    return total
