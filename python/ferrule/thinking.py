"""Thinking blocks across tool turns, for clients that cannot send them back.

Anthropic requires the thinking blocks of the assistant turn that made tool calls to come back,
unmodified and with their signatures, in the request that carries the tool results ("Pass
thinking blocks back complete and unmodified", platform.claude.com/docs/build-with-claude/
thinking-tool-workflows; the 400 otherwise reads "messages.N.content.0.type: expected thinking or
redacted_thinking"). OpenAI-shaped clients never had the signature: they get ``reasoning_content``
(text) and send back ``content`` plus ``tool_calls``.

So Ferrule keeps them: when an answer ends in tool calls and carries thinking or
redacted_thinking blocks, the blocks are sealed (``ferrule.seal``, the tenant as associated data)
and stored under each of the turn's tool_use ids, per tenant, in the response-cache store family
(memory, SQLite, Redis) with a TTL. When a later request replays that assistant turn (tool_use ids
survive every client), the blocks are put back in front of it, exactly as they came, in every
assistant turn where they are known: the same bytes every time, so the prompt-cache prefix holds.

When the blocks of the turn the tool loop is in are gone (expired, another proxy, ids rewritten),
:func:`degrade` changes the request in the one way the API accepts: thinking off for that request
where the model allows it, else that turn's tool calls and results written out as text. The
route says so in ``x-ferrule-warning``; the client never gets a 400 it cannot fix.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from .cache.stores import ResponseStore, StoreUnavailable
from .seal import Sealer, SealError

__all__ = [
    "THINKING_MAX_BYTES",
    "THINKING_SQLITE_NAME",
    "THINKING_TYPES",
    "Restored",
    "ThinkingMemory",
    "degrade",
    "loop_turn",
]

log = logging.getLogger("ferrule.thinking")

THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})
THINKING_SQLITE_NAME = "thinking.sqlite3"
"""The SQLite store's file in the data folder (shared by the workers of a host)."""
THINKING_MAX_BYTES = 64 * 1024 * 1024
"""Budget of the memory and SQLite stores (oldest entries go first)."""
_KEY_DOMAIN = b"ferrule-thinking-v1\x00"
# Every assistant turn gets its blocks back, not only the open tool loop's: a turn that kept them
# on one request and lost them on the next would change the prompt-cache prefix there. Bounded
# (a conversation longer than this keeps what the client sent for its oldest turns).
_MAX_LOOKUPS = 4096


def _key(tenant: str, tool_use_id: str) -> str:
    digest = hashlib.sha256(_KEY_DOMAIN + tenant.encode() + b"\x00" + tool_use_id.encode())
    return "thinking:" + digest.hexdigest()


def _tool_ids(content: list[Any]) -> list[str]:
    return [
        b["id"]
        for b in content
        if isinstance(b, dict) and b.get("type") == "tool_use" and isinstance(b.get("id"), str)
    ]


def _has_thinking(content: list[Any]) -> bool:
    return any(isinstance(b, dict) and b.get("type") in THINKING_TYPES for b in content)


def loop_turn(messages: list[Any]) -> int | None:
    """Index of the assistant turn the tool loop is in: the last assistant turn, when it made
    tool calls and only tool results follow it. None when no tool loop is open."""
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if not isinstance(msg, dict):
            return None
        if msg.get("role") == "assistant":
            content = msg.get("content")
            if isinstance(content, list) and _tool_ids(content) and i < len(messages) - 1:
                return i
            return None
        content = msg.get("content")
        if not isinstance(content, list) or not any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        ):
            return None
    return None


@dataclass(slots=True)
class Restored:
    """What :meth:`ThinkingMemory.restore` did to a request."""

    turns: int = 0  # assistant turns that got their thinking blocks back
    loop_missing: bool = False  # the open tool loop's turn still has no thinking block


class ThinkingMemory:
    """Sealed thinking blocks by (tenant, tool_use id) in a response-cache store."""

    __slots__ = ("_sealer", "_store", "_ttl")

    def __init__(self, store: ResponseStore, sealer: Sealer, ttl_s: float) -> None:
        self._store = store
        self._sealer = sealer
        self._ttl = ttl_s

    async def close(self) -> None:
        await self._store.close()

    async def remember(self, tenant: str, message: Any) -> int:
        """Keep the thinking blocks of an answer that ended in tool calls; how many ids."""
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            return 0
        ids = _tool_ids(content)
        blocks = [b for b in content if isinstance(b, dict) and b.get("type") in THINKING_TYPES]
        if not ids or not blocks:
            return 0
        value = self._sealer.seal(orjson.dumps(blocks), tenant.encode()).encode("ascii")
        try:
            await asyncio.gather(*(self._store.set(_key(tenant, i), value, self._ttl) for i in ids))
        except StoreUnavailable:
            log.warning("thinking store unavailable: a tool turn's thinking was not kept")
            return 0
        return len(ids)

    async def kept(self, tenant: str, turns: list[list[str]]) -> bool:
        """Whether thinking blocks are kept for any of these assistant turns (each given by its
        tool_use ids): whether :meth:`restore` would put some back. The same lookups."""
        found = await asyncio.gather(*(self._lookup(tenant, ids) for ids in turns[-_MAX_LOOKUPS:]))
        return any(blocks is not None for blocks in found)

    async def _lookup(self, tenant: str, ids: list[str]) -> list[Any] | None:
        for tool_id in ids[:4]:  # every id of the turn maps to the same blocks
            try:
                value = await self._store.get(_key(tenant, tool_id))
            except StoreUnavailable:
                return None
            if value is None:
                continue
            try:
                blocks = orjson.loads(self._sealer.open(value.decode("ascii"), tenant.encode()))
            except (SealError, UnicodeDecodeError, orjson.JSONDecodeError):
                continue  # sealed under a retired key, or damaged: as if expired
            if isinstance(blocks, list) and blocks:
                return blocks
        return None

    async def restore(
        self, tenant: str, body: dict[str, Any], *, offload: bool = False
    ) -> Restored:
        """Put known thinking blocks back in front of the assistant turns that lack them.
        ``offload``: scan the turns in a thread (a large request must not hold the loop)."""
        messages = body.get("messages")
        result = Restored()
        if not isinstance(messages, list):
            return result
        if offload:
            wanted = await asyncio.to_thread(_wanted, messages)
        else:
            wanted = _wanted(messages)
        if wanted:
            found = await asyncio.gather(*(self._lookup(tenant, ids) for _, ids in wanted))
            for (msg, _), blocks in zip(wanted, found, strict=True):
                if blocks is not None:
                    msg["content"] = [*blocks, *msg["content"]]
                    result.turns += 1
        at = loop_turn(messages)
        if at is not None:
            content = messages[at].get("content")
            result.loop_missing = not (
                isinstance(content, list)
                and content
                and isinstance(content[0], dict)
                and content[0].get("type") in THINKING_TYPES
            )
        return result


def _wanted(messages: list[Any]) -> list[tuple[dict[str, Any], list[str]]]:
    """The assistant turns with tool calls and no thinking block, with their tool_use ids."""
    wanted: list[tuple[dict[str, Any], list[str]]] = []
    for msg in messages:
        if not isinstance(msg, dict) or msg.get("role") != "assistant":
            continue
        content = msg.get("content")
        if isinstance(content, list) and not _has_thinking(content):
            ids = _tool_ids(content)
            if ids:
                wanted.append((msg, ids))
    return wanted[-_MAX_LOOKUPS:]


def _as_text(block: dict[str, Any]) -> dict[str, Any]:
    if block.get("type") == "tool_use":
        args = orjson.dumps(block.get("input", {})).decode()
        return {"type": "text", "text": f"[called tool {block.get('name')} with {args}]"}
    content = block.get("content")
    if isinstance(content, list):
        content = "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return {"type": "text", "text": f"[tool result]\n{content if content else ''}"}


def degrade(body: dict[str, Any], *, can_disable: bool) -> str:
    """Make a request whose open tool loop lost its thinking acceptable; the warning to send.

    Where the model lets thinking be turned off, it is off for this request (the API's own advice
    when the blocks are gone). Where it does not, the loop's tool calls and their results are
    written out as text, so no assistant turn with tool_use needs a thinking block."""
    if can_disable:
        body["thinking"] = {"type": "disabled"}
        return "thinking-off: this tool turn's thinking blocks are not known here (expired or from another proxy); thinking is off for this request"
    messages = body["messages"]
    at = loop_turn(messages)
    if at is None:
        return ""
    for msg in messages[at:]:
        content = msg.get("content")
        if isinstance(content, list):
            msg["content"] = [
                _as_text(b)
                if isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result")
                else b
                for b in content
            ]
    return "tool-turn-as-text: this tool turn's thinking blocks are not known here (expired or from another proxy); its tool calls were sent as text"
