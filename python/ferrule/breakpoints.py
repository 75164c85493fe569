"""Automatic prompt-cache breakpoints on a translated Anthropic request.

OpenAI clients cannot send ``cache_control``, so Ferrule marks the request for them. Anthropic's
rules (prompt-caching guide, https://docs.claude.com/en/docs/build-with-claude/prompt-caching,
and ``../shared/reference/caching-compression-pricing.md``):

- the prompt is one sequence of blocks: tools, then system blocks, then message blocks;
- a ``cache_control`` block is a breakpoint: the prefix ending with it is written to the cache
  (1.25x the input price for 5 minutes, 2x for 1 hour) and read back later at 0.1x;
- a breakpoint also finds entries at earlier block boundaries, but only about 20 blocks back;
- at most 4 breakpoints per request (more is a 400), and 1-hour ones must come before 5-minute;
- a prefix shorter than the model's minimum is silently not cached.

Placement, in priority order (the client's own breakpoints are kept, counted, and never moved):

1. ``newest``: the last cacheable block of the last user turn. It writes the whole conversation
   so the next request can read it. (A trailing assistant turn is a prefill, rewritten by the
   next request, so it is skipped.)
2. ``previous``: the last cacheable block of the user turn before that, where the previous
   request of an agent loop put its ``newest`` marker. Reading there is exact, so it works
   however many blocks the last turn added (parallel tool calls can add dozens, past the
   lookback window).
3. ``system``: the last system block (or the last tool when there is no system): the prefix
   shared by every conversation of the same agent, so a new conversation starts with a read.
4. ``intermediate``: only when the blocks between ``previous`` (or the start) and ``newest``
   do not fit in two lookback windows; placed ``LOOKBACK_BLOCKS`` before ``newest`` so that
   every boundary in between is within reach of some breakpoint.
5. ``tools``: the last tool, when there is a system too (useful when the system prompt changes
   between conversations but the tools do not).

A candidate is dropped when its prefix is shorter than the model's minimum cacheable length
(:func:`min_cacheable_tokens`), when it already carries a client breakpoint, when the budget of
4 is spent, or when no TTL would keep the 1h-before-5m order. Markers are never put on thinking
or redacted-thinking blocks (the API refuses them) nor on empty text.

Why moving markers keeps the cache: Anthropic matches the *content* of the prefix, tools then
system then messages, up to a breakpoint, and ``cache_control`` itself is not part of what is
matched. The prompt-caching guide says so in two ways: the cache "automatically checks for cache
hits at all previous content block boundaries" (so an entry written at a block that carried a
marker is found from a later marker on a later block, where the old block no longer carries
one), and its automatic mode (top-level ``cache_control``) "moves [the breakpoint] forward as
conversations grow", which could never hit if the marker were part of the matched bytes. The
same is stated by implementers, e.g. iTerm2's nightly notes of 2026-06-22 ("excludes
cache_control from the cache key") and dwctl's cache simulator ("the hash excludes the
cache_control directive itself"). So for request k+1 (= request k plus new turns) the common
prefix is the same content as in request k; only the sliding markers moved.

The other bytes Ferrule changes are made identical every turn: a string ``system`` or a string
message ``content`` is always rewritten as one text block (whether or not it gets a marker), so a
message looks the same in every request that contains it.

Token counting: ``count_tokens`` receives each block's canonical JSON (without its
``cache_control``) and returns its tokens. The default, :func:`estimate_tokens`, counts one token
per 3 UTF-8 bytes of that JSON: it over-counts on purpose. The direction matters: a breakpoint on
a prefix that is in truth below the minimum costs nothing (the API silently does not cache it;
only a spare slot is used), whereas skipping one that was in truth long enough loses a whole
turn's savings. Anthropic's tokenizer is not public; real counts run at about 3 to 4 bytes per
token (code and JSON denser, English prose lighter), and the JSON syntax counted here adds more,
so the estimate stays on the placing side. (In the simulator, whose "true" count is one token per
4 bytes like Ferrule's simulated upstream, a 4-byte estimate skipped a few prompts just over
Opus's 4,096-token minimum and cost 0.6 points on the SWE-agent corpus.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .models import capabilities

__all__ = [
    "DEFAULT_MIN_TOKENS",
    "LOOKBACK_BLOCKS",
    "MAX_BREAKPOINTS",
    "Breakpoint",
    "estimate_tokens",
    "find_breakpoints",
    "min_cacheable_tokens",
    "place_breakpoints",
]

MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
TTLS = ("5m", "1h")

DEFAULT_MIN_TOKENS = 1024
"""For a model not in the table: the most common documented minimum. A breakpoint below a
model's real minimum is harmless (nothing is cached); a missing one costs a cache read."""

# Message block types that may carry cache_control (thinking blocks may not).
_CACHEABLE = frozenset({"text", "image", "document", "tool_use", "tool_result", "search_result"})


def min_cacheable_tokens(model: str) -> int:
    """The minimum cacheable prefix for ``model``: ``cache_min_tokens`` of the model table
    (``data/models.toml``; dated ids and aliases match), else :data:`DEFAULT_MIN_TOKENS`."""
    caps = capabilities(model)
    return caps.cache_min_tokens if caps is not None else DEFAULT_MIN_TOKENS


def estimate_tokens(text: str) -> int:
    """One token per three UTF-8 bytes, rounded up: deliberately generous (module docstring)."""
    return (len(text.encode("utf-8", "surrogatepass")) + 2) // 3


@dataclass(frozen=True)
class Breakpoint:
    """A breakpoint in a request: block ``position`` in the tools+system+messages sequence."""

    position: int
    ttl: str
    client: bool  # the client put it there (or it is the top-level ``cache_control``)


@dataclass
class _Slot:
    """One block of the prompt sequence and where it lives."""

    area: str  # "tools" | "system" | "messages"
    index: int  # index in tools / system / messages
    block_index: int  # index in the message's content (-1 otherwise)
    block: Mapping[str, Any]
    cacheable: bool


def _ttl_of(cc: Any) -> str:
    return "1h" if isinstance(cc, Mapping) and cc.get("ttl") == "1h" else "5m"


def _text_ok(block: Mapping[str, Any]) -> bool:
    text = block.get("text")
    return isinstance(text, str) and bool(text.strip())


def _normalized(body: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy with string ``system`` and string contents as one text block each."""
    out = dict(body)
    system = out.get("system")
    if isinstance(system, str):
        if system:
            out["system"] = [{"type": "text", "text": system}]
        else:
            out.pop("system")
    messages = out.get("messages")
    if isinstance(messages, list):
        fixed: list[Any] = []
        for message in messages:
            content = message.get("content") if isinstance(message, Mapping) else None
            # NOTE: "" stays "" (only a final assistant turn may be empty, and it is no block).
            if isinstance(content, str) and content:
                message = {**message, "content": [{"type": "text", "text": content}]}
            fixed.append(message)
        out["messages"] = fixed
    return out


def _slots(body: Mapping[str, Any]) -> list[_Slot]:
    slots: list[_Slot] = []
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        if isinstance(tool, Mapping):
            slots.append(_Slot("tools", i, -1, tool, True))
    system = body.get("system")
    for i, block in enumerate(system if isinstance(system, list) else []):
        if isinstance(block, Mapping):
            ok = block.get("type") == "text" and _text_ok(block)
            slots.append(_Slot("system", i, -1, block, ok))
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, Mapping) else None
        for j, block in enumerate(content if isinstance(content, list) else []):
            if isinstance(block, Mapping):
                kind = block.get("type")
                ok = kind in _CACHEABLE and (kind != "text" or _text_ok(block))
                slots.append(_Slot("messages", i, j, block, ok))
    return slots


def _client_marks(slots: list[_Slot], body: Mapping[str, Any]) -> list[Breakpoint]:
    """The client's breakpoints, including those nested in tool_result content and the
    top-level ``cache_control`` (automatic caching), which marks the last cacheable block."""
    marks: list[Breakpoint] = []
    for pos, slot in enumerate(slots):
        if "cache_control" in slot.block:
            marks.append(Breakpoint(pos, _ttl_of(slot.block["cache_control"]), True))
        inner = slot.block.get("content") if slot.block.get("type") == "tool_result" else None
        for part in inner if isinstance(inner, list) else []:
            if isinstance(part, Mapping) and "cache_control" in part:
                marks.append(Breakpoint(pos, _ttl_of(part["cache_control"]), True))
    if "cache_control" in body:
        last = max((p for p, s in enumerate(slots) if s.cacheable), default=len(slots) - 1)
        marks.append(Breakpoint(max(last, 0), _ttl_of(body["cache_control"]), True))
    return marks


def find_breakpoints(body: Mapping[str, Any]) -> list[Breakpoint]:
    """Every breakpoint a request carries, by block position (tools, system, messages order).

    Used by tests and the cache simulator; the positions match :func:`place_breakpoints`."""
    body = _normalized(body)
    return sorted(_client_marks(_slots(body), body), key=lambda b: b.position)


def _user_turns(slots: list[_Slot], body: Mapping[str, Any]) -> list[list[int]]:
    """Slot positions of each user turn (consecutive user messages form one turn), in order.

    A trailing assistant turn (a prefill) ends no user turn and is ignored."""
    messages = body.get("messages")
    roles = [
        m.get("role") if isinstance(m, Mapping) else None
        for m in (messages if isinstance(messages, list) else [])
    ]
    turns: list[list[int]] = []
    previous_role: Any = None
    for pos, slot in enumerate(slots):
        if slot.area != "messages":
            continue
        role = roles[slot.index]
        if role == "user":
            if previous_role != "user":
                turns.append([])
            turns[-1].append(pos)
        previous_role = role
    return turns


def _last_cacheable(slots: list[_Slot], positions: list[int]) -> int | None:
    return next((p for p in reversed(positions) if slots[p].cacheable), None)


def _candidates(slots: list[_Slot], body: Mapping[str, Any]) -> list[int]:
    """Candidate positions in priority order (see the module docstring)."""
    turns = _user_turns(slots, body)
    newest = _last_cacheable(slots, turns[-1]) if turns else None
    previous = _last_cacheable(slots, turns[-2]) if len(turns) > 1 else None
    tool_pos = [p for p, s in enumerate(slots) if s.area == "tools"]
    system_pos = [p for p, s in enumerate(slots) if s.area == "system"]
    last_tool = _last_cacheable(slots, tool_pos)
    last_system = _last_cacheable(slots, system_pos)
    head = last_system if last_system is not None else last_tool

    out: list[int] = []
    if newest is not None:
        out.append(newest)
    if previous is not None:
        out.append(previous)
    if head is not None:
        out.append(head)
    if newest is not None:
        base = previous if previous is not None else (head if head is not None else -1)
        if newest - base > LOOKBACK_BLOCKS + 1:
            # Every boundary between base and newest should be within LOOKBACK_BLOCKS of a
            # breakpoint: newest covers [newest - LOOKBACK_BLOCKS, newest], so put one more
            # just below that window.
            below = list(range(base + 1, newest - LOOKBACK_BLOCKS + 1))
            middle = _last_cacheable(slots, below)
            if middle is not None:
                out.append(middle)
    if last_system is not None and last_tool is not None:
        out.append(last_tool)
    return out


def _ttl_for(position: int, wanted: str, client: list[Breakpoint]) -> str | None:
    """The TTL a new breakpoint at ``position`` may have next to the client's, or None.

    1h breakpoints must all come before 5m ones: a new one before a client 1h must be 1h
    (costs nothing more: those tokens are written at the 1h rate by the client's breakpoint
    anyway), and one after a client 5m must be 5m."""
    must_1h = any(b.ttl == "1h" and b.position > position for b in client)
    must_5m = any(b.ttl == "5m" and b.position < position for b in client)
    if must_1h and must_5m:
        return None  # the client's own order is already invalid: do not add to it
    if must_1h:
        return "1h"
    if must_5m:
        return "5m"
    return wanted


def _mark(body: dict[str, Any], slot: _Slot, ttl: str) -> None:
    """Set cache_control on one block, copying only the containers on its path."""
    cc: dict[str, str] = {"type": "ephemeral"}
    if ttl == "1h":
        cc["ttl"] = "1h"
    if slot.area in ("tools", "system"):
        items = list(body[slot.area])
        items[slot.index] = {**items[slot.index], "cache_control": cc}
        body[slot.area] = items
        return
    messages = list(body["messages"])
    message = dict(messages[slot.index])
    content = list(message["content"])
    content[slot.block_index] = {**content[slot.block_index], "cache_control": cc}
    message["content"] = content
    messages[slot.index] = message
    body["messages"] = messages


def place_breakpoints(
    body: Mapping[str, Any],
    *,
    ttl: str = "5m",
    count_tokens: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """The request with Ferrule's breakpoints added (see the module docstring).

    ``body`` is not modified; the result shares every block it did not have to change.
    ``ttl`` is ``"5m"`` or ``"1h"``. Deterministic: the same body always gives the same result.
    """
    if ttl not in TTLS:
        raise ValueError(f"ttl must be one of {', '.join(TTLS)}, not {ttl!r}")
    out = _normalized(body)
    slots = _slots(out)
    client = _client_marks(slots, out)
    budget = MAX_BREAKPOINTS - len(client)
    if budget <= 0 or not slots:
        return dict(body)
    count = count_tokens or estimate_tokens
    cumulative: list[int] = []
    total = 0
    for slot in slots:
        plain = {k: v for k, v in slot.block.items() if k != "cache_control"}
        total += count(orjson.dumps(plain, option=orjson.OPT_NON_STR_KEYS).decode())
        cumulative.append(total)
    model = out.get("model")
    minimum = min_cacheable_tokens(model if isinstance(model, str) else "")
    taken = {b.position for b in client}
    chosen: dict[int, str] = {}
    for position in _candidates(slots, out):
        if len(chosen) >= budget:
            break
        if position in taken or position in chosen or cumulative[position] < minimum:
            continue
        position_ttl = _ttl_for(position, ttl, client)
        if position_ttl is not None:
            chosen[position] = position_ttl
    if not chosen:
        # Nothing to add: hand back the caller's own body, so a request Ferrule does not change
        # is forwarded byte for byte (the normalized copy would re-spell string contents).
        return dict(body)
    for position, position_ttl in sorted(chosen.items()):
        _mark(out, slots[position], position_ttl)
    return out
