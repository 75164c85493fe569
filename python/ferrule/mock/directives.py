"""``[mock:NAME]`` / ``[mock:NAME=VALUE]`` directives: how a test scripts one answer.

Directives are read from the text of the LAST user message only (its text blocks, or the text in
a ``tool_result``), so the history of a conversation never re-triggers an old directive. Entries
queued through ``POST /_mock/script`` are merged in and win over the text. Unknown names are kept
in :attr:`Directives.unknown` (answered in a response header) rather than failing the request.

A script entry may also be an object that names exact tool calls and text (``parse_object``): the
directive syntax has no room for a tool's input JSON, and an agent loop (Codex's ``apply_patch``)
needs a given tool called with a given input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KNOWN", "Directives", "ScriptedCall", "from_request", "parse_entry", "parse_object"]

_PATTERN = re.compile(r"\[mock:([a-z0-9_]+)(?:=([^\]\s]*))?\]")
# Script entries may be written bare: "error=529", "thinking tool", or with the brackets.
_BARE = re.compile(r"([a-z0-9_]+)(?:=([^\s,\]]*))?")

KNOWN = frozenset(
    {
        "words",
        "delay",
        "echo",
        "thinking",
        "redacted",
        "tool",
        "tools2",
        "stop_sequence",
        "max_tokens",
        "refusal",
        "cache",
        "error",
        "retry_after",
        "midstream_error",
        "truncate",
        "hang",
        "stall",
    }
)


# What a tool name may look like on the API (validate.py checks the request's tools the same way).
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_OBJECT_KEYS = frozenset({"directives", "tool_calls", "text"})


@dataclass(frozen=True)
class ScriptedCall:
    """One ``tool_use`` block a script entry asks for: this tool, with exactly this input."""

    name: str
    input: dict[str, Any]


@dataclass
class Directives:
    """The directives of one request, name → value (``""`` when no value was given)."""

    values: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    # From an object script entry: exact tool calls (stop_reason tool_use) and exact answer text.
    tool_calls: list[ScriptedCall] = field(default_factory=list)
    text: str | None = None

    def has(self, name: str) -> bool:
        return name in self.values

    def number(self, name: str, default: float) -> float:
        """A numeric value; a missing or malformed one gives ``default``."""
        try:
            return float(self.values[name])
        except (KeyError, ValueError):
            return default

    def add(self, name: str, value: str) -> None:
        if name in KNOWN:
            self.values[name] = value
        elif name not in self.unknown:
            self.unknown.append(name)

    def merge(self, other: Directives) -> None:
        """Lay ``other`` over these (a scripted entry over the request's own text)."""
        self.values.update(other.values)
        self.unknown.extend(n for n in other.unknown if n not in self.unknown)
        if other.tool_calls:
            self.tool_calls = list(other.tool_calls)
        if other.text is not None:
            self.text = other.text


def _texts_of(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
        return
    if not isinstance(content, list):
        return
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            yield block["text"]
        elif block.get("type") == "tool_result":
            yield from _texts_of(block.get("content"))


def last_user_text(body: dict[str, Any]) -> str:
    """All text of the last user message, joined by newlines."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return "\n".join(_texts_of(message.get("content")))
    return ""


def parse_text(text: str) -> Directives:
    found = Directives()
    for match in _PATTERN.finditer(text):
        found.add(match.group(1), match.group(2) or "")
    return found


def parse_entry(entry: str | int) -> Directives:
    """One ``/_mock/script`` entry: a status code (``529`` = ``error=529``) or directive text."""
    if isinstance(entry, int):
        found = Directives()
        found.add("error", str(entry))
        return found
    if "[mock:" in entry:
        return parse_text(entry)
    found = Directives()
    if entry.strip().isdigit():
        found.add("error", entry.strip())
        return found
    for match in _BARE.finditer(entry):
        found.add(match.group(1), match.group(2) or "")
    return found


def parse_object(entry: dict[str, Any]) -> Directives:
    """An object ``/_mock/script`` entry: ``{"directives"?: str, "tool_calls"?: [{"name": str,
    "input": object}], "text"?: str}``. A malformed one is a ``ValueError`` naming the problem."""
    extra = sorted(set(entry) - _OBJECT_KEYS)
    if extra:
        raise ValueError(f"unknown key {extra[0]!r} (known: directives, tool_calls, text)")
    text = entry.get("directives", "")
    if not isinstance(text, str):
        raise ValueError("'directives' must be a string")
    found = parse_entry(text) if text.strip() else Directives()
    calls = entry.get("tool_calls", [])
    if not isinstance(calls, list):
        raise ValueError("'tool_calls' must be a list")
    for i, call in enumerate(calls):
        if not isinstance(call, dict) or set(call) - {"name", "input"}:
            raise ValueError(f"tool_calls[{i}] must be an object with 'name' and 'input'")
        name, arguments = call.get("name"), call.get("input", {})
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise ValueError(f"tool_calls[{i}].name must match {_TOOL_NAME.pattern}")
        if not isinstance(arguments, dict):
            raise ValueError(f"tool_calls[{i}].input must be an object")
        found.tool_calls.append(ScriptedCall(name, arguments))
    answer = entry.get("text")
    if answer is not None and (not isinstance(answer, str) or not answer.strip()):
        raise ValueError("'text' must be a string with a non-whitespace character")
    found.text = answer
    return found


def from_request(body: dict[str, Any], scripted: Iterable[Directives] = ()) -> Directives:
    """The directives that shape the answer to ``body``."""
    found = parse_text(last_user_text(body))
    for entry in scripted:
        found.merge(entry)
    return found
