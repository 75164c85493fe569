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

from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from . import jsonbody
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
    "place_breakpoints_json",
]

MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
TTLS = ("5m", "1h")
_SLICE = 512  # messages normalized and written at a time by place_breakpoints_json

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


def _ttl_of(cc: Any) -> str:
    return "1h" if isinstance(cc, Mapping) and cc.get("ttl") == "1h" else "5m"


def _text_ok(block: Mapping[str, Any]) -> bool:
    text = block.get("text")
    return isinstance(text, str) and bool(text.strip())


def _is_map(value: Any) -> bool:
    return value.__class__ is dict or isinstance(value, Mapping)


def _cacheable(block: Mapping[str, Any]) -> bool:
    kind = block.get("type")
    return kind in _CACHEABLE and (kind != "text" or _text_ok(block))


def _normal_message(message: Any) -> Any:
    """A message with a non-empty string content as one text block (else the message itself).
    NOTE: "" stays "" (only a final assistant turn may be empty, and it is no block)."""
    content = message.get("content") if _is_map(message) else None
    if isinstance(content, str) and content:
        return {**message, "content": [{"type": "text", "text": content}]}
    return message


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
        out["messages"] = [_normal_message(message) for message in messages]
    return out


class _Prompt:
    """The prompt as one sequence of blocks (tools, then system blocks, then message blocks),
    positions numbered from 0, as the body will look once normalized (a non-empty string
    ``system`` or message ``content`` is one text block; entries that are not objects are no
    block).

    Built in one pass that keeps only integers (where each message's blocks start), never an
    object per block. One long-lived object per block (the old ``_Slot``, plus a normalized copy
    of every message) made the garbage collector rescan the whole request again and again while
    they piled up: that is what made placement super-linear (~3 s for 400,000 messages, ~7 s for
    800,000). Placement on a request of a million blocks now allocates almost nothing."""

    __slots__ = (
        "messages",
        "n_head",
        "n_tools",
        "starts",
        "system",
        "system_index",
        "tool_index",
        "tools",
        "total",
    )

    def __init__(self, body: Mapping[str, Any]) -> None:
        tools = body.get("tools")
        self.tools: list[Any] = tools if isinstance(tools, list) else []
        self.tool_index = [i for i, tool in enumerate(self.tools) if _is_map(tool)]
        self.n_tools = len(self.tool_index)
        system = body.get("system")
        self.system: list[Mapping[str, Any]] = []
        self.system_index: list[int] = []
        if isinstance(system, str):
            if system:
                self.system = [{"type": "text", "text": system}]
                self.system_index = [0]
        elif isinstance(system, list):
            self.system_index = [i for i, block in enumerate(system) if _is_map(block)]
            self.system = [system[i] for i in self.system_index]
        self.n_head = self.n_tools + len(self.system)
        messages = body.get("messages")
        self.messages: list[Any] = messages if isinstance(messages, list) else []
        # starts[i]: position of message i's first block; starts[-1]: one past the last block
        starts = [0] * (len(self.messages) + 1)
        pos = self.n_head
        for i, message in enumerate(self.messages):
            starts[i] = pos
            content = message.get("content") if _is_map(message) else None
            if content.__class__ is str:
                if content:
                    pos += 1
            elif isinstance(content, list):
                for block in content:
                    if block.__class__ is dict or isinstance(block, Mapping):
                        pos += 1
        starts[-1] = pos
        self.starts = starts
        self.total = pos

    def message_blocks(self, i: int) -> list[tuple[int, Mapping[str, Any]]]:
        """(index in the normalized content, block) of message ``i``'s blocks."""
        message = self.messages[i]
        content = message.get("content") if _is_map(message) else None
        if isinstance(content, str):
            return [(0, {"type": "text", "text": content})] if content else []
        if isinstance(content, list):
            return [(j, block) for j, block in enumerate(content) if _is_map(block)]
        return []

    def message_of(self, pos: int) -> int:
        """The message holding the block at message position ``pos``."""
        return bisect_right(self.starts, pos, 0, len(self.messages)) - 1

    def locate(self, pos: int) -> tuple[str, int, int, Mapping[str, Any]]:
        """(area, index in tools/system/messages, index in the content or -1, block)."""
        if pos < self.n_tools:
            index = self.tool_index[pos]
            return "tools", index, -1, self.tools[index]
        if pos < self.n_head:
            k = pos - self.n_tools
            return "system", self.system_index[k], -1, self.system[k]
        i = self.message_of(pos)
        j, block = self.message_blocks(i)[pos - self.starts[i]]
        return "messages", i, j, block

    def cacheable(self, pos: int, block: Mapping[str, Any]) -> bool:
        if pos < self.n_tools:
            return True
        if pos < self.n_head:
            return block.get("type") == "text" and _text_ok(block)
        kind = block.get("type")
        return kind in _CACHEABLE and (kind != "text" or _text_ok(block))

    def in_order(self) -> Iterator[tuple[int, Mapping[str, Any]]]:
        """(position, block) from the first block on."""
        for pos in range(self.n_head):
            yield pos, self.locate(pos)[3]
        for i in range(len(self.messages)):
            for k, (_, block) in enumerate(self.message_blocks(i)):
                yield self.starts[i] + k, block

    def last_cacheable(self, lo: int, hi: int) -> int | None:
        """The last position in ``lo``..``hi - 1`` whose block may carry a breakpoint."""
        pos = min(hi, self.total) - 1
        lo = max(lo, 0)
        while pos >= lo:
            if pos < self.n_head:
                if self.cacheable(pos, self.locate(pos)[3]):
                    return pos
                pos -= 1
                continue
            i = self.message_of(pos)
            blocks = self.message_blocks(i)
            for k in range(pos - self.starts[i], -1, -1):
                if self.starts[i] + k < lo:
                    return None
                if self.cacheable(self.starts[i] + k, blocks[k][1]):
                    return self.starts[i] + k
            pos = self.starts[i] - 1
        return None


def _client_marks(prompt: _Prompt, body: Mapping[str, Any]) -> list[Breakpoint]:
    """The client's breakpoints, including those nested in tool_result content and the
    top-level ``cache_control`` (automatic caching), which marks the last cacheable block."""
    marks: list[Breakpoint] = []

    def check(pos: int, block: Mapping[str, Any]) -> None:
        if "cache_control" in block:
            marks.append(Breakpoint(pos, _ttl_of(block["cache_control"]), True))
        inner = block.get("content") if block.get("type") == "tool_result" else None
        if isinstance(inner, list):
            for part in inner:
                if _is_map(part) and "cache_control" in part:
                    marks.append(Breakpoint(pos, _ttl_of(part["cache_control"]), True))

    for pos in range(prompt.n_head):
        check(pos, prompt.locate(pos)[3])
    for i, message in enumerate(prompt.messages):
        # a string content has no breakpoint: only lists are looked at, block by block
        content = message.get("content") if _is_map(message) else None
        if not isinstance(content, list):
            continue
        pos = prompt.starts[i]
        for block in content:
            if block.__class__ is dict or isinstance(block, Mapping):
                if "cache_control" in block or block.get("type") == "tool_result":
                    check(pos, block)
                pos += 1
    if "cache_control" in body:
        last = prompt.last_cacheable(0, prompt.total)
        marks.append(
            Breakpoint(
                max(last if last is not None else prompt.total - 1, 0),
                _ttl_of(body["cache_control"]),
                True,
            )
        )
    return marks


def find_breakpoints(body: Mapping[str, Any]) -> list[Breakpoint]:
    """Every breakpoint a request carries, by block position (tools, system, messages order).

    Used by tests and the cache simulator; the positions match :func:`place_breakpoints`."""
    return sorted(_client_marks(_Prompt(body), body), key=lambda b: b.position)


def _user_turns(prompt: _Prompt, want: int) -> list[tuple[int, int]]:
    """The last ``want`` user turns, newest first, each as a (first, end) range of positions.

    A turn is a run of consecutive user messages, counting only messages that have a block (so
    an empty assistant message does not split one). A trailing assistant turn (a prefill) ends
    no user turn and is ignored."""
    turns: list[tuple[int, int]] = []
    end = -1  # one past the last block of the turn being collected, -1 when none
    first = 0
    i = len(prompt.messages) - 1
    while i >= 0 and len(turns) < want:
        starts = prompt.starts
        if starts[i + 1] > starts[i]:  # the message has blocks
            message = prompt.messages[i]
            role = message.get("role") if _is_map(message) else None
            if role == "user":
                if end < 0:
                    end = starts[i + 1]
                first = starts[i]
            elif end >= 0:
                turns.append((first, end))
                end = -1
        i -= 1
    if end >= 0 and len(turns) < want:
        turns.append((first, end))
    return turns


def _candidates(prompt: _Prompt) -> list[int]:
    """Candidate positions in priority order (see the module docstring)."""
    turns = _user_turns(prompt, 2)
    newest = prompt.last_cacheable(*turns[0]) if turns else None
    previous = prompt.last_cacheable(*turns[1]) if len(turns) > 1 else None
    last_tool = prompt.last_cacheable(0, prompt.n_tools)
    last_system = prompt.last_cacheable(prompt.n_tools, prompt.n_head)
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
            middle = prompt.last_cacheable(base + 1, newest - LOOKBACK_BLOCKS + 1)
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


def _control(ttl: str) -> dict[str, str]:
    return {"type": "ephemeral", "ttl": "1h"} if ttl == "1h" else {"type": "ephemeral"}


def _mark(body: dict[str, Any], area: str, index: int, block_index: int, ttl: str) -> None:
    """Set cache_control on one block of a normalized body, copying only the containers on
    its path."""
    if area in ("tools", "system"):
        items = list(body[area])
        items[index] = {**items[index], "cache_control": _control(ttl)}
        body[area] = items
        return
    messages = body["messages"]
    message = dict(messages[index])
    content = list(message["content"])
    content[block_index] = {**content[block_index], "cache_control": _control(ttl)}
    message["content"] = content
    messages[index] = message  # the normalized copy's own list: no need to copy it again


def _reaches(
    prompt: _Prompt, minimum: int, count_tokens: Callable[[str], int] | None
) -> int | None:
    """The first position whose prefix (tools, system, messages up to and including it) holds
    at least ``minimum`` tokens, or None. Counting stops there: a long prompt is counted only
    up to the minimum, not to its end."""
    total = 0
    for pos, block in prompt.in_order():
        plain = (
            {k: v for k, v in block.items() if k != "cache_control"}
            if "cache_control" in block
            else block
        )
        data = orjson.dumps(plain, option=orjson.OPT_NON_STR_KEYS)
        # estimate_tokens on the decoded text counts these same UTF-8 bytes
        total += count_tokens(data.decode()) if count_tokens else (len(data) + 2) // 3
        if total >= minimum:
            return pos
    return None


def _plan(
    body: Mapping[str, Any], ttl: str, count_tokens: Callable[[str], int] | None
) -> tuple[_Prompt, dict[int, str]]:
    """The prompt's index and Ferrule's new breakpoints (position -> TTL), maybe none."""
    if ttl not in TTLS:
        raise ValueError(f"ttl must be one of {', '.join(TTLS)}, not {ttl!r}")
    prompt = _Prompt(body)
    client = _client_marks(prompt, body)
    budget = MAX_BREAKPOINTS - len(client)
    chosen: dict[int, str] = {}
    if budget <= 0 or not prompt.total:
        return prompt, chosen
    model = body.get("model")
    reached = _reaches(
        prompt, min_cacheable_tokens(model if isinstance(model, str) else ""), count_tokens
    )
    if reached is None:
        return prompt, chosen
    taken = {b.position for b in client}
    for position in _candidates(prompt):
        if len(chosen) >= budget:
            break
        if position in taken or position in chosen or position < reached:
            continue
        position_ttl = _ttl_for(position, ttl, client)
        if position_ttl is not None:
            chosen[position] = position_ttl
    return prompt, chosen


def place_breakpoints(
    body: Mapping[str, Any],
    *,
    ttl: str = "5m",
    count_tokens: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """The request with Ferrule's breakpoints added (see the module docstring).

    ``body`` is not modified; the result shares every block it did not have to change.
    ``ttl`` is ``"5m"`` or ``"1h"``. Deterministic: the same body always gives the same result.
    Linear in the number of blocks, with no object made per block (see :class:`_Prompt`).
    """
    prompt, chosen = _plan(body, ttl, count_tokens)
    if not chosen:
        # Nothing to add: hand back the caller's own body, so a request Ferrule does not change
        # is forwarded byte for byte (the normalized copy would re-spell string contents).
        return dict(body)
    out = _normalized(body)
    for position, position_ttl in sorted(chosen.items()):
        area, index, block_index, _ = prompt.locate(position)
        _mark(out, area, index, block_index, position_ttl)
    return out


def place_breakpoints_json(
    body: Mapping[str, Any],
    *,
    ttl: str = "5m",
    count_tokens: Callable[[str], int] | None = None,
) -> bytes | None:
    """``orjson.dumps(place_breakpoints(body, ...))``, or None when no breakpoint is added
    (the body goes as it is).

    For large requests: the normalized, marked messages are made and written
    :data:`_SLICE` at a time and dropped, so no copy of the whole request is ever held (a
    normalized copy of a million string-content messages is ~500 MB that the garbage collector
    rescans), and no single orjson call writes the whole request (see ``ferrule.jsonbody``)."""
    prompt, chosen = _plan(body, ttl, count_tokens)
    if not chosen:
        return None
    if not all(key.__class__ is str for key in body):
        return orjson.dumps(place_breakpoints(body, ttl=ttl, count_tokens=count_tokens))
    marked: dict[tuple[str, int], dict[int, str]] = {}
    for position, position_ttl in chosen.items():
        area, index, block_index, _ = prompt.locate(position)
        marked.setdefault((area, index), {})[block_index] = position_ttl
    head = _normalized({k: body[k] for k in ("tools", "system") if k in body})
    for (area, index), blocks in marked.items():
        if area != "messages":
            _mark(head, area, index, -1, blocks[-1])
    parts = [b"{"]
    for key, value in body.items():
        if key == "system" and "system" not in head:
            continue  # an empty string system is left out, as _normalized does
        if len(parts) > 1:
            parts.append(b",")
        parts.append(orjson.dumps(key))
        parts.append(b":")
        if key in ("tools", "system"):
            parts.append(orjson.dumps(head[key]))
        elif key == "messages" and isinstance(value, list):
            parts.append(b"[")
            for start in range(0, len(value), _SLICE):
                chunk = [_normal_message(m) for m in value[start : start + _SLICE]]
                for offset, message in enumerate(chunk):
                    marks = marked.get(("messages", start + offset))
                    if marks:
                        content = list(message["content"])
                        for j, position_ttl in marks.items():
                            content[j] = {**content[j], "cache_control": _control(position_ttl)}
                        chunk[offset] = {**message, "content": content}
                if start:
                    parts.append(b",")
                parts.append(jsonbody.dumps(chunk)[1:-1])
            parts.append(b"]")
        else:
            parts.append(jsonbody.dumps(value))
    parts.append(b"}")
    return b"".join(parts)
