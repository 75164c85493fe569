"""Anthropic Messages SSE -> OpenAI Chat Completions SSE (pure-Python twin of
``ferrule._native.StreamTranslator``).

One ``feed()`` call takes a raw upstream network chunk and returns the bytes to send to the client,
so the proxy does one call per chunk whatever the backend. The output is built from fixed templates
(never a generic serializer) so the two backends agree byte for byte; strings are escaped by orjson
here and by serde_json in Rust, which escape identically (checked by the differential tests).

Rules (../shared/reference/translation.md, "Response (streaming)"):
- every chunk shares ``id`` (``chatcmpl-`` + the Anthropic message id), ``created`` and ``model``;
- ``message_start`` gives the first chunk, carrying ``delta.role``;
- text deltas -> ``delta.content``; thinking deltas -> ``delta.reasoning_content``;
- each ``tool_use`` block gets an ``index`` counting tool calls only; its first delta carries
  ``id``/``type``/``function.name``, later ones only ``function.arguments`` fragments;
- exactly one chunk carries ``finish_reason``, sent at ``message_stop``; with ``include_usage`` one
  more chunk (``choices: []``) carries the usage; then ``data: [DONE]``;
- an upstream ``error`` event becomes ``data: {"error": ...}`` and the stream ends without ``[DONE]``;
- a stream that ends without ``message_stop`` (``finish()``) ends with an error the same way;
- ``ping`` and unknown events are dropped; nothing is emitted after the stream is closed.
- with ``json_tool`` (``response_format`` emulated by a forced tool), the ``tool_use`` block of
  that name streams its input as ``delta.content``, takes no tool index, and its ``tool_use`` stop
  finishes as ``stop`` when no real tool was called.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import orjson

from .sse import SseDecoder, SseError

__all__ = ["ANTHROPIC_EVENTS", "StreamKernel", "StreamTranslator", "finish_reason_for"]

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Usage fields in the order of the ``usage`` tuple.
_USAGE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)
_U64 = 1 << 64


def finish_reason_for(stop_reason: str | None) -> str:
    """OpenAI ``finish_reason`` for an Anthropic ``stop_reason`` (unknown or absent -> ``stop``)."""
    if stop_reason is None:
        return "stop"
    return _FINISH_REASONS.get(stop_reason, "stop")


def _count(value: object) -> int | None:
    """A token count as Anthropic sends it, or None for anything that is not a u64."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64:
        return value
    return None


class StreamKernel(ABC):
    """What the Anthropic stream kernels share (``StreamTranslator``, ``ResponsesStreamEncoder``):
    SSE decoding, the event preamble and the attributes the proxy reads.

    After each call the proxy may read: ``started`` (``message_start`` seen, so bytes went out),
    ``done`` (no more output will come), ``outcome`` (``"streaming"``, ``"complete"``,
    ``"upstream_error"``, ``"truncated"`` or ``"protocol_error"``), ``error`` (``(type, message)``
    when the outcome is an error), ``message_id``, ``stop_reason`` and ``usage`` (input,
    cache-creation, cache-read, output, 5-minute cache-write, 1-hour cache-write tokens).

    Each event is checked the same way: ``ping`` and unknown events are skipped unparsed; invalid
    JSON, a non-object, an event before ``message_start`` or an over-limit SSE event is a
    ``protocol_error``; an ``error`` event is an ``upstream_error``; a repeated ``message_start``
    is ignored. A subclass writes its output in ``_start`` (after ``message_start``), ``_on``
    (every later event) and ``_fail`` (the terminal error).
    """

    __slots__ = (
        "_decoder",
        "_usage",
        "done",
        "error",
        "message_id",
        "outcome",
        "started",
        "stop_reason",
    )

    def __init__(self, max_event_bytes: int) -> None:
        self._decoder = SseDecoder(max_line_bytes=max_event_bytes, max_event_bytes=max_event_bytes)
        self._usage = [0, 0, 0, 0, 0, 0]
        self.started = False
        self.done = False
        self.outcome = "streaming"
        self.error: tuple[str, str] | None = None
        self.message_id: str | None = None
        self.stop_reason: str | None = None

    @property
    def usage(self) -> tuple[int, int, int, int, int, int]:
        u = self._usage
        return (u[0], u[1], u[2], u[3], u[4], u[5])

    # -- public API ---------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        out = bytearray()
        broken: SseError | None = None
        try:
            events = self._decoder.feed(chunk)
        except SseError as exc:  # an event over the size limit: the ones before it still count
            events, broken = exc.events, exc
        for event, data, _id in events:
            self._event(event, data, out)
            if self.done:
                break
        if broken is not None and not self.done:
            self._end(out, "protocol_error", "api_error", str(broken))
        return bytes(out)

    def finish(self) -> bytes:
        """The upstream body ended: close the client stream (an error unless it completed)."""
        if self.done:
            return b""
        out = bytearray()
        self._end(out, "truncated", "api_error", "upstream stream ended before message_stop")
        return bytes(out)

    # -- events -------------------------------------------------------------------------------

    def _event(self, event: str, data: str, out: bytearray) -> None:
        if event not in ANTHROPIC_EVENTS:
            return  # ping and unknown event types are ignored, as Anthropic's policy asks
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._end(out, "protocol_error", "api_error", f"upstream sent invalid JSON in {event}")
            return
        if not isinstance(obj, dict):
            self._end(out, "protocol_error", "api_error", f"upstream sent a non-object {event}")
            return
        if event == "error":
            err = obj.get("error")
            etype, message = "api_error", "upstream error"
            if isinstance(err, dict):
                t, m = err.get("type"), err.get("message")
                if isinstance(t, str):
                    etype = t
                if isinstance(m, str):
                    message = m
            self._end(out, "upstream_error", etype, message)
            return
        if event == "message_start":
            if self.started:
                return  # NOTE: a repeated message_start is ignored rather than restarting
            msg = obj.get("message")
            if not isinstance(msg, dict):
                self._end(out, "protocol_error", "api_error", "message_start without a message")
                return
            mid = msg.get("id")
            self.message_id = mid if isinstance(mid, str) else ""
            self._take_usage(msg.get("usage"))
            self.started = True
            self._start(out)
            return
        if not self.started:
            self._end(
                out, "protocol_error", "api_error", f"upstream sent {event} before message_start"
            )
            return
        if event == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                reason = delta.get("stop_reason")
                if isinstance(reason, str):
                    self.stop_reason = reason
            self._take_usage(obj.get("usage"))
        self._on(event, obj, out)

    def _take_usage(self, usage: object) -> None:
        """Later reports overwrite earlier ones: Anthropic's counts are cumulative."""
        if not isinstance(usage, dict):
            return
        u = self._usage
        for i, key in enumerate(_USAGE_FIELDS):
            n = _count(usage.get(key))
            if n is not None:
                u[i] = n
        creation = usage.get("cache_creation")
        if isinstance(creation, dict):
            for i, key in ((4, "ephemeral_5m_input_tokens"), (5, "ephemeral_1h_input_tokens")):
                n = _count(creation.get(key))
                if n is not None:
                    u[i] = n

    def _end(self, out: bytearray, outcome: str, etype: str, message: str) -> None:
        """The terminal error: the stream is done with ``outcome``; ``_fail`` writes it."""
        self.done = True
        self.outcome = outcome
        self.error = (etype, message)
        self._fail(out, etype, message)

    # -- what a kernel writes -----------------------------------------------------------------

    @abstractmethod
    def _start(self, out: bytearray) -> None:
        """``message_start`` came (``message_id`` and usage are set)."""

    @abstractmethod
    def _on(self, event: str, obj: dict[str, Any], out: bytearray) -> None:
        """Any later event (``message_delta``'s stop reason and usage are already taken)."""

    @abstractmethod
    def _fail(self, out: bytearray, etype: str, message: str) -> None:
        """Write the terminal error event (the state is already set)."""


class StreamTranslator(StreamKernel):
    """Stateful Anthropic -> OpenAI stream translator; see the module docstring for the rules
    and :class:`StreamKernel` for the attributes."""

    __slots__ = (
        "_block_tool",
        "_created",
        "_include_usage",
        "_json_blocks",
        "_json_tool",
        "_model_json",
        "_prefix",
        "_tool_index",
    )

    def __init__(
        self,
        model: str,
        created: int,
        *,
        include_usage: bool = False,
        max_event_bytes: int = 0,
        json_tool: str | None = None,
    ) -> None:
        super().__init__(max_event_bytes)
        self._include_usage = include_usage
        self._model_json = orjson.dumps(model)
        self._created = created
        self._prefix = b""
        self._tool_index = 0
        # content-block index -> tool-call index, for the tool_use blocks of this message
        self._block_tool: dict[int, int] = {}
        # response_format emulated with a forced tool: that tool's input is the answer's content
        self._json_tool = json_tool
        self._json_blocks: set[int] = set()

    # -- events -------------------------------------------------------------------------------

    def _start(self, out: bytearray) -> None:
        self._prefix = (
            b'{"id":'
            + orjson.dumps("chatcmpl-" + (self.message_id or ""))
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + self._model_json
            + b',"choices":'
        )
        self._chunk(out, b'{"role":"assistant","content":""}')

    def _on(self, event: str, obj: dict[str, Any], out: bytearray) -> None:
        if event == "content_block_start":
            block = obj.get("content_block")
            index = _count(obj.get("index"))
            if isinstance(block, dict) and block.get("type") == "tool_use" and index is not None:
                if self._json_tool is not None and block.get("name") == self._json_tool:
                    self._json_blocks.add(index)
                    return
                tool = self._tool_index
                self._tool_index += 1
                self._block_tool[index] = tool
                tid, name = block.get("id"), block.get("name")
                self._chunk(
                    out,
                    b'{"tool_calls":[{"index":'
                    + str(tool).encode()
                    + b',"id":'
                    + orjson.dumps(tid if isinstance(tid, str) else "")
                    + b',"type":"function","function":{"name":'
                    + orjson.dumps(name if isinstance(name, str) else "")
                    + b',"arguments":""}}]}',
                )
            return
        if event == "content_block_delta":
            delta = obj.get("delta")
            if not isinstance(delta, dict):
                return
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                if isinstance(text, str) and text:
                    self._chunk(out, b'{"content":' + orjson.dumps(text) + b"}")
            elif dtype == "thinking_delta":
                text = delta.get("thinking")
                if isinstance(text, str) and text:
                    self._chunk(out, b'{"reasoning_content":' + orjson.dumps(text) + b"}")
            elif dtype == "input_json_delta":
                part = delta.get("partial_json")
                index = _count(obj.get("index"))
                if not isinstance(part, str) or not part or index is None:
                    return
                if index in self._json_blocks:
                    self._chunk(out, b'{"content":' + orjson.dumps(part) + b"}")
                    return
                call = self._block_tool.get(index)
                if call is not None:
                    self._chunk(
                        out,
                        b'{"tool_calls":[{"index":'
                        + str(call).encode()
                        + b',"function":{"arguments":'
                        + orjson.dumps(part)
                        + b"}}]}",
                    )
            # signature_delta, citations_delta and future delta types carry nothing for OpenAI
            return
        if event == "message_stop":
            out += (
                b"data: "
                + self._prefix
                + b'[{"index":0,"delta":{},"finish_reason":"'
                + self._finish_reason().encode()
                + b'"}]}\n\n'
            )
            if self._include_usage:
                u = self._usage
                prompt = u[0] + u[1] + u[2]
                out += (
                    b"data: "
                    + self._prefix
                    + b'[],"usage":{"prompt_tokens":'
                    + str(prompt).encode()
                    + b',"completion_tokens":'
                    + str(u[3]).encode()
                    + b',"total_tokens":'
                    + str(prompt + u[3]).encode()
                    + b',"prompt_tokens_details":{"cached_tokens":'
                    + str(u[2]).encode()
                    + b'},"cache_creation_input_tokens":'
                    + str(u[1]).encode()
                    + b',"cache_read_input_tokens":'
                    + str(u[2]).encode()
                    + b"}}\n\n"
                )
            out += b"data: [DONE]\n\n"
            self.done = True
            self.outcome = "complete"
            return
        # content_block_stop: nothing to send

    def _finish_reason(self) -> str:
        if self.stop_reason == "tool_use" and self._json_blocks and not self._tool_index:
            return "stop"  # JSON mode: the forced tool was the answer, not a tool call
        return finish_reason_for(self.stop_reason)

    def _chunk(self, out: bytearray, delta: bytes) -> None:
        out += (
            b"data: "
            + self._prefix
            + b'[{"index":0,"delta":'
            + delta
            + b',"finish_reason":null}]}\n\n'
        )

    def _fail(self, out: bytearray, etype: str, message: str) -> None:
        out += (
            b'data: {"error":{"message":'
            + orjson.dumps(message)
            + b',"type":'
            + orjson.dumps(etype)
            + b',"param":null,"code":null}}\n\n'
        )


# The Anthropic stream events that carry a JSON payload Ferrule reads (ping and unknown events
# are skipped without parsing).
ANTHROPIC_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "error",
    }
)
