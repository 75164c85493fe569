"""Table-driven tests of the kernels, run on both backends through the ``kernels`` fixture.

Every input is fed whole, split in two at every byte, one byte at a time, and one byte at a time
with empty chunks in between (eventsource-stream style); the result must not depend on the split.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletionChunk

from ferrule import _pure

Events = list[tuple[str, str, str]]


class Err:
    """Expected outcome: ``SseError`` with this message."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"Err({self.message!r})"


def splits(data: bytes) -> Iterator[list[bytes]]:
    """Every way the tests feed one input."""
    yield [data]
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [b"", *(part for i in range(len(data)) for part in (data[i : i + 1], b""))]


# -- SSE decoder ----------------------------------------------------------------------------------

M = "message"

DECODER_CASES: list[tuple[str, bytes, dict[str, int], Events | Err]] = [
    ("lf", b"data: a\n\n", {}, [(M, "a", "")]),
    ("crlf", b"data: a\r\n\r\n", {}, [(M, "a", "")]),
    ("cr", b"data: a\r\rdata: b\r\r", {}, [(M, "a", ""), (M, "b", "")]),
    ("mixed endings", b"data: a\r\n\ndata: b\n\r\n", {}, [(M, "a", ""), (M, "b", "")]),
    ("event name", b"event: x\ndata: 1\n\ndata: 2\n\n", {}, [("x", "1", ""), (M, "2", "")]),
    ("comments", b": hi\ndata: x\n:\n: more\n\n", {}, [(M, "x", "")]),
    ("only comments", b": keep-alive\n\n", {}, []),
    ("multi-line data", b"data:a\ndata: b\ndata:  c\n\n", {}, [(M, "a\nb\n c", "")]),
    ("empty data still dispatches", b"data\n\ndata:\n\n", {}, [(M, "", ""), (M, "", "")]),
    ("no data, no event", b"event: only\n\ndata: y\n\n", {}, [(M, "y", "")]),
    ("colon in value", b"data: a: b\n\n", {}, [(M, "a: b", "")]),
    ("one space removed", b"data:   x \n\n", {}, [(M, "  x ", "")]),
    ("fields are case-sensitive", b"DATA: x\n\ndata : y\n\n", {}, []),
    ("unknown field", b"foo: bar\ndata: x\n\n", {}, [(M, "x", "")]),
    ("id", b"id: 7\ndata: a\n\nid\ndata: b\n\n", {}, [(M, "a", "7"), (M, "b", "")]),
    ("id kept", b"id: 7\ndata: a\n\ndata: b\n\n", {}, [(M, "a", "7"), (M, "b", "7")]),
    ("id with NUL ignored", b"id: 1\nid: 2\x00\ndata: c\n\n", {}, [(M, "c", "1")]),
    ("bom", b"\xef\xbb\xbfdata: bom\n\n", {}, [(M, "bom", "")]),
    ("only one bom", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", {}, []),
    ("half a bom", b"\xef\xbbdata: x\n\n", {}, []),  # the field is "\ufffddata"
    ("utf-8", "data: café 😀\n\n".encode(), {}, [(M, "café 😀", "")]),
    (
        "bad utf-8",
        b"data: \xff\xe2\x82!\xed\xa0\x80\n\n",
        {},
        [(M, "\ufffd\ufffd!\ufffd\ufffd\ufffd", "")],
    ),
    (
        "not line breaks",
        "data: \x0b\x0c\u2028\u0085\n\n".encode(),
        {},
        [(M, "\x0b\x0c\u2028\u0085", "")],
    ),
    ("unterminated event dropped", b"data: a\n", {}, []),
    ("unterminated line dropped", b"data: a", {}, []),
    ("blank lines", b"\n\n\r\n\r", {}, []),
    ("line limit ok", b"data: 12\n\n", {"max_line_bytes": 8}, [(M, "12", "")]),
    ("line limit", b"data: 123456789", {"max_line_bytes": 8}, Err("SSE line longer than 8 bytes")),
    (
        "event limit ok",
        b"data: 1\ndata: 2\n\ndata: 3\n\n",
        {"max_event_bytes": 14},
        [(M, "1\n2", ""), (M, "3", "")],
    ),
    (
        "event limit",
        b"data: 1\ndata: 2\n",
        {"max_event_bytes": 13},
        Err("SSE event larger than 13 bytes"),
    ),
]


def decode(mod: ModuleType, chunks: list[bytes], **options: int) -> Events | Err:
    decoder = mod.SseDecoder(**options)
    events: Events = []
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
    except mod.SseError as exc:
        return Err(str(exc))
    return events


@pytest.mark.parametrize(
    ("data", "options", "expected"),
    [c[1:] for c in DECODER_CASES],
    ids=[c[0] for c in DECODER_CASES],
)
def test_decoder(
    kernels: ModuleType, data: bytes, options: dict[str, int], expected: Events | Err
) -> None:
    for chunks in splits(data):
        got = decode(kernels, chunks, **options)
        if isinstance(expected, Err):
            assert isinstance(got, Err), chunks
            assert got.message == expected.message
        else:
            assert got == expected, chunks


def test_decoder_crlf_split_across_chunks(kernels: ModuleType) -> None:
    chunks = [b"data: a\r", b"\n", b"\r", b"\ndata: b\r", b"", b"\n\r\n"]
    assert decode(kernels, chunks) == [(M, "a", ""), (M, "b", "")]


def test_decoder_multibyte_char_split(kernels: ModuleType) -> None:
    data = "data: 😀é\n\n".encode()
    for i in range(6, 12):
        assert decode(kernels, [data[:i], data[i:]]) == [(M, "😀é", "")]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (b"retry: 3000\n", 3000),
        (b"retry: 10\nretry: x\n", 10),
        (b"retry: -1\n", None),
        (b"retry: 1.5\n", None),
        (b"retry:\n", None),
        (b"retry: \xd9\xa3\n", None),  # ARABIC-INDIC DIGIT THREE is a digit, but not ASCII
        (b"retry: 18446744073709551615\n", 2**64 - 1),
        (b"retry: 18446744073709551616\n", None),
        (b"retry: 000000000000000000000000042\n", 42),
        (b"retry: " + b"0" * 5000 + b"7\n", 7),  # more digits than Python's int() takes
        (b"retry: " + b"9" * 5000 + b"\n", None),
    ],
)
def test_decoder_retry(kernels: ModuleType, lines: bytes, expected: int | None) -> None:
    for chunks in splits(lines):
        decoder = kernels.SseDecoder()
        assert decoder.retry is None
        for chunk in chunks:
            assert decoder.feed(chunk) == []
        assert decoder.retry == expected


def test_sse_error_is_a_value_error(kernels: ModuleType) -> None:
    assert issubclass(kernels.SseError, ValueError)
    decoder = kernels.SseDecoder(max_line_bytes=2)
    with pytest.raises(ValueError, match="SSE line longer than 2 bytes"):
        decoder.feed(b"abc")


# -- stream translator ------------------------------------------------------------------------------

MODEL = "claude-sonnet-4-5"
CREATED = 1_700_000_000


def sse(event: str, payload: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def message_start(mid: str = "msg_01", **usage: int) -> bytes:
    message = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": MODEL,
        "stop_reason": None,
        "usage": {"input_tokens": 25, "output_tokens": 1, **usage},
    }
    return sse("message_start", {"type": "message_start", "message": message})


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def delta(index: int, d: dict[str, Any]) -> bytes:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})


def block_stop(index: int) -> bytes:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str | None = "end_turn", **usage: Any) -> bytes:
    payload = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason},
        "usage": {"output_tokens": 9, **usage},
    }
    return sse("message_delta", payload)


PING = sse("ping", {"type": "ping"})
STOP = sse("message_stop", {"type": "message_stop"})


def text_answer(*parts: str, stop_reason: str | None = "end_turn") -> bytes:
    return b"".join(
        [
            message_start(),
            block_start(0, {"type": "text", "text": ""}),
            PING,
            *(delta(0, {"type": "text_delta", "text": p}) for p in parts),
            block_stop(0),
            message_delta(stop_reason),
            STOP,
        ]
    )


def translate(mod: ModuleType, chunks: list[bytes], **options: Any) -> tuple[bytes, Any]:
    t = mod.StreamTranslator(MODEL, CREATED, **options)
    out = b"".join(t.feed(chunk) for chunk in chunks) + t.finish()
    return out, t


def translate_all_ways(mod: ModuleType, data: bytes, **options: Any) -> tuple[bytes, Any]:
    """Translate ``data`` fed whole and split every way; all must give the same bytes."""
    whole, t = translate(mod, [data], **options)
    for chunks in splits(data):
        assert translate(mod, chunks, **options)[0] == whole, chunks
    return whole, t


def events(out: bytes) -> list[Any]:
    """The client stream as parsed ``data:`` payloads (``"[DONE]"`` kept as a string)."""
    assert out.endswith(b"\n\n")
    parsed = []
    for frame in out[:-2].split(b"\n\n"):
        assert frame.startswith(b"data: "), frame
        body = frame[6:]
        parsed.append("[DONE]" if body == b"[DONE]" else orjson.loads(body))
    return parsed


def check_chunks(out: bytes, *, complete: bool = True) -> list[dict[str, Any]]:
    """Validate every chunk with the openai SDK's model and the exact-once rules; return them."""
    frames = events(out)
    if complete:
        assert frames[-1] == "[DONE]"
        frames = frames[:-1]
    else:
        assert "[DONE]" not in frames
        assert set(frames[-1]) == {"error"}
        frames = frames[:-1]
    chunks: list[dict[str, Any]] = []
    for frame in frames:
        assert "error" not in frame
        ChatCompletionChunk.model_validate(frame)
        assert frame["id"] == "chatcmpl-msg_01"
        assert (frame["object"], frame["created"], frame["model"]) == (
            "chat.completion.chunk",
            CREATED,
            MODEL,
        )
        chunks.append(frame)
    if chunks:
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        roles = [c for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]]
        assert len(roles) == 1
        finishes = [
            c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is not None
        ]
        assert len(finishes) == (1 if complete else 0)
    return chunks


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def test_text_answer(kernels: ModuleType) -> None:
    out, t = translate_all_ways(kernels, text_answer("Hello", ", wor", 'ld! "quoted"\n'))
    chunks = check_chunks(out)
    assert deltas(chunks)[1:] == [
        {"content": "Hello"},
        {"content": ", wor"},
        {"content": 'ld! "quoted"\n'},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert (t.started, t.done, t.outcome, t.error) == (True, True, "complete", None)
    assert (t.message_id, t.stop_reason) == ("msg_01", "end_turn")
    assert t.usage == (25, 0, 0, 9, 0, 0)
    assert all(type(n) is int for n in t.usage)
    assert out.count(b"\n\n") == 6  # no usage chunk without include_usage
    assert b'"choices":[]' not in out


def test_thinking_answer(kernels: ModuleType) -> None:
    data = b"".join(
        [
            message_start(),
            block_start(0, {"type": "thinking", "thinking": ""}),
            delta(0, {"type": "thinking_delta", "thinking": "Let me think"}),
            delta(0, {"type": "thinking_delta", "thinking": " harder."}),
            delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAh..."}),
            block_stop(0),
            block_start(1, {"type": "text", "text": ""}),
            delta(1, {"type": "text_delta", "text": "42"}),
            block_stop(1),
            message_delta(),
            STOP,
        ]
    )
    out, _ = translate_all_ways(kernels, data)
    assert deltas(check_chunks(out))[1:] == [
        {"reasoning_content": "Let me think"},
        {"reasoning_content": " harder."},
        {"content": "42"},
        {},
    ]


def tool(index: int, tid: str, name: str, *fragments: str) -> list[bytes]:
    return [
        block_start(index, {"type": "tool_use", "id": tid, "name": name, "input": {}}),
        *(delta(index, {"type": "input_json_delta", "partial_json": f}) for f in fragments),
        block_stop(index),
    ]


def test_one_tool_call_in_fragments(kernels: ModuleType) -> None:
    fragments = ["", '{"loc', 'ation": "Par', 'is, FR", "unit"', ': "c"}']
    data = b"".join(
        [
            message_start(),
            *tool(0, "toolu_01", "get_weather", *fragments),
            message_delta("tool_use"),
            STOP,
        ]
    )
    out, t = translate_all_ways(kernels, data)
    chunks = check_chunks(out)
    calls = [d["tool_calls"][0] for d in deltas(chunks) if "tool_calls" in d]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(
        set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in calls[1:]
    )
    assert len(calls) == 5  # the empty fragment sends nothing
    assert orjson.loads("".join(c["function"]["arguments"] for c in calls)) == {
        "location": "Paris, FR",
        "unit": "c",
    }
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert t.stop_reason == "tool_use"


def test_parallel_tool_calls_after_text(kernels: ModuleType) -> None:
    data = b"".join(
        [
            message_start(),
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "Checking both."}),
            block_stop(0),
            *tool(1, "toolu_a", "get_weather", '{"city":', '"Paris"}'),
            *tool(2, "toolu_b", "get_time", '{"tz":"CET"}'),
            message_delta("tool_use"),
            STOP,
        ]
    )
    out, _ = translate_all_ways(kernels, data)
    calls = [d["tool_calls"][0] for d in deltas(check_chunks(out)) if "tool_calls" in d]
    firsts = [c for c in calls if "id" in c]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in firsts] == [
        (0, "toolu_a", "get_weather"),
        (1, "toolu_b", "get_time"),
    ]
    args: dict[int, str] = {}
    for c in calls:
        args[c["index"]] = args.get(c["index"], "") + c["function"]["arguments"]
    assert args == {0: '{"city":"Paris"}', 1: '{"tz":"CET"}'}


def test_json_tool_streams_as_content(kernels: ModuleType) -> None:
    """response_format emulated with a forced tool: its input is the answer's content."""
    data = b"".join(
        [
            message_start(),
            *tool(0, "toolu_j", "json_response", '{"city":', ' "Paris"}'),
            message_delta("tool_use"),
            STOP,
        ]
    )
    out, _ = translate_all_ways(kernels, data, json_tool="json_response")
    chunks = check_chunks(out)
    assert all("tool_calls" not in d for d in deltas(chunks))
    assert "".join(d.get("content", "") for d in deltas(chunks)) == '{"city": "Paris"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # another tool called beside it keeps index 0 and the tool_calls finish
    data = b"".join(
        [
            message_start(),
            *tool(0, "toolu_j", "json_response", "{}"),
            *tool(1, "toolu_a", "get_time", "{}"),
            message_delta("tool_use"),
            STOP,
        ]
    )
    out, _ = translate_all_ways(kernels, data, json_tool="json_response")
    chunks = check_chunks(out)
    calls = [d["tool_calls"][0] for d in deltas(chunks) if "tool_calls" in d]
    assert calls[0]["index"] == 0 and calls[0]["function"]["name"] == "get_time"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # without the option the same tool is an ordinary tool call
    out, _ = translate_all_ways(kernels, data)
    assert check_chunks(out)[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_include_usage(kernels: ModuleType) -> None:
    data = b"".join(
        [
            message_start(
                input_tokens=100,
                cache_creation_input_tokens=20,
                cache_read_input_tokens=300,
                cache_creation={"ephemeral_5m_input_tokens": 15, "ephemeral_1h_input_tokens": 5},
            ),
            delta(0, {"type": "text_delta", "text": "hi"}),
            message_delta("end_turn", output_tokens=42),
            STOP,
        ]
    )
    out, t = translate_all_ways(kernels, data, include_usage=True)
    chunks = check_chunks(out)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 420,
        "completion_tokens": 42,
        "total_tokens": 462,
        "prompt_tokens_details": {"cached_tokens": 300},
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 300,
    }
    assert sum(1 for c in chunks if not c["choices"]) == 1
    assert t.usage == (100, 20, 300, 42, 15, 5)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("some_future_reason", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reason_mapping(
    kernels: ModuleType, stop_reason: str | None, finish_reason: str
) -> None:
    out, t = translate(kernels, [text_answer("x", stop_reason=stop_reason)])
    chunks = check_chunks(out)
    assert chunks[-1]["choices"][0]["finish_reason"] == finish_reason
    assert t.stop_reason == stop_reason


def test_upstream_error_event(kernels: ModuleType) -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    data = (
        message_start()
        + delta(0, {"type": "text_delta", "text": "par"})
        + sse("error", error)
        + STOP
    )
    out, t = translate_all_ways(kernels, data)
    check_chunks(out, complete=False)
    assert events(out)[-1] == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}
    }
    assert (t.done, t.outcome, t.error) == (
        True,
        "upstream_error",
        ("overloaded_error", "Overloaded"),
    )


def test_upstream_error_without_details(kernels: ModuleType) -> None:
    out, t = translate(kernels, [sse("error", {"error": "nope"})])
    assert events(out) == [
        {"error": {"message": "upstream error", "type": "api_error", "param": None, "code": None}}
    ]
    assert (t.started, t.outcome, t.error) == (
        False,
        "upstream_error",
        ("api_error", "upstream error"),
    )


def test_truncated_stream(kernels: ModuleType) -> None:
    data = message_start() + delta(0, {"type": "text_delta", "text": "half an ans"})
    t = kernels.StreamTranslator(MODEL, CREATED)
    out = t.feed(data)
    assert (t.started, t.done, t.outcome) == (True, False, "streaming")
    tail = t.finish()
    assert events(tail) == [
        {
            "error": {
                "message": "upstream stream ended before message_stop",
                "type": "api_error",
                "param": None,
                "code": None,
            }
        }
    ]
    check_chunks(out + tail, complete=False)
    assert (t.done, t.outcome, t.error) == (
        True,
        "truncated",
        ("api_error", "upstream stream ended before message_stop"),
    )


def test_ping_and_unknown_events_dropped(kernels: ModuleType) -> None:
    noise = (
        PING
        + b"event: future_event\ndata: {not json at all\n\n"
        + b": comment\n\n"
        + b"event: ping\ndata: [1]\n\n"
    )
    plain, _ = translate(kernels, [text_answer("a", "b")])
    noisy_input = text_answer("a", "b").replace(
        b"event: content_block_stop", noise + b"event: content_block_stop"
    )
    noisy, t = translate_all_ways(kernels, noise + noisy_input)
    assert noisy == plain
    assert t.outcome == "complete"


def test_nothing_after_done(kernels: ModuleType) -> None:
    t = kernels.StreamTranslator(MODEL, CREATED)
    assert t.feed(text_answer("done")).endswith(b"data: [DONE]\n\n")
    assert t.feed(text_answer("again")) == b""
    assert t.finish() == b""
    assert t.outcome == "complete"
    t = kernels.StreamTranslator(MODEL, CREATED)
    t.feed(sse("error", {"error": {"type": "x", "message": "y"}}))
    assert t.feed(text_answer("more")) == b""
    assert t.finish() == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b'event: message_start\ndata: {"message":\n\n',
            "upstream sent invalid JSON in message_start",
        ),
        (b"event: message_stop\ndata: []\n\n", "upstream sent a non-object message_stop"),
        (block_stop(0), "upstream sent content_block_stop before message_start"),
        (sse("message_start", {"message": "msg_01"}), "message_start without a message"),
        (
            message_start() + b'event: content_block_delta\ndata: {"a":"\\ud800"}\n\n',
            "upstream sent invalid JSON in content_block_delta",
        ),
    ],
)
def test_protocol_errors(kernels: ModuleType, data: bytes, message: str) -> None:
    out, t = translate_all_ways(kernels, data)
    assert events(out)[-1] == {
        "error": {"message": message, "type": "api_error", "param": None, "code": None}
    }
    assert (t.done, t.outcome, t.error) == (True, "protocol_error", ("api_error", message))


@pytest.mark.parametrize("together", [False, True], ids=["two chunks", "one chunk"])
@pytest.mark.parametrize(
    ("big", "message"),
    [
        (delta(0, {"type": "text_delta", "text": "x" * 500}), "SSE event larger than 256 bytes"),
        (b"data: " + b"x" * 500, "SSE line longer than 256 bytes"),
    ],
    ids=["event", "line"],
)
def test_event_size_limit(kernels: ModuleType, big: bytes, message: str, together: bool) -> None:
    """The events before the breach are translated first, whichever chunk brought them: one
    chunk or two is the network's choice, and must not turn a started stream into no stream."""
    t = kernels.StreamTranslator(MODEL, CREATED, max_event_bytes=256)
    chunks = [message_start() + big] if together else [message_start(), big]
    out = b"".join(t.feed(chunk) for chunk in chunks)
    assert t.started
    assert events(out)[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events(out)[-1]["error"]["message"] == message
    assert (t.done, t.outcome) == (True, "protocol_error")


def test_sse_error_carries_the_events_before_it(kernels: ModuleType) -> None:
    decoder = kernels.SseDecoder(max_line_bytes=8)
    with pytest.raises(kernels.SseError) as caught:
        decoder.feed(b"event: a\ndata: 1\n\ndata: 123456789")
    assert caught.value.events == [("a", "1", "")]
    decoder = kernels.SseDecoder(max_event_bytes=8)
    with pytest.raises(kernels.SseError) as caught:
        decoder.feed(b"data: 1\n\ndata: 123456789\n\n")
    assert caught.value.events == [("message", "1", "")]


def test_message_start_fields(kernels: ModuleType) -> None:
    start = sse(
        "message_start",
        {"message": {"id": 7, "usage": {"input_tokens": True, "output_tokens": 1.0}}},
    )
    out, t = translate(kernels, [start, STOP])
    assert t.message_id == ""
    assert t.usage == (0, 0, 0, 0, 0, 0)
    assert events(out)[0]["id"] == "chatcmpl-"


def test_repeated_message_start_ignored(kernels: ModuleType) -> None:
    out, t = translate(kernels, [message_start("msg_01"), message_start("msg_02"), STOP])
    assert t.message_id == "msg_01"
    assert len(check_chunks(out)) == 2


# -- the contract ---------------------------------------------------------------------------------


def stub_names() -> set[str]:
    stub = Path(_pure.__file__).parent.parent / "_native.pyi"
    tree = ast.parse(stub.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef | ast.FunctionDef)}


def test_backends_export_the_stubs_names(kernels: ModuleType) -> None:
    public = {
        n
        for n in dir(kernels)
        if not n.startswith("_") and not isinstance(getattr(kernels, n), ModuleType)
    }
    # The upstream engine is no kernel: its twin is the aiohttp engine (ferrule.upstream), and
    # the suite runs every route on both (tests/test_upstream_native.py for its own surface).
    engine = {"UpstreamEngine"} if kernels is not _pure else set()
    assert public - engine == set(_pure.__all__) == stub_names() - {"UpstreamEngine"}
    assert public & {"UpstreamEngine"} == engine


def test_same_constructor_signatures(native: ModuleType) -> None:
    for name in ("SseDecoder", "StreamTranslator"):
        native_sig = inspect.signature(getattr(native, name))
        pure = inspect.signature(getattr(_pure, name))
        strip = [p.replace(annotation=inspect.Parameter.empty) for p in pure.parameters.values()]
        assert list(native_sig.parameters.values()) == strip


@pytest.mark.parametrize(
    ("flag", "has_usage"), [(1, True), ("yes", True), (0, False), (None, False)]
)
def test_include_usage_is_truthiness(kernels: ModuleType, flag: object, has_usage: bool) -> None:
    out, _ = translate(kernels, [text_answer("x")], include_usage=flag)
    assert (b'"choices":[],"usage"' in out) == has_usage
