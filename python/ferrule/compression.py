"""Prompt compression policy: which blocks of an Anthropic request are compressed, and how.

The kernel (``Compressor`` in ``ferrule.backend``: Rust, or its pure-Python twin) does the work
block by block; this module decides the order, the kinds and the names used in pointers, and
counts what was saved. :func:`compress_request` takes a translated (or Anthropic-native) Messages
request and rewrites it IN PLACE.

What is compressed (everything else is left exactly as it is: tools, system, assistant turns,
thinking, images, documents, and every non-text block):

- user turns, in order: a string ``content``, ``text`` blocks (kind ``text``: only ANSI escape
  sequences go, plus deduplication), and ``tool_result`` blocks, whose string content or
  ``text`` parts are compressed as kind ``tool_result``, or as ``file`` when the tool that
  produced them reads or edits files.

How file contents are recognised (they are kept byte for byte, because edit tools such as
``str_replace`` match exact strings, trailing spaces included):

1. by the tool: the ``tool_use`` block with the result's ``tool_use_id`` has a name containing a
   word of :data:`FILE_TOOL_WORDS` (``Read``, ``view_file``, ``str_replace_editor``,
   ``NotebookEdit``, ``open``, ``grep``, ...; words split at ``_``, ``-``, digits and camelCase),
   or a ``command``/``cmd`` input that runs a file-printing program (:data:`FILE_COMMANDS`:
   ``cat``, ``head``, ``sed``, ``grep``, ``git diff``, ...);
2. by the content, in the kernel: three consecutive lines numbered n, n+1, n+2 (``cat -n``,
   SWE-agent's ``n:``, Claude Code's ``n→`` listings), in tool results and user text alike.

NOTE: code printed by other tools (a test run's source excerpt, a search tool's matches) is
treated as tool output and may lose trailing whitespace in lossless mode.

Prompt-cache safety: every block is compressed from its own text plus, for deduplication, only
the blocks before it, and the same way whether or not it carries ``cache_control`` (the key is
never touched), so the compressed request k is a message-level prefix of the compressed request
k+1 whenever the client's request k was. Pointers name the earlier block by its position
(``message 3 block 2``, 1-based over ``messages``), which never changes as the conversation grows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import backend, tokens
from .compress_walk import FILE_COMMANDS, FILE_TOOL_WORDS, MODES, tool_kind, walk

__all__ = [
    "FILE_COMMANDS",
    "FILE_TOOL_WORDS",
    "MODES",
    "CompressionResult",
    "compress_request",
    "prompt_units",
    "tool_kind",
]


@dataclass(slots=True)
class CompressionResult:
    """What :func:`compress_request` did. ``body`` is the request it was given, changed in place.

    ``tokens_before``/``tokens_after``/``tokens_saved`` are counted on first read with
    :mod:`ferrule.tokens` (memoized per text: a cold 200 KB request takes ~30 ms, a warm one,
    whose earlier turns were counted before, ~1 ms): read them off the event loop
    (``asyncio.to_thread``) or once the upstream request is on its way. They cover the text of
    the whole prompt (tools and tool inputs as JSON, system, every message block; not images nor
    ``cache_control``) as the body holds it when first read: adding breakpoints is fine, changing
    texts before reading them is not. ``bytes_saved`` counts UTF-8 bytes of block text.
    """

    body: dict[str, Any] | None  # None: made by the native request path, which keeps none
    mode: str
    blocks: int = 0  # blocks the kernel looked at
    changed: int = 0  # blocks it rewrote
    _rewrites: list[tuple[str, str]] = field(default_factory=list, repr=False)
    _counts: tuple[int, int] | None = field(default=None, repr=False)

    def _count(self) -> tuple[int, int]:
        if self._counts is None:
            if self.body is None:
                raise ValueError("the prompt's counts need the request body")
            after = tokens.count_texts(prompt_units(self.body))
            saved = sum(tokens.count(a) - tokens.count(b) for a, b in self._rewrites)
            self._counts = (after + saved, after)
        return self._counts

    def count_saved(self) -> int:
        """Tokens the rewrites removed, counting only the rewritten blocks (none when nothing
        changed): what the pipeline needs, since the prompt's own size comes exactly from the
        upstream's usage. Same tokenizer and memo as ``tokens_saved``."""
        return sum(tokens.count(a) - tokens.count(b) for a, b in self._rewrites)

    @property
    def rewritten_bytes(self) -> int:
        """UTF-8 size of the original texts of the rewritten blocks (what ``count_saved``
        reads, about)."""
        return sum(len(a) for a, _ in self._rewrites)

    @property
    def bytes_saved(self) -> int:
        return sum(_utf8_len(a) - _utf8_len(b) for a, b in self._rewrites)

    @property
    def tokens_before(self) -> int:
        return self._count()[0]

    @property
    def tokens_after(self) -> int:
        return self._count()[1]

    @property
    def tokens_saved(self) -> int:
        before, after = self._count()
        return before - after


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


_TOOL_FIELDS = ("type", "name", "description", "input_schema")


def prompt_units(body: dict[str, Any]) -> Iterator[Any]:
    """What the prompt's tokens are counted on: texts, and objects counted as their JSON.

    Reads fields by name and never iterates a dict that breakpoint placement may change, so it
    is safe to run in a thread while the body is being marked.
    """
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, dict):
                yield {k: tool[k] for k in _TOOL_FIELDS if k in tool}
    system = body.get("system")
    if isinstance(system, str):
        yield system
    elif isinstance(system, list):
        yield from _block_units(system)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                yield content
            elif isinstance(content, list):
                yield from _block_units(content)


def _block_units(blocks: list[Any]) -> Iterator[Any]:
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            yield block.get("text") or ""
        elif kind == "tool_result":
            content = block.get("content")
            if isinstance(content, str):
                yield content
            elif isinstance(content, list):
                yield from _block_units(content)
        elif kind == "thinking":
            yield block.get("thinking") or ""
        elif kind == "tool_use":
            yield block.get("name") or ""
            yield block.get("input")
        elif kind not in ("image", "redacted_thinking", "document"):
            yield block.get("content") or block.get("input") or ""


def compress_request(body: dict[str, Any], mode: str) -> CompressionResult:
    """Compress an Anthropic Messages request body in place (``mode``: off, lossless, aggressive).

    Deterministic, prefix-stable and idempotent (see the module docstring); never raises on a
    malformed body (what it does not understand it leaves alone, for the API to judge).
    ``ValueError`` for an unknown mode. ``off`` returns at once (the counts still work).
    """
    if mode not in MODES:
        raise ValueError(f"compression mode must be off, lossless or aggressive, not {mode!r}")
    result = CompressionResult(body=body, mode=mode)
    if mode != "off":
        result.blocks, result._rewrites = walk(body, backend.Compressor(mode).compress)
        result.changed = len(result._rewrites)
    return result
