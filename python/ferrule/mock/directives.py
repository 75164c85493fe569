"""``[mock:NAME]`` / ``[mock:NAME=VALUE]`` directives: how a test scripts one answer.

Directives are read from the text of the LAST user message only (its text blocks, or the text in
a ``tool_result``), so the history of a conversation never re-triggers an old directive. Entries
queued through ``POST /_mock/script`` are merged in and win over the text. Unknown names are kept
in :attr:`Directives.unknown` (answered in a response header) rather than failing the request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KNOWN", "Directives", "from_request", "parse_entry"]

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


@dataclass
class Directives:
    """The directives of one request, name → value (``""`` when no value was given)."""

    values: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

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


def from_request(body: dict[str, Any], scripted: Iterable[Directives] = ()) -> Directives:
    """The directives that shape the answer to ``body``."""
    found = parse_text(last_user_text(body))
    for entry in scripted:
        found.merge(entry)
    return found
