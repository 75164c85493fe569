"""The walk of prompt compression (``ferrule.compression`` documents the policy): which blocks
of an Anthropic request are compressed, as which kind, under which name, in order.

Apart from ``ferrule.compression`` so that it depends on nothing of Ferrule's (not
``ferrule.backend``, not ``ferrule._pure``): the pure-Python twin of the native request path
(``ferrule._pure.chat_request``) walks with the pure kernel, and
``compression.compress_request`` with the backend's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

__all__ = [
    "FILE_COMMANDS",
    "FILE_PROGRAMS",
    "FILE_TOOLS",
    "FILE_TOOL_WORDS",
    "GIT_FILE_COMMANDS",
    "MODES",
    "tool_kind",
    "walk",
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
# Programs whose output in a shell tool is file contents, and git's subcommands that print them.
FILE_PROGRAMS = (
    "cat", "head", "tail", "nl", "bat", "less", "more", "sed", "awk", "grep", "egrep", "rg", "ag",
    "diff",
)  # fmt: skip
GIT_FILE_COMMANDS = ("diff", "show", "blame")
FILE_COMMANDS = re.compile(
    rf"(?:^|[\s;&|(`])(?:{'|'.join(FILE_PROGRAMS)}|git\s+(?:{'|'.join(GIT_FILE_COMMANDS)}))(?=\s|$)"
)
FILE_TOOLS = (FILE_TOOL_WORDS, FILE_PROGRAMS, GIT_FILE_COMMANDS)
"""What says a tool's results are file contents, in one tuple: the native request path is given
it (``ChatRequests(file_tools=...)``), so these lists are written only here."""
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def tool_kind(name: Any, tool_input: Any) -> str:
    """``"file"`` when a tool's results are file contents, else ``"tool_result"``."""
    if isinstance(name, str) and _file_tool_name(name):
        return "file"
    if isinstance(tool_input, dict):
        command = tool_input.get("command", tool_input.get("cmd"))
        if isinstance(command, list):
            command = " ".join(c for c in command if isinstance(c, str))
        if isinstance(command, str) and FILE_COMMANDS.search(command):
            return "file"
    return "tool_result"


@lru_cache(maxsize=4096)
def _file_tool_name(name: str) -> bool:
    return any(w.lower() in FILE_TOOL_WORDS for w in _WORDS.findall(name))


def walk(
    body: dict[str, Any], compress: Callable[[str, str, str], str]
) -> tuple[int, list[tuple[str, str]]]:
    """Compress ``body``'s user blocks in place with a kernel's ``compress``: (blocks looked at,
    (original, compressed) of each block rewritten). Never raises on a malformed body."""
    rewrites: list[tuple[str, str]] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0, rewrites
    kinds: dict[Any, str] = {}  # tool_use id -> kind of its results
    blocks = 0

    def text(text: str, kind: str, i: int, j: int = 0, k: int = 0) -> str:
        nonlocal blocks
        blocks += 1
        # the name a later identical block's pointer gives (the kernel keeps it for long blocks)
        ref = f"message {i + 1}"
        if j:
            ref += f" block {j}" + (f" part {k}" if k else "")
        out = compress(text, kind, ref)
        if out is not text and out != text:
            rewrites.append((text, out))
        return out

    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if message.get("role") != "user":
            if isinstance(content, list):
                for block in content:
                    if isinstance(block, dict) and block.get("type") == "tool_use":
                        kinds[block.get("id")] = tool_kind(block.get("name"), block.get("input"))
            continue
        if isinstance(content, str):
            message["content"] = text(content, "text", i)
            continue
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content, 1):
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                value = block.get("text")
                if isinstance(value, str):
                    block["text"] = text(value, "text", i, j)
            elif kind == "tool_result":
                tool_use_id = block.get("tool_use_id")
                kind = (
                    kinds.get(tool_use_id, "tool_result")
                    if isinstance(tool_use_id, str)
                    else "tool_result"
                )
                value = block.get("content")
                if isinstance(value, str):
                    block["content"] = text(value, kind, i, j)
                elif isinstance(value, list):
                    for k, part in enumerate(value, 1):
                        if isinstance(part, dict) and part.get("type") == "text":
                            part_text = part.get("text")
                            if isinstance(part_text, str):
                                part["text"] = text(part_text, kind, i, j, k)
    return blocks, rewrites
