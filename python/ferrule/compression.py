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

import re
from dataclasses import dataclass, field
from typing import Any

from . import backend, tokens

__all__ = [
    "FILE_COMMANDS",
    "FILE_TOOL_WORDS",
    "MODES",
    "CompressionResult",
    "compress_request",
    "tool_kind",
]

MODES = ("off", "lossless", "aggressive")

# A tool whose name has one of these words returns file contents (or edits them and shows them).
FILE_TOOL_WORDS = frozenset(
    {
        "cat",
        "create",
        "diff",
        "edit",
        "editor",
        "file",
        "files",
        "goto",
        "grep",
        "multiedit",
        "notebook",
        "open",
        "patch",
        "read",
        "scroll",
        "view",
        "write",
    }
)
# Programs whose output in a shell tool is file contents.
FILE_COMMANDS = re.compile(
    r"(?:^|[\s;&|(`])(?:cat|head|tail|nl|bat|less|more|sed|awk|grep|egrep|rg|ag|diff"
    r"|git\s+(?:diff|show|blame))(?=\s|$)"
)
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def tool_kind(name: Any, tool_input: Any) -> str:
    """``"file"`` when a tool's results are file contents, else ``"tool_result"``."""
    if isinstance(name, str) and any(w.lower() in FILE_TOOL_WORDS for w in _WORDS.findall(name)):
        return "file"
    if isinstance(tool_input, dict):
        command = tool_input.get("command", tool_input.get("cmd"))
        if isinstance(command, list):
            command = " ".join(c for c in command if isinstance(c, str))
        if isinstance(command, str) and FILE_COMMANDS.search(command):
            return "file"
    return "tool_result"


@dataclass(slots=True)
class CompressionResult:
    """What :func:`compress_request` did. ``body`` is the request it was given, changed in place.

    ``tokens_before``/``tokens_after``/``tokens_saved`` are counted on first read with
    :mod:`ferrule.tokens` (memoized per block, but a cold 200 KB request takes ~20 ms): read them
    off the event loop or after the upstream request is on its way. They cover the text of the
    whole prompt (tools as JSON, system, every message block; not images), as it was when the
    request was compressed.
    """

    body: dict[str, Any]
    mode: str
    blocks: int = 0  # blocks the kernel looked at
    changed: int = 0  # blocks it rewrote
    bytes_saved: int = 0  # UTF-8 bytes of block text removed
    _units: list[Any] = field(default_factory=list, repr=False)
    _rewrites: list[tuple[str, str]] = field(default_factory=list, repr=False)
    _counts: tuple[int, int] | None = field(default=None, repr=False)

    def _count(self) -> tuple[int, int]:
        if self._counts is None:
            after = tokens.count_texts(self._units)
            saved = sum(tokens.count(a) - tokens.count(b) for a, b in self._rewrites)
            self._counts = (after + saved, after)
        return self._counts

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


class _Walk:
    """One pass over a request: compresses user blocks, collects what tokens are counted on."""

    __slots__ = ("compressor", "kinds", "result")

    def __init__(self, result: CompressionResult, mode: str) -> None:
        self.result = result
        self.compressor = backend.Compressor(mode) if mode != "off" else None
        self.kinds: dict[str, str] = {}  # tool_use id -> kind of its results

    def text(self, text: str, kind: str, ref: str) -> str:
        result = self.result
        result.blocks += 1
        out = text if self.compressor is None else self.compressor.compress(text, kind, ref)
        if out != text:
            result.changed += 1
            result.bytes_saved += len(text.encode()) - len(out.encode())
            result._rewrites.append((text, out))
        result._units.append(out)
        return out

    def user_block(self, block: dict[str, Any], ref: str) -> None:
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str):
                block["text"] = self.text(text, "text", ref)
            return
        if kind != "tool_result":
            self.other(block)
            return
        tool_use_id = block.get("tool_use_id")
        if isinstance(tool_use_id, str):
            kind = self.kinds.get(tool_use_id, "tool_result")
        else:
            kind = "tool_result"
        content = block.get("content")
        if isinstance(content, str):
            block["content"] = self.text(content, kind, ref)
        elif isinstance(content, list):
            for k, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "text":
                    text = part.get("text")
                    if isinstance(text, str):
                        part["text"] = self.text(text, kind, f"{ref} part {k + 1}")
                        continue
                self.other(part)

    def other(self, block: Any) -> None:
        """A block left alone: its text (or its JSON) still counts."""
        if not isinstance(block, dict):
            return
        kind = block.get("type")
        if kind == "text":
            self.result._units.append(block.get("text") or "")
        elif kind == "thinking":
            self.result._units.append(block.get("thinking") or "")
        elif kind == "tool_use":
            tool_id = block.get("id")
            if isinstance(tool_id, str):
                self.kinds[tool_id] = tool_kind(block.get("name"), block.get("input"))
            self.result._units.append(block.get("name") or "")
            self.result._units.append(block.get("input"))
        elif kind not in ("image", "redacted_thinking", "document"):
            self.result._units.append({k: v for k, v in block.items() if k != "cache_control"})


def compress_request(body: dict[str, Any], mode: str) -> CompressionResult:
    """Compress an Anthropic Messages request body in place (``mode``: off, lossless, aggressive).

    Deterministic, prefix-stable and idempotent (see the module docstring); never raises on a
    malformed body (what it does not understand it leaves alone, for the API to judge).
    ``ValueError`` for an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"compression mode must be off, lossless or aggressive, not {mode!r}")
    result = CompressionResult(body=body, mode=mode)
    walk = _Walk(result, mode)
    units = result._units
    tools = body.get("tools")
    if isinstance(tools, list):
        # Copied now: breakpoints may add cache_control to a tool before the counts are read.
        units.extend(
            {k: v for k, v in t.items() if k != "cache_control"} if isinstance(t, dict) else t
            for t in tools
        )
    system = body.get("system")
    if isinstance(system, str):
        units.append(system)
    elif isinstance(system, list):
        for block in system:
            walk.other(block)
    messages = body.get("messages")
    if not isinstance(messages, list):
        return result
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        user = message.get("role") == "user"
        if isinstance(content, str):
            if user:
                message["content"] = walk.text(content, "text", f"message {i + 1}")
            else:
                units.append(content)
        elif isinstance(content, list):
            for j, block in enumerate(content):
                if user and isinstance(block, dict):
                    walk.user_block(block, f"message {i + 1} block {j + 1}")
                else:
                    walk.other(block)
    return result
