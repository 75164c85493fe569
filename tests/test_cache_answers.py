"""The stored form of an answer (ferrule.cache.answers): rebuilt from a stream, replayed as a
stream, and the replay equivalent to the JSON path. Kernel-dependent tests run on both backends
(``kernels`` fixture): the accumulator's SSE decoder and the StreamTranslator of the replay."""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from ferrule.cache.answers import (
    MessageAccumulator,
    hit_usage,
    load_message,
    message_to_sse,
    storable_json,
)
from ferrule.mock import sse as mock_sse
from ferrule.mock.answers import plan_answer
from ferrule.mock.directives import Directives
from ferrule.mock.options import MockOptions
from ferrule.mock.usage import CacheUsage
from ferrule.translate.response import openai_usage, to_openai
from sse_client import check_stream, text_of

MODEL = "claude-sonnet-4-6"
BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 400,
    "stop_sequences": ["STOP"],
    "messages": [{"role": "user", "content": "hello"}],
    "tools": [
        {
            "name": "get_weather",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ],
}
USAGE = CacheUsage(input_tokens=30, cache_read=2000, cache_write_5m=120, cache_write_1h=40)

# The mock's answer kinds, by directive.
KINDS = {
    "text": {},
    "thinking": {"thinking": ""},
    "tool_use": {"tool": ""},
    "two tools": {"tools2": ""},
    "thinking and tools": {"thinking": "", "tools2": ""},
    "refusal": {"refusal": ""},
    "max_tokens": {"max_tokens": ""},
    "stop_sequence": {"stop_sequence": ""},
    "empty": {"words": "0"},
}


def mock_answer(directives: dict[str, str]) -> tuple[bytes, dict[str, Any]]:
    """(the SSE stream, the JSON message) the simulated upstream sends for one answer."""
    plan = plan_answer(
        BODY,
        model=MODEL,
        directives=Directives(values=dict(directives)),
        options=MockOptions(answer_words=20),
        cache=USAGE,
    )
    return b"".join(event for event, _ in mock_sse.events(plan)), plan.to_json()


def feed(kernels: ModuleType, raw: bytes, size: int) -> MessageAccumulator:
    acc = MessageAccumulator(decoder=kernels.SseDecoder())
    for i in range(0, len(raw), size):
        acc.feed(raw[i : i + size])
        acc.feed(b"")
    return acc


# -- accumulating a stream ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("size", [1, 7, 1 << 20])
def test_accumulator_rebuilds_the_json_answer(kernels: ModuleType, kind: str, size: int) -> None:
    raw, expected = mock_answer(KINDS[kind])
    acc = feed(kernels, raw, size)
    assert acc.state == "complete", acc.error
    assert acc.message() == expected
    assert list(acc.message()) == list(expected)  # same field order as the JSON API
    stored = acc.storable()
    assert stored is not None and orjson.loads(stored) == expected
    Message.model_validate(acc.message())


def test_accumulator_tool_input_from_partial_json(kernels: ModuleType) -> None:
    raw, expected = mock_answer(KINDS["two tools"])
    message = feed(kernels, raw, 5).message()
    tools = [b for b in message["content"] if b["type"] == "tool_use"]
    assert [t["input"] for t in tools] == [{"city": "city-value", "days": 1}, {}]
    assert message["stop_reason"] == "tool_use"
    # usage merged: input and cache counts from message_start, output from message_delta
    assert message["usage"] == expected["usage"]
    assert message["usage"]["cache_read_input_tokens"] == 2000


def test_accumulator_keeps_thinking_signature(kernels: ModuleType) -> None:
    raw, _ = mock_answer(KINDS["thinking"])
    thinking = feed(kernels, raw, 9).message()["content"][0]
    assert thinking["type"] == "thinking"
    assert thinking["thinking"] and len(thinking["signature"]) > 40


@pytest.mark.parametrize(
    ("directive", "state"),
    [("truncate", "streaming"), ("midstream_error", "failed")],
)
def test_broken_streams_are_never_complete(kernels: ModuleType, directive: str, state: str) -> None:
    raw, _ = mock_answer({directive: ""})
    acc = feed(kernels, raw, 11)
    assert acc.state == state
    assert not acc.complete and acc.storable() is None
    with pytest.raises(ValueError):
        acc.message()


def test_no_prefix_of_a_stream_is_complete(kernels: ModuleType) -> None:
    raw, _ = mock_answer(KINDS["thinking and tools"])
    events = raw.split(b"\n\n")
    for n in range(len(events) - 1):  # every cut before the final event
        acc = feed(kernels, b"\n\n".join(events[:n]) + b"\n\n", 1 << 20)
        assert acc.storable() is None, n


def _events(raw: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in raw.split(b"\n\n") if e]


def _replace(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert old in raw
    return raw.replace(old, new, 1)


def test_malformed_streams_fail(kernels: ModuleType) -> None:
    raw, _ = mock_answer(KINDS["tool_use"])
    events = _events(raw)
    broken = {
        "invalid JSON": _replace(raw, b'"type":"message_delta"', b'"type":"message_delta",'),
        "error event first": b'event: error\ndata: {"type":"error","error":{"type":"api_error"}}\n\n'
        + raw,
        "delta before start": b"".join([events[0], events[3], *events[1:]]),
        "no message_start": b"".join(events[1:]),
        "repeated message_start": events[0] + raw,
        "bad tool JSON": _replace(raw, b'"partial_json":"{', b'"partial_json":"{{'),
        "unknown delta type": _replace(raw, b"input_json_delta", b"future_delta"),
        "no message_delta": b"".join(e for e in events if b"message_delta" not in e),
        "block never stopped": b"".join(e for e in events if b"content_block_stop" not in e),
    }
    for name, data in broken.items():
        acc = feed(kernels, data, 1 << 20)
        assert acc.state == "failed" and acc.storable() is None, name
        assert acc.error, name


def test_oversized_answer_is_not_stored(kernels: ModuleType) -> None:
    raw, _ = mock_answer(KINDS["text"])
    acc = MessageAccumulator(max_bytes=len(raw) - 1, decoder=kernels.SseDecoder())
    acc.feed(raw)
    assert acc.state == "failed" and "larger" in (acc.error or "")
    acc = MessageAccumulator(max_bytes=len(raw), decoder=kernels.SseDecoder())
    acc.feed(raw)
    assert acc.complete


def test_events_after_message_stop_are_ignored(kernels: ModuleType) -> None:
    raw, expected = mock_answer(KINDS["text"])
    acc = feed(kernels, raw + b'event: error\ndata: {"type":"error"}\n\n', 1 << 20)
    assert acc.complete and acc.message() == expected


def test_unknown_events_and_pings_are_skipped(kernels: ModuleType) -> None:
    raw, expected = mock_answer(KINDS["text"])
    extra = b'event: future_event\ndata: {"type":"future_event"}\n\n: comment\n\n'
    acc = feed(kernels, extra + raw.replace(b"event: ping", extra + b"event: ping"), 3)
    assert acc.complete and acc.message() == expected


# -- the JSON path ------------------------------------------------------------------------------


def test_storable_json() -> None:
    _, message = mock_answer(KINDS["two tools"])
    stored = storable_json(orjson.dumps(message, option=orjson.OPT_INDENT_2))
    assert stored is not None and orjson.loads(stored) == message
    assert load_message(stored) == message
    not_answers = [
        b"not json",
        b'{"type":"error","error":{"type":"api_error","message":"boom"}}',
        orjson.dumps({**message, "stop_reason": None}),
        orjson.dumps({**message, "content": "text"}),
        orjson.dumps([message]),
    ]
    for raw in not_answers:
        assert storable_json(raw) is None, raw
        assert load_message(raw) is None, raw


def test_hit_usage_is_the_original_usage_copied() -> None:
    _, message = mock_answer(KINDS["text"])
    usage = hit_usage(message)
    assert usage == message["usage"] and usage is not message["usage"]
    usage["cache_creation"]["ephemeral_5m_input_tokens"] = -1
    assert message["usage"]["cache_creation"]["ephemeral_5m_input_tokens"] == 120
    assert hit_usage({"content": []}) == {}


# -- replay -------------------------------------------------------------------------------------

EXTRA_MESSAGES: dict[str, dict[str, Any]] = {
    "server tools, redacted thinking, citations, unicode": {
        "id": "msg_x",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [
            {"type": "redacted_thinking", "data": "opaque=="},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
             "input": {"query": "weather"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
             "content": [{"type": "web_search_result", "url": "https://x", "title": "X",
                          "encrypted_content": "e", "page_age": None}]},
            {"type": "text", "text": "Sunny — 😀 " * 40,
             "citations": [{"type": "web_search_result_location", "url": "https://x",
                            "title": "X", "encrypted_index": "i", "cited_text": "sun"}]},
            {"type": "tool_use", "id": "toolu_1", "name": "get_time",
             "input": {"nested": {"a": [1, 2.5, None, "\u2028"]}, "long": "z" * 300}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 77,
                  "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 0}},
    },
    "refusal with stop_details": {
        "id": "msg_r", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "text", "text": "I can't"}],
        "stop_reason": "refusal", "stop_sequence": None,
        "stop_details": {"type": "refusal", "category": None, "explanation": None},
        "usage": {"input_tokens": 5, "output_tokens": 3},
    },
}  # fmt: skip


def all_messages() -> list[tuple[str, dict[str, Any]]]:
    return [(k, mock_answer(d)[1]) for k, d in KINDS.items()] + list(EXTRA_MESSAGES.items())


@pytest.mark.parametrize(("name", "message"), all_messages(), ids=lambda v: str(v)[:30])
def test_replay_rebuilds_the_same_message(
    kernels: ModuleType, name: str, message: dict[str, Any]
) -> None:
    before = copy.deepcopy(message)
    raw = message_to_sse(message)
    assert message == before
    acc = feed(kernels, raw, 13)
    assert acc.complete, acc.error
    assert acc.message() == message


@pytest.mark.parametrize(("name", "message"), all_messages(), ids=lambda v: str(v)[:30])
def test_replay_is_a_valid_anthropic_stream(name: str, message: dict[str, Any]) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    names = []
    for event in _events(message_to_sse(message)):
        head, data = event.split(b"\n", 1)
        assert head.startswith(b"event: ") and data.startswith(b"data: ")
        payload = orjson.loads(data[len(b"data: ") :])
        assert payload["type"] == head[len(b"event: ") :].decode()
        names.append(payload["type"])
        if payload["type"] != "ping":
            adapter.validate_python(payload)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]


def _tool_calls(chunks: list[Any]) -> list[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            if tc.id:
                call["id"] = tc.id
            if tc.function and tc.function.name:
                call["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                call["arguments"] += tc.function.arguments
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize(("name", "message"), all_messages(), ids=lambda v: str(v)[:30])
@pytest.mark.parametrize("include_usage", [False, True])
def test_replay_through_the_stream_translator_matches_the_json_path(
    kernels: ModuleType, name: str, message: dict[str, Any], include_usage: bool
) -> None:
    translator = kernels.StreamTranslator("my-model", 1700000000, include_usage=include_usage)
    raw = message_to_sse(message)
    out = b"".join(translator.feed(raw[i : i + 100]) for i in range(0, len(raw), 100))
    out += translator.finish()
    assert translator.outcome == "complete"
    chunks = check_stream(out, expect_usage=include_usage)

    json_answer = orjson.loads(to_openai(message, model="my-model", created=1, json_tool=None))
    choice = json_answer["choices"][0]
    assert text_of(chunks) == (choice["message"]["content"] or "")
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    assert reasoning == choice["message"].get("reasoning_content", "")
    streamed_calls = _tool_calls(chunks)
    json_calls = choice["message"].get("tool_calls", [])
    assert [(c["id"], c["name"]) for c in streamed_calls] == [
        (c["id"], c["function"]["name"]) for c in json_calls
    ]
    assert [orjson.loads(c["arguments"]) for c in streamed_calls] == [
        orjson.loads(c["function"]["arguments"]) for c in json_calls
    ]
    finish = next(
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    )
    assert finish == choice["finish_reason"]
    assert chunks[0].id == json_answer["id"]
    if include_usage:
        usage = chunks[-1].usage
        assert usage is not None
        assert usage.model_dump(exclude_none=True) == openai_usage(message["usage"])
