"""Anthropic Messages SSE -> OpenAI Responses SSE (pure-Python twin of
``ferrule._native.ResponsesStreamEncoder``, which writes the same bytes).

``feed(chunk)`` takes raw upstream bytes, split anywhere, and returns the bytes for the client;
``finish()`` closes the stream when the upstream body ended. Every frame is ``event: <type>`` +
``data: <json>`` whose ``type`` is the event name and whose ``sequence_number`` grows by one from
0; there is no ``[DONE]``. The grammar follows the ``openai`` SDK's event models
(``openai/types/responses/response_*_event.py``) and ../shared/reference/responses-api.md:

1. ``message_start`` -> ``response.created``, ``response.in_progress`` (``status: in_progress``).
2. Per output item (grouped as :mod:`ferrule.translate.responses_response` groups blocks):
   ``response.output_item.added``, then
   - message: per text block ``response.content_part.added`` -> ``response.output_text.delta``… ->
     ``response.output_text.done`` -> ``response.content_part.done``;
   - reasoning: per thinking block that shows text (when ``reasoning.summary`` was asked)
     ``response.reasoning_summary_part.added`` -> ``response.reasoning_summary_text.delta``… ->
     ``.done`` -> ``response.reasoning_summary_part.done``;
   - function call: ``response.function_call_arguments.delta``… -> ``.done``;
   - custom tool call: ``response.custom_tool_call_input.delta``… (the freeform text, decoded from
     the streamed ``{"input": "..."}`` JSON as it comes) -> ``.done``;
   - web search: ``response.web_search_call.in_progress`` / ``.searching`` / ``.completed``;
   then ``response.output_item.done`` with the whole item.
   A compaction request (Codex's ``compaction_trigger``) streams no content: its one
   ``compaction`` item is added and done at the end.
3. Exactly one of ``response.completed`` / ``response.incomplete`` (max tokens, refusal) /
   ``response.failed`` (an upstream ``error`` event, invalid data, or a body that ends early),
   carrying the final response object with usage. The completed / incomplete object is
   :func:`~ferrule.translate.responses_response.to_responses` of the accumulated message, and every
   item in it equals its ``output_item.done`` item (one sealing per reasoning item, reused).

``.done`` events carry the canonical value (``arguments`` re-serialized from the parsed JSON, as in
the JSON answer); the deltas are the upstream fragments as they came. An upstream error before
``message_start`` gives a single ``error`` event (no response exists yet; the route answers with an
HTTP error instead when nothing was sent). Nothing is emitted after the terminal event.

Attributes for the pipeline, as on ``StreamTranslator``: ``started``, ``done``, ``outcome``
(``streaming`` / ``complete`` / ``upstream_error`` / ``truncated`` / ``protocol_error``),
``error``, ``message_id``, ``stop_reason``, ``usage`` (the same six counts). ``fail(message,
etype)`` ends the stream from outside (the relay's deadline, a broken connection) with the same
terminal event as an upstream error.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..translate.responses_request import ResponsesTranslated
from ..translate.responses_response import (
    Seals,
    citation_annotations,
    compaction_item,
    item_id,
    reasoning_item,
    response_object,
    response_status,
    responses_usage,
    text_part,
    to_responses,
    tool_item,
    web_search_item,
)
from .stream import StreamKernel, _count

__all__ = ["ResponsesStreamEncoder"]

_ERROR_CODES = {"rate_limit_error": "rate_limit_exceeded"}


class _SealOnce:
    """Seals each distinct plaintext once, so the final object repeats the emitted items' tokens."""

    __slots__ = ("_done", "_sealer")

    def __init__(self, sealer: Seals) -> None:
        self._sealer = sealer
        self._done: dict[tuple[bytes, bytes], str] = {}

    def seal(self, plaintext: bytes, context: bytes) -> str:
        key = (plaintext, context)
        token = self._done.get(key)
        if token is None:
            token = self._done[key] = self._sealer.seal(plaintext, context)
        return token


class _StringField:
    """Decodes the string value of ``{"input": "..."}`` from JSON fragments, as they arrive.

    Anything else (another key first, a non-string) stops the decoding: the ``.done`` event still
    carries the whole input, parsed from the complete JSON."""

    __slots__ = ("_head", "_pending", "state")

    _TARGET = '{"input":"'
    _SPACE_AT = frozenset({0, 1, 8, 9})  # where JSON allows whitespace in _TARGET

    def __init__(self) -> None:
        self._head = 0  # chars of _TARGET matched
        self._pending = ""  # an escape not yet complete
        self.state = "head"  # head | string | end | off

    def feed(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            if self.state == "head":
                if ch in " \t\r\n" and self._head in self._SPACE_AT:
                    continue
                if ch != self._TARGET[self._head]:
                    self.state = "off"
                    break
                self._head += 1
                if self._head == len(self._TARGET):
                    self.state = "string"
            elif self.state == "string":
                if self._pending:
                    self._pending += ch
                    done = self._escape()
                    if done is None:
                        continue
                    out.append(done)
                elif ch == "\\":
                    self._pending = ch
                elif ch == '"':
                    self.state = "end"
                else:
                    out.append(ch)
            else:
                break
        return "".join(out)

    def _escape(self) -> str | None:
        """The decoded text of a complete escape in ``_pending``, else None (wait for more)."""
        p = self._pending
        if len(p) == 2 and p[1] != "u":
            self._pending = ""
            try:
                return str(orjson.loads(f'"{p}"'))
            except orjson.JSONDecodeError:
                self.state = "off"
                return ""
        if len(p) < 6:
            return None
        high = int(p[2:6], 16) if all(c in "0123456789abcdefABCDEF" for c in p[2:6]) else -1
        if high < 0:
            self.state = "off"
            self._pending = ""
            return ""
        if 0xD800 <= high < 0xDC00:
            if len(p) < 12:  # a high surrogate: wait for its low half
                return None
            try:
                text = str(orjson.loads(f'"{p}"'))
            except orjson.JSONDecodeError:
                text = "\ufffd"
            self._pending = ""
            return text
        self._pending = ""
        return chr(high) if not 0xDC00 <= high < 0xE000 else "\ufffd"


class ResponsesStreamEncoder(StreamKernel):
    """Stateful Anthropic -> Responses stream encoder; see the module docstring for the rules
    and :class:`~ferrule._pure.stream.StreamKernel` for the attributes and the event checks."""

    __slots__ = (
        "_blocks",
        "_created_at",
        "_done_items",
        "_item",
        "_items",
        "_response_id",
        "_sealer",
        "_seq",
        "_state",
        "_tenant",
        "_tr",
    )

    def __init__(
        self,
        tr: ResponsesTranslated,
        *,
        response_id: str,
        created_at: int,
        sealer: Seals,
        tenant: str,
        max_event_bytes: int = 0,
    ) -> None:
        super().__init__(max_event_bytes)
        self._tr = tr
        self._response_id = response_id
        self._created_at = created_at
        self._sealer = _SealOnce(sealer)
        self._tenant = tenant
        self._seq = 0
        self._items = 0  # output items opened so far (the next output_index)
        self._done_items: list[dict[str, Any]] = []
        # the open output item: kind, id, output_index and its parts / thinking blocks
        self._item: dict[str, Any] | None = None
        # content-block index -> its state while it streams
        self._state: dict[int, dict[str, Any]] = {}
        # content-block index -> the finished Anthropic block (the accumulated message), in the
        # order the blocks came, which is the order of their output items
        self._blocks: dict[int, dict[str, Any]] = {}

    def _message(self) -> dict[str, Any]:
        """The Anthropic message accumulated so far (the finished blocks, in order)."""
        u = self._usage
        return {
            "id": self.message_id or "",
            "type": "message",
            "role": "assistant",
            "content": list(self._blocks.values()),
            "stop_reason": self.stop_reason,
            "usage": {
                "input_tokens": u[0],
                "cache_creation_input_tokens": u[1],
                "cache_read_input_tokens": u[2],
                "output_tokens": u[3],
            },
        }

    # -- public API (feed and finish: StreamKernel) --------------------------------------------

    def fail(self, message: str, etype: str = "api_error") -> bytes:
        """End the stream with an error from outside it (the relay's deadline, a broken upstream
        connection): the terminal ``response.failed`` (``error`` before the start), outcome
        ``upstream_error``. Nothing once done."""
        if self.done:
            return b""
        out = bytearray()
        self._end(out, "upstream_error", etype, message)
        return bytes(out)

    # -- output -------------------------------------------------------------------------------

    def _emit(self, out: bytearray, kind: str, fields: dict[str, Any]) -> None:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        out += b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _response(self, status: str) -> dict[str, Any]:
        return response_object(
            self._tr,
            response_id=self._response_id,
            created_at=self._created_at,
            status=status,
            output=[],
            usage=None,
        )

    def _open(self, out: bytearray, kind: str, item: dict[str, Any]) -> dict[str, Any]:
        index = self._items
        self._items += 1
        state = {"kind": kind, "id": item["id"], "index": index, "parts": [], "thoughts": []}
        self._emit(out, "response.output_item.added", {"output_index": index, "item": item})
        return state

    def _item_done(self, out: bytearray, index: int, item: dict[str, Any]) -> None:
        self._done_items.append(item)
        self._emit(out, "response.output_item.done", {"output_index": index, "item": item})

    def _close(self, out: bytearray, *, last: bool = False) -> None:
        """Finish the open message or reasoning item."""
        item = self._item
        if item is None:
            return
        self._item = None
        if item["kind"] == "message":
            status = "completed"
            if last and response_status(self.stop_reason)[0] == "incomplete":
                status = "incomplete"
            done = {
                "id": item["id"],
                "type": "message",
                "role": "assistant",
                "status": status,
                "content": item["parts"],
            }
        else:
            done = reasoning_item(
                item["id"],
                item["thoughts"],
                summary=self._tr.summary,
                sealer=self._sealer,
                tenant=self._tenant,
            )
        self._item_done(out, item["index"], done)

    def _message_item(self, out: bytearray) -> dict[str, Any]:
        if self._item is not None and self._item["kind"] == "message":
            return self._item
        self._close(out)
        iid = item_id(self._response_id, "message", self._items)
        self._item = self._open(
            out,
            "message",
            {
                "id": iid,
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            },
        )
        return self._item

    # -- events -------------------------------------------------------------------------------

    def _start(self, out: bytearray) -> None:
        self._emit(out, "response.created", {"response": self._response("in_progress")})
        self._emit(out, "response.in_progress", {"response": self._response("in_progress")})

    def _on(self, event: str, obj: dict[str, Any], out: bytearray) -> None:
        if self._tr.compact and event.startswith("content_block_"):
            self._compact_block(event, obj, out)
            return
        if event == "content_block_start":
            index = _count(obj.get("index"))
            block = obj.get("content_block")
            if index is None or not isinstance(block, dict):
                return
            if index in self._state or index in self._blocks:
                return  # NOTE: a block started twice keeps its first start
            self._stop_open(out)  # blocks come one after the other: a start ends the last one
            self._block_start(index, block, out)
        elif event == "content_block_delta":
            index = _count(obj.get("index"))
            delta = obj.get("delta")
            state = self._state.get(index) if index is not None else None
            if state is not None and isinstance(delta, dict):
                self._block_delta(state, delta, out)
        elif event == "content_block_stop":
            index = _count(obj.get("index"))
            state = self._state.pop(index, None) if index is not None else None
            if index is not None and state is not None:
                self._block_stop(index, state, out)
        elif event == "message_stop":
            self._stop_open(out)
            self._close(out, last=True)
            if self._tr.compact:
                item = compaction_item(
                    self._response_id,
                    self._message()["content"],
                    sealer=self._sealer,
                    tenant=self._tenant,
                )
                index = self._items
                self._items += 1
                self._emit(out, "response.output_item.added", {"output_index": index, "item": item})
                self._item_done(out, index, item)
            final = to_responses(
                self._message(),
                tr=self._tr,
                response_id=self._response_id,
                created_at=self._created_at,
                sealer=self._sealer,
                tenant=self._tenant,
            )
            kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
            self._emit(out, kind, {"response": final})
            self.done = True
            self.outcome = "complete"

    def _stop_open(self, out: bytearray) -> None:
        """End the blocks upstream did not stop, as if their content_block_stop had come."""
        for index in sorted(self._state):
            state = self._state.pop(index)
            if self._tr.compact:
                self._blocks[index] = {"type": "text", "text": "".join(state["text"])}
            else:
                self._block_stop(index, state, out)

    def _compact_block(self, event: str, obj: dict[str, Any], out: bytearray) -> None:
        """A compaction request: the summary is gathered silently and sent as one item."""
        index = _count(obj.get("index"))
        if index is None:
            return
        if event == "content_block_start":
            block = obj.get("content_block")
            fresh = index not in self._state and index not in self._blocks
            if isinstance(block, dict) and block.get("type") == "text" and fresh:
                self._stop_open(out)
                self._state[index] = {"type": "text", "text": []}
        elif event == "content_block_delta":
            state, delta = self._state.get(index), obj.get("delta")
            if state is not None and isinstance(delta, dict):
                text = delta.get("text")
                if delta.get("type") == "text_delta" and isinstance(text, str):
                    state["text"].append(text)
        elif event == "content_block_stop" and index in self._state:
            self._stop_open(out)

    def _block_start(self, index: int, block: dict[str, Any], out: bytearray) -> None:
        kind = block.get("type")
        tr = self._tr
        state: dict[str, Any] = {"type": kind, "block": block}
        if kind in ("thinking", "redacted_thinking"):
            if self._item is None or self._item["kind"] != "reasoning":
                self._close(out)
                iid = item_id(self._response_id, "reasoning", self._items)
                self._item = self._open(
                    out, "reasoning", {"id": iid, "type": "reasoning", "summary": []}
                )
            state.update(item=self._item, text=[], signature=[], summary_index=None)
        elif kind == "text" or (
            kind == "tool_use" and tr.json_tool is not None and block.get("name") == tr.json_tool
        ):
            item = self._message_item(out)
            part = len(item["parts"])
            item["parts"].append(text_part(""))
            self._emit(
                out,
                "response.content_part.added",
                {
                    "item_id": item["id"],
                    "output_index": item["index"],
                    "content_index": part,
                    "part": text_part(""),
                },
            )
            state.update(item=item, part=part, text=[], json_mode=kind == "tool_use", citations=[])
        elif kind == "tool_use":
            self._close(out)
            custom = _name(block) in tr.custom_tools
            iid = item_id(
                self._response_id, "custom_tool_call" if custom else "function_call", self._items
            )
            added = tool_item(iid, {**block, "input": {}}, tr)
            if custom:
                added["input"] = ""
            else:
                added["arguments"] = ""
                added["status"] = "in_progress"
            item = self._open(out, "tool", added)
            state.update(item=item, json=[], custom=_StringField() if custom else None)
        elif kind == "server_tool_use" and block.get("name") == "web_search":
            self._close(out)
            iid = item_id(self._response_id, "web_search_call", self._items)
            added = {
                "id": iid,
                "type": "web_search_call",
                "status": "in_progress",
                "action": {"type": "search"},
            }
            item = self._open(out, "web_search", added)
            where = {"item_id": iid, "output_index": item["index"]}
            self._emit(out, "response.web_search_call.in_progress", where)
            self._emit(out, "response.web_search_call.searching", where)
            state.update(item=item, json=[])
        self._state[index] = state

    def _block_delta(self, state: dict[str, Any], delta: dict[str, Any], out: bytearray) -> None:
        kind = state["type"]
        dtype = delta.get("type")
        item = state.get("item")
        if item is None:
            return  # a block that makes no item (web_search_tool_result, unknown types)
        where = {"item_id": item["id"], "output_index": item["index"]}
        if kind == "thinking":
            if dtype == "thinking_delta" and isinstance(delta.get("thinking"), str):
                text = delta["thinking"]
                if not text:
                    return
                state["text"].append(text)
                if not self._tr.summary:
                    return
                if state["summary_index"] is None:
                    state["summary_index"] = item.setdefault("summaries", 0)
                    item["summaries"] += 1
                    self._emit(
                        out,
                        "response.reasoning_summary_part.added",
                        where
                        | {
                            "summary_index": state["summary_index"],
                            "part": {"type": "summary_text", "text": ""},
                        },
                    )
                self._emit(
                    out,
                    "response.reasoning_summary_text.delta",
                    where | {"summary_index": state["summary_index"], "delta": text},
                )
            elif dtype == "signature_delta" and isinstance(delta.get("signature"), str):
                state["signature"].append(delta["signature"])
            return
        if kind == "text" and dtype == "citations_delta":
            citation = delta.get("citation")
            if isinstance(citation, dict):
                state["citations"].append(citation)
            return
        piece = delta.get("text") if dtype == "text_delta" else None
        if piece is None and dtype == "input_json_delta":
            piece = delta.get("partial_json")
        if not isinstance(piece, str) or not piece:
            return
        if "part" in state:  # text, or the JSON-mode tool's input as text
            state["text"].append(piece)
            self._emit(
                out,
                "response.output_text.delta",
                where | {"content_index": state["part"], "delta": piece, "logprobs": []},
            )
        elif kind in ("tool_use", "server_tool_use"):
            state["json"].append(piece)
            if kind == "server_tool_use":
                return
            custom: _StringField | None = state["custom"]
            if custom is None:
                self._emit(out, "response.function_call_arguments.delta", where | {"delta": piece})
            else:
                text = custom.feed(piece)
                if text:
                    self._emit(
                        out, "response.custom_tool_call_input.delta", where | {"delta": text}
                    )

    def _block_stop(self, index: int, state: dict[str, Any], out: bytearray) -> None:
        kind = state["type"]
        start: dict[str, Any] = state["block"]
        item = state.get("item")
        if kind == "thinking":
            text = "".join(state["text"])
            block = {"type": "thinking", "thinking": text, "signature": "".join(state["signature"])}
            if state["summary_index"] is not None and item is not None:
                where = {
                    "item_id": item["id"],
                    "output_index": item["index"],
                    "summary_index": state["summary_index"],
                }
                self._emit(out, "response.reasoning_summary_text.done", where | {"text": text})
                part = {"type": "summary_text", "text": text}
                self._emit(out, "response.reasoning_summary_part.done", where | {"part": part})
        elif kind == "redacted_thinking":
            block = {"type": "redacted_thinking", "data": start.get("data", "")}
        elif "part" in state and item is not None:
            raw = "".join(state["text"])
            if state["json_mode"]:  # the JSON-mode tool: its input is the text
                block = {**start, "input": _parse_object(raw)}
                text = orjson.dumps(block["input"]).decode()
            else:
                block = {"type": "text", "text": raw}
                if state["citations"]:
                    block["citations"] = state["citations"]
                text = raw
            where = {"item_id": item["id"], "output_index": item["index"]}
            where["content_index"] = state["part"]
            self._emit(out, "response.output_text.done", where | {"text": text, "logprobs": []})
            part = item["parts"][state["part"]] = _final_part(block, text)
            self._emit(out, "response.content_part.done", where | {"part": part})
        elif kind in ("tool_use", "server_tool_use") and item is not None:
            block = {**start, "input": _parse_object("".join(state["json"]))}
            where = {"item_id": item["id"], "output_index": item["index"]}
            if kind == "server_tool_use":
                done = web_search_item(item["id"], block)
                self._emit(out, "response.web_search_call.completed", where)
            else:
                done = tool_item(item["id"], block, self._tr)
                if done["type"] == "custom_tool_call":
                    self._emit(
                        out,
                        "response.custom_tool_call_input.done",
                        where | {"input": done["input"]},
                    )
                else:
                    self._emit(
                        out,
                        "response.function_call_arguments.done",
                        where | {"arguments": done["arguments"], "name": done["name"]},
                    )
            self._item_done(out, item["index"], done)
        else:
            block = start  # complete at its start (web_search_tool_result) or not ours
        self._blocks[index] = block
        if kind in ("thinking", "redacted_thinking") and item is not None:
            item["thoughts"].append(block)

    def _fail(self, out: bytearray, etype: str, message: str) -> None:
        code = _ERROR_CODES.get(etype, "server_error")
        if not self.started:
            self._emit(out, "error", {"code": code, "message": message, "param": None})
            return
        failed = response_object(
            self._tr,
            response_id=self._response_id,
            created_at=self._created_at,
            status="failed",
            output=self._done_items,
            usage=responses_usage(self._message()["usage"]),
            error={"code": code, "message": message},
        )
        self._emit(out, "response.failed", {"response": failed})


def _name(block: dict[str, Any]) -> str | None:
    """A block's ``name`` when it is a string (any JSON value may come: not always hashable)."""
    name = block.get("name")
    return name if isinstance(name, str) else None


def _parse_object(raw: str) -> Any:
    """A tool input from its streamed JSON (``{}`` when none came or it was cut short)."""
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value


def _final_part(block: dict[str, Any], text: str) -> dict[str, Any]:
    return text_part(
        text, citation_annotations(block, text) if block.get("type") == "text" else None
    )
