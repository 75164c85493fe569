"""Pure-Python twin of ``ferrule._native.ChatRequests``: the request path of
``/v1/chat/completions`` in one call (issue 12), from the client's body bytes to the bytes that go
upstream, plus the facts the pipeline needs.

It is the Python stages themselves, composed: ``translate.request.to_anthropic``, the compression
walk (``ferrule.compress_walk``, with the pure kernel) and
``breakpoints.place_breakpoints_json``. What it adds is the rule for when the native path
*declines* (None): the caller then runs the stages one by one, as for every other route, and they
answer or refuse exactly as before. It declines:

- whatever the translation refuses (a 400) or translates with a warning;
- ``reasoning_effort``, ``response_format``, ``web_search_options``, ``service_tier`` and
  ``verbosity``, image parts, a ``model`` or user id that is not printable ASCII, an ``n`` that
  is not the integer 1, tool inputs or schemas nested more than :data:`MAX_NESTING` levels, and
  ``temperature``/``top_p`` (under API version 2023-06-01) for a model that thinks by default,
  does not take one at any value, or not both together;
- an unknown compression mode.

The answer is ``(payload, asked model, model sent, stream, include_usage, thinking, max_tokens,
offers tools, temperature sent or None, rewrites, blocks compressed, tool turns)``: ``rewrites``
are the (original, compressed) texts of the blocks compression changed, ``blocks`` how many it
read, ``tool turns`` the tool_use ids (the first four) of each assistant turn that has some,
where ``ferrule.thinking`` would look for thinking blocks to put back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ..breakpoints import place_breakpoints_json
from ..compress_walk import FILE_TOOLS, MODES, walk
from ..errors import ProxyError
from ..translate.request import to_anthropic
from .compress import Compressor

__all__ = ["MAX_NESTING", "ChatRequests", "Facts", "FileTools", "Prepared"]

MAX_NESTING = 100
"""Deeper tool inputs and schemas go the stages' way (their limit, ``jsonbody.MAX_DEPTH``, is
128)."""

_PYTHON_ONLY = (
    "reasoning_effort",
    "response_format",
    "web_search_options",
    "service_tier",
    "verbosity",
)

Facts = tuple[str, int, bool, bool, bool, bool, bool, bool, int]
"""(model sent, default max_tokens, thinks by default, strict tools, temperature at any value,
top_p at any value, not the two together, forced tool_choice, minimum cacheable tokens):
``translate.request.model_facts``."""

FileTools = tuple[frozenset[str], tuple[str, ...], tuple[str, ...]]
"""``compress_walk.FILE_TOOLS``: file-tool name words, file-printing programs, git subcommands."""

Prepared = tuple[
    bytes,
    str,
    str,
    bool,
    bool,
    bool,
    int,
    bool,
    "int | float | None",
    list[tuple[str, str]],
    int,
    list[list[str]],
]


def _ascii_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256 and all(" " <= c <= "~" for c in value)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` containers (an empty one counts)."""
    level = [value]
    depth = 0
    while level:
        nested = [v for v in level if isinstance(v, (dict, list))]
        if not nested:
            return False
        depth += 1
        if depth > limit:
            return True
        level = [c for v in nested for c in (v.values() if isinstance(v, dict) else v)]
    return False


def _python_only(body: dict[str, Any]) -> bool:
    """What only the stages translate, or what they accept and this path does not."""
    if any(body.get(key) is not None for key in _PYTHON_ONLY):
        return True
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):
        return True
    if not _ascii_id(body.get("model")):
        return True
    ident = body.get("safety_identifier") or body.get("user")
    if isinstance(ident, str) and ident and not _ascii_id(ident):
        return True
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if (
                message.get("role") == "user"
                and isinstance(content, list)
                and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content)
            ):
                return True
    return False


def _tool_use_ids(turn: dict[str, Any]) -> list[str]:
    if turn["role"] != "assistant":
        return []
    return [b["id"] for b in turn["content"] if b["type"] == "tool_use"]


class ChatRequests:
    """One worker's request path for the chat route. ``facts(model asked)`` gives what the model
    table says (:data:`Facts`); ``aliases``, ``version`` and ``strict`` are the config's;
    ``ttl`` the breakpoints' (None: Ferrule places none); ``file_tools`` is
    ``compress_walk.FILE_TOOLS`` (what the native side knows of file tools; the walk here reads
    it there)."""

    __slots__ = ("_aliases", "_facts", "_strict", "_ttl", "_version")

    def __init__(
        self,
        facts: Callable[[str], Facts],
        *,
        aliases: Mapping[str, str],
        version: str,
        strict: bool,
        ttl: str | None,
        file_tools: FileTools,
    ) -> None:
        self._facts = facts
        self._aliases = aliases
        self._version = version
        self._strict = strict
        self._ttl = ttl
        if file_tools != FILE_TOOLS:
            raise ValueError("the pure walk knows only compress_walk.FILE_TOOLS")

    def prepare(self, raw: bytes, mode: str) -> Prepared | None:
        """The request ready to go upstream, or None: the stages must prepare it."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict) or mode not in MODES or _python_only(body):
            return None
        t, p = body.get("temperature") is not None, body.get("top_p") is not None
        if self._version == "2023-06-01" and (t or p):
            _, _, thinks, _, t_ok, p_ok, exclusive, _, _ = self._facts(body["model"])
            if thinks or (t and not t_ok) or (p and not p_ok) or (t and p and exclusive):
                return None
        try:
            tr = to_anthropic(
                body, aliases=self._aliases, version=self._version, strict=self._strict
            )
        except ProxyError:
            return None
        if tr.warnings:
            return None
        out = tr.body
        for turn in out["messages"]:
            for block in turn["content"]:
                if block["type"] == "tool_use" and _deeper_than(block["input"], MAX_NESTING):
                    return None
        if any(_deeper_than(tool["input_schema"], MAX_NESTING) for tool in out.get("tools", ())):
            return None
        blocks, rewrites = (0, []) if mode == "off" else walk(out, Compressor(mode).compress)
        payload = place_breakpoints_json(out, ttl=self._ttl) if self._ttl is not None else None
        if payload is None:
            payload = orjson.dumps(out)
        return (
            payload,
            tr.model,
            out["model"],
            tr.stream,
            tr.include_usage,
            tr.thinking,
            out["max_tokens"],
            "tools" in out,
            out.get("temperature"),
            rewrites,
            blocks,
            [ids[:4] for turn in out["messages"] if (ids := _tool_use_ids(turn))],
        )
