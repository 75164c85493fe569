"""The stored form of an answer, and the two ways back out of it.

One canonical form serves every request shape: the complete Anthropic message, exactly as the
non-streaming Messages API returns it (``{"id", "type": "message", "role", "model", "content",
"stop_reason", "stop_sequence", "usage", ...}``), serialized compactly by orjson.

- A non-streaming upstream answer is checked and stored by :func:`storable_json`.
- A streaming upstream answer is rebuilt by :class:`MessageAccumulator`, fed the same raw SSE
  bytes the route forwards; it yields bytes to store only for a stream that reached
  ``message_stop`` with no error, no protocol violation, no unfinished block and no size overrun.
  Errors, cancelled, truncated and failed streams never produce a storable value.
- On a hit, :func:`load_message` parses the value; a ``stream: false`` request gets the message
  itself (Anthropic route) or ``ferrule.translate.response.to_openai`` of it (OpenAI route), and a
  ``stream: true`` request gets :func:`message_to_sse`: a valid Anthropic event stream that the
  Anthropic route sends as is and the OpenAI route feeds through the usual
  ``backend.StreamTranslator``. So a hit is rendered by the same code as a live answer.

Usage on a hit (:func:`hit_usage`): the ORIGINAL usage numbers, unchanged. They remain true facts
about this request (how large the prompt is, how long the answer) and clients that track context
size or tokens per answer keep working. What they no longer describe is a charge: nothing was
billed upstream for a hit. The response says so with ``x-cache: HIT``, and the ledger records the
request as a hit with zero upstream cost (the original numbers then measure what the cache
saved). Rewriting the numbers to zero instead would make a hit look like an empty prompt, and
inventing "cache read" numbers would claim an Anthropic prompt-cache read that never happened.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Protocol

import orjson

from .. import backend
from .._pure.stream import ANTHROPIC_EVENTS

__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "MessageAccumulator",
    "hit_usage",
    "load_message",
    "message_to_sse",
    "storable_json",
]

DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""Streams larger than this (raw SSE bytes) are relayed but not stored."""

_TEXT_PIECE = 64  # characters per synthesized text/thinking delta
_JSON_PIECE = 64  # characters per synthesized input_json_delta
_TOOL_USE_TYPES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})

State = Literal["streaming", "complete", "failed"]


class _Decoder(Protocol):
    def feed(self, chunk: bytes) -> list[tuple[str, str, str]]: ...


def _is_message(msg: Any) -> bool:
    """The shape of a complete Messages API answer (what we are willing to store)."""
    return (
        isinstance(msg, dict)
        and msg.get("type") == "message"
        and msg.get("role") == "assistant"
        and isinstance(msg.get("content"), list)
        and all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in msg["content"])
        and isinstance(msg.get("stop_reason"), str)
    )


def storable_json(raw: bytes) -> bytes | None:
    """The value to store for a non-streaming 200 answer, or None when it is not a complete
    message (not JSON, an error envelope, no stop reason...)."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return orjson.dumps(msg) if _is_message(msg) else None


def load_message(value: bytes) -> dict[str, Any] | None:
    """A stored value back as a message, or None when it is unreadable (treat as a miss)."""
    try:
        msg = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return msg if _is_message(msg) else None


def hit_usage(message: dict[str, Any]) -> dict[str, Any]:
    """The usage to report on a hit: a copy of the original (see the module docstring)."""
    usage = message.get("usage")
    return copy.deepcopy(usage) if isinstance(usage, dict) else {}


class MessageAccumulator:
    """Rebuilds the complete message from a raw Anthropic SSE stream, chunk by chunk.

    ``feed()`` never raises and never changes the bytes (the route still forwards them itself).
    Read ``state`` (``"streaming"``, ``"complete"``, ``"failed"``), ``error`` (why it failed) and
    :meth:`storable` (bytes to store, or None). Anything unexpected fails the accumulator rather
    than guessing: a cache must only ever replay answers it fully understood.
    """

    __slots__ = ("_blocks", "_decoder", "_fed", "_json", "_max", "_msg", "_open", "error", "state")

    def __init__(
        self, *, max_bytes: int = DEFAULT_MAX_ANSWER_BYTES, decoder: _Decoder | None = None
    ) -> None:
        self._decoder: _Decoder = decoder if decoder is not None else backend.SseDecoder()
        self._max = max_bytes
        self._fed = 0
        self._msg: dict[str, Any] | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._open: set[int] = set()
        self._json: dict[int, list[str]] = {}  # tool block index -> partial_json pieces
        self.state: State = "streaming"
        self.error: str | None = None

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def feed(self, chunk: bytes) -> None:
        if self.state != "streaming":
            return
        self._fed += len(chunk)
        if self._max and self._fed > self._max:
            self._fail(f"answer larger than {self._max} bytes")
            return
        try:
            events = self._decoder.feed(chunk)
        except ValueError as exc:  # SseError (both backends subclass ValueError)
            self._fail(f"SSE: {exc}")
            return
        for event, data, _id in events:
            self._event(event, data)
            if self.state != "streaming":
                return

    def message(self) -> dict[str, Any]:
        """The rebuilt message. Raises ValueError unless the stream completed."""
        if self.state != "complete" or self._msg is None:
            raise ValueError(f"the stream is {self.state}: {self.error or 'not finished'}")
        return self._msg

    def storable(self) -> bytes | None:
        """The value to store, or None unless the stream completed cleanly."""
        return orjson.dumps(self._msg) if self.state == "complete" else None

    # -- events ----------------------------------------------------------------------------

    def _fail(self, why: str) -> None:
        self.state = "failed"
        self.error = why
        self._blocks.clear()
        self._json.clear()
        self._msg = None

    def _event(self, event: str, data: str) -> None:
        if event == "ping":
            return
        if event not in _EVENTS:
            return  # unknown events are ignored, as Anthropic's versioning policy asks
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail(f"invalid JSON in {event}")
            return
        if not isinstance(obj, dict):
            self._fail(f"{event} is not an object")
            return
        if event == "error":
            err = obj.get("error")
            detail = err.get("type") if isinstance(err, dict) else None
            self._fail(f"upstream error event: {detail or 'unknown'}")
            return
        if event == "message_start":
            msg = obj.get("message")
            if self._msg is not None or not isinstance(msg, dict):
                self._fail("bad or repeated message_start")
                return
            self._msg = {k: copy.deepcopy(v) for k, v in msg.items() if k != "content"}
            self._msg["content"] = []
            return
        if self._msg is None:
            self._fail(f"{event} before message_start")
            return
        if event == "content_block_start":
            self._block_start(obj)
        elif event == "content_block_delta":
            self._block_delta(obj)
        elif event == "content_block_stop":
            self._block_stop(obj)
        elif event == "message_delta":
            self._message_delta(obj)
        elif event == "message_stop":
            self._message_stop()

    def _index(self, obj: dict[str, Any]) -> int | None:
        index = obj.get("index")
        if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
            return index
        self._fail("event without a valid index")
        return None

    def _block_start(self, obj: dict[str, Any]) -> None:
        index = self._index(obj)
        block = obj.get("content_block")
        if index is None:
            return
        if index in self._blocks or not isinstance(block, dict):
            self._fail(f"bad content_block_start at index {index}")
            return
        self._blocks[index] = copy.deepcopy(block)
        self._open.add(index)
        if block.get("type") in _TOOL_USE_TYPES:
            self._json[index] = []

    def _block_delta(self, obj: dict[str, Any]) -> None:
        index = self._index(obj)
        delta = obj.get("delta")
        if index is None:
            return
        if index not in self._open or not isinstance(delta, dict):
            self._fail(f"delta for a block that is not open (index {index})")
            return
        block = self._blocks[index]
        kind = delta.get("type")
        if kind == "text_delta" and block.get("type") == "text":
            self._append(block, "text", delta.get("text"))
        elif kind == "thinking_delta" and block.get("type") == "thinking":
            self._append(block, "thinking", delta.get("thinking"))
        elif kind == "signature_delta" and block.get("type") == "thinking":
            self._append(block, "signature", delta.get("signature"))
        elif kind == "input_json_delta" and index in self._json:
            part = delta.get("partial_json")
            if not isinstance(part, str):
                self._fail("input_json_delta without partial_json")
                return
            self._json[index].append(part)
        elif kind == "citations_delta" and block.get("type") == "text":
            citation = delta.get("citation")
            citations = block.setdefault("citations", [])
            if not isinstance(citations, list):
                citations = block["citations"] = []
            citations.append(copy.deepcopy(citation))
        else:
            # NOTE: an unknown delta type might carry content we would drop: do not store.
            self._fail(f"unexpected {kind!r} delta for a {block.get('type')!r} block")

    def _append(self, block: dict[str, Any], field: str, piece: Any) -> None:
        if not isinstance(piece, str):
            self._fail(f"{field} delta is not a string")
            return
        current = block.get(field)
        block[field] = (current if isinstance(current, str) else "") + piece

    def _block_stop(self, obj: dict[str, Any]) -> None:
        index = self._index(obj)
        if index is None:
            return
        if index not in self._open:
            self._fail(f"content_block_stop for a block that is not open (index {index})")
            return
        self._open.discard(index)
        pieces = self._json.pop(index, None)
        if pieces:
            text = "".join(pieces)
            if text:
                try:
                    tool_input = orjson.loads(text)
                except orjson.JSONDecodeError:
                    self._fail(f"tool input at index {index} is not valid JSON")
                    return
                self._blocks[index]["input"] = tool_input

    def _message_delta(self, obj: dict[str, Any]) -> None:
        assert self._msg is not None
        delta = obj.get("delta")
        if isinstance(delta, dict):
            for key, value in delta.items():
                self._msg[key] = copy.deepcopy(value)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            merged = self._msg.get("usage")
            if not isinstance(merged, dict):
                merged = self._msg["usage"] = {}
            # Anthropic's counts are cumulative: later values replace earlier ones.
            for key, value in usage.items():
                if value is not None or key not in merged:
                    merged[key] = copy.deepcopy(value)

    def _message_stop(self) -> None:
        assert self._msg is not None
        if self._open:
            self._fail("message_stop with blocks still open")
            return
        indexes = sorted(self._blocks)
        if indexes != list(range(len(indexes))):
            self._fail("content block indexes are not contiguous")
            return
        if not isinstance(self._msg.get("stop_reason"), str):
            self._fail("message_stop without a stop_reason")
            return
        self._msg["content"] = [self._blocks[i] for i in indexes]
        # The non-streaming API's field order (JSON does not care; people reading it do).
        first = [k for k in _FIELD_ORDER if k in self._msg]
        rest = [k for k in self._msg if k not in _FIELD_ORDER and k != "usage"]
        self._msg = {k: self._msg[k] for k in [*first, *rest, "usage"] if k in self._msg}
        if not _is_message(self._msg):
            self._fail("the rebuilt message is not a complete message")
            return
        self.state = "complete"


_FIELD_ORDER = (
    "id",
    "type",
    "role",
    "model",
    "content",
    "stop_reason",
    "stop_sequence",
    "stop_details",
)
_EVENTS = ANTHROPIC_EVENTS


# -- replay -------------------------------------------------------------------------------------


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    kind = block.get("type")
    out: list[bytes] = []

    def delta(d: dict[str, Any]) -> None:
        out.append(
            _event(
                "content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}
            )
        )

    if kind == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        start.update({k: v for k, v in block.items() if k not in ("type", "text", "citations")})
        out.append(_event("content_block_start", _start(index, start)))
        citations = block.get("citations")
        for citation in citations if isinstance(citations, list) else []:
            delta({"type": "citations_delta", "citation": citation})
        for piece in _pieces(str(block.get("text", "")), _TEXT_PIECE):
            delta({"type": "text_delta", "text": piece})
    elif kind == "thinking":
        out.append(
            _event(
                "content_block_start",
                _start(index, {"type": "thinking", "thinking": "", "signature": ""}),
            )
        )
        for piece in _pieces(str(block.get("thinking", "")), _TEXT_PIECE):
            delta({"type": "thinking_delta", "thinking": piece})
        delta({"type": "signature_delta", "signature": str(block.get("signature", ""))})
    elif kind in _TOOL_USE_TYPES:
        start = {k: v for k, v in block.items() if k != "input"}
        start["input"] = {}
        out.append(_event("content_block_start", _start(index, start)))
        # The API opens a tool input with an empty fragment, then streams the JSON in pieces.
        delta({"type": "input_json_delta", "partial_json": ""})
        text = orjson.dumps(block.get("input", {})).decode()
        for piece in _pieces(text, _JSON_PIECE):
            delta({"type": "input_json_delta", "partial_json": piece})
    else:
        # redacted_thinking, server tool results, future types: the API sends them whole in
        # content_block_start, with no deltas.
        out.append(_event("content_block_start", _start(index, block)))
    out.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def _start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def message_to_sse(message: dict[str, Any]) -> bytes:
    """A complete Anthropic event stream that rebuilds ``message``: ``message_start``, a ``ping``
    (parsers must skip it; sending one keeps them honest), each
    block as start / deltas / stop, ``message_delta``
    (stop reason, stop sequence, cumulative usage) and ``message_stop``."""
    usage = message.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    output = usage.get("output_tokens")
    start_usage = dict(usage)
    if isinstance(output, int):
        start_usage["output_tokens"] = min(1, output)  # as the API: output counts come last
    head = {k: v for k, v in message.items() if k not in ("content", "usage", "stop_details")}
    head["content"] = []
    head["stop_reason"] = None
    head["stop_sequence"] = None
    head["usage"] = start_usage
    parts = [
        _event("message_start", {"type": "message_start", "message": head}),
        _event("ping", {"type": "ping"}),
    ]
    content = message.get("content")
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    for index, block in enumerate(blocks):
        parts.extend(_block_events(index, block))
    delta: dict[str, Any] = {
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
    }
    if "stop_details" in message:
        delta["stop_details"] = message["stop_details"]
    parts.append(_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    parts.append(_event("message_stop", {"type": "message_stop"}))
    return b"".join(parts)
