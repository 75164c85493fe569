"""Differential tests: the native ``ResponsesStreamEncoder`` must match its pure-Python twin byte
for byte.

Hypothesis builds random Anthropic streams with every block the encoder turns into an item
(text with citations, thinking with signatures, redacted thinking with any ``data``, function /
custom / namespace / JSON-mode tool calls whose input JSON comes in random fragments, web search
calls and results, unknown blocks), the ways a stream goes wrong (an ``error`` event, a body cut
short, ``max_tokens`` and ``refusal`` stops, deltas for the wrong block, blocks never stopped or
started twice, invalid JSON) and usage reports, and cuts the bytes at random points. Both backends
get the same chunks with the same request; the bytes of every call, the final attributes and
what was handed to the sealer must be identical, and (without a size limit) the output must not
depend on the split.
"""

from __future__ import annotations

import hashlib
import json
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrule import _pure
from ferrule.translate.responses_request import ResponsesTranslated, ToolRef
from test_kernels_differential import COUNT, TEXT, draw_splits

EXAMPLES = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

JSON_TOOL = "json_answer"
TOOLS = {
    "get_weather": ToolRef("function", "get_weather"),
    "apply_patch": ToolRef("custom", "apply_patch"),
    "multi__spawn": ToolRef("function", "spawn", "multi"),
    "exec": ToolRef("custom", "exec", "shell"),
}
ECHO = {
    "instructions": 'Be brief \u2028 "quoted" \U0001f600',
    "max_output_tokens": 2**64 - 1,
    "metadata": {"k": "v", "n": [1, 2.5, -0.0, 1e-7, 1e16, None, True]},
    "parallel_tool_calls": True,
    "reasoning": {"effort": "low", "summary": "auto"},
    "temperature": 0.7,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [{"type": "function", "name": "get_weather", "parameters": {}}],
    "top_p": None,
}


def translated(*, summary: bool, compact: bool, json_tool: bool, echo: bool) -> ResponsesTranslated:
    return ResponsesTranslated(
        body={},
        model='gpt-\u00e9"x"',
        tools=TOOLS,
        json_tool=JSON_TOOL if json_tool else None,
        summary=summary,
        compact=compact,
        echo=ECHO if echo else {},
    )


class RecordingSealer:
    """Deterministic (the real one's nonces are random) and remembers what it sealed."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def seal(self, plaintext: bytes, context: bytes) -> str:
        self.calls.append((plaintext, context))
        return "sealed:" + hashlib.sha256(context + plaintext).hexdigest()[:16]


def attrs(enc: Any) -> tuple[Any, ...]:
    values = (
        enc.started,
        enc.done,
        enc.outcome,
        enc.error,
        enc.message_id,
        enc.stop_reason,
        enc.usage,
    )
    return values, tuple(type(v) for v in values)


def run(
    mod: ModuleType,
    tr: ResponsesTranslated,
    chunks: list[bytes],
    *,
    max_event_bytes: int = 0,
    fail_at: int | None = None,
) -> tuple[list[bytes], Any, list[tuple[bytes, bytes]]]:
    sealer = RecordingSealer()
    enc = mod.ResponsesStreamEncoder(
        tr,
        response_id="resp_d1ff",
        created_at=1_700_000_000,
        sealer=sealer,
        tenant="tenant-\u00e9",
        max_event_bytes=max_event_bytes,
    )
    outs = []
    for i, chunk in enumerate(chunks):
        if i == fail_at:
            outs.append(enc.fail("the stream ran past Ferrule's deadline", "timeout_error"))
        outs.append(enc.feed(chunk))
    outs.append(enc.finish())
    outs.append(enc.fail("after the end"))  # nothing once done
    return outs, attrs(enc), sealer.calls


def check_frames(out: bytes) -> None:
    """``event: T`` + ``data: {"type": T, "sequence_number": 0, 1, ...}`` frames, one terminal."""
    frames = out.split(b"\n\n")
    assert frames[-1] == b""
    terminal = 0
    for seq, frame in enumerate(frames[:-1]):
        head, data = frame.split(b"\n")
        obj = orjson.loads(data.removeprefix(b"data: "))
        assert head == b"event: " + obj["type"].encode()
        assert obj["sequence_number"] == seq
        if obj["type"] in ("response.completed", "response.incomplete", "response.failed", "error"):
            terminal += 1
            assert seq == len(frames) - 2, "a terminal event that is not the last"
    assert terminal == 1


# -- streams -------------------------------------------------------------------------------------

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
# Spellings json.dumps never writes, and documents that are not JSON at all.
RAW_JSON = st.sampled_from(
    [
        "",
        "  ",
        "null",
        "-0",
        '{"a": -0, "b": -0.0, "c": 1E5, "d": 1e-0, "e": 18446744073709551616}',
        '{"a": 1, "b": 2, "a": 3}',
        '{"input": "x", "input": 5}',
        '{"input": 5, "input": "last"}',
        '{"input": "\\ud83d\\ude00 \\u00e9\\n\\/\\"\\\\"}',
        '{"input": "\\ud83d"}',
        '{"input": "\\ud83dabcdef"}',
        '{"input": "\\udc00!"}',
        '{"input": "a\\qb"}',
        '{"input": "\\u12G4x"}',
        ' {\n "input" :\t"spaced"}',
        '{"other": 1, "input": "late"}',
        '{"input": "cut sho',
        '{"query": "ferrule", "query": ["not", "a", "string"]}',
        '{"query": "caf\\u00e9"}',
        "[1, 2",
        "1e400",
        '"\\ud800"',
        "[" * 1100 + "]" * 1100,
    ]
)


@st.composite
def json_text(draw: st.DrawFn, custom: bool) -> str:
    """A tool input as streamed JSON text."""
    if draw(st.integers(0, 4)) == 0:
        return draw(RAW_JSON)
    value: Any = {"input": draw(TEXT)} if custom and draw(st.booleans()) else draw(JSON_VALUE)
    style = draw(st.sampled_from(["compact", "ascii", "spaced"]))
    if style == "compact":
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if style == "ascii":
        return json.dumps(value, ensure_ascii=True)
    return json.dumps(value, ensure_ascii=False, indent=1)


def fragments(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=6))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def frame(event: str, obj: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(obj, ensure_ascii=False)}\n\n"


@st.composite
def responses_stream(draw: st.DrawFn) -> bytes:
    frames: list[str] = []

    def emit(event: str, obj: Any) -> None:
        frames.append(frame(event, obj))
        if draw(st.integers(0, 8)) == 0:
            frames.append(frame("ping", {"type": "ping"}))

    def usage() -> dict[str, Any]:
        keys = ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
        u: dict[str, Any] = {k: draw(COUNT) for k in draw(st.lists(st.sampled_from(keys)))}
        if draw(st.booleans()):
            u["output_tokens"] = draw(COUNT)
        if draw(st.integers(0, 4)) == 0:
            u["cache_creation"] = {"ephemeral_5m_input_tokens": draw(COUNT)}
        return u

    def delta(index: int, d: dict[str, Any]) -> None:
        if draw(st.integers(0, 12)) == 0:
            index = draw(st.integers(0, 7))  # a delta for another block
        emit("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})

    if draw(st.integers(0, 20)) != 0:
        message: dict[str, Any] = {"id": draw(TEXT), "type": "message", "usage": usage()}
        emit("message_start", {"type": "message_start", "message": message})
    n_blocks = draw(st.integers(0, 6))
    for index in range(n_blocks):
        kind = draw(
            st.sampled_from(
                [
                    "text",
                    "text",
                    "thinking",
                    "thinking",
                    "redacted_thinking",
                    "tool_use",
                    "tool_use",
                    "server_tool_use",
                    "web_search_tool_result",
                    "mystery",
                ]
            )
        )
        block: dict[str, Any] = {"type": kind}
        if kind == "text":
            block["text"] = ""
        elif kind == "thinking":
            block |= {"thinking": "", "signature": ""}
        elif kind == "redacted_thinking":
            if draw(st.integers(0, 5)):
                block["data"] = draw(st.one_of(TEXT, JSON_VALUE))
        elif kind == "tool_use":
            names = [*TOOLS, JSON_TOOL, "unknown_tool"]
            known = st.sampled_from(names)
            name: Any = draw(st.one_of(known, known, known, TEXT, st.just(["unhashable"])))
            block |= {"id": draw(TEXT), "name": name, "input": {}}
        elif kind == "server_tool_use":
            block |= {"id": "srvtoolu_1", "name": draw(st.sampled_from(["web_search", "other"]))}
        elif kind == "web_search_tool_result":
            block |= {"tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result"}]}
        if draw(st.integers(0, 15)) == 0:
            block = draw(st.sampled_from([{}, {"type": 5}, {"type": "text", "name": {}}]))
        emit(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )
        if draw(st.integers(0, 15)) == 0:  # a repeated start keeps the first
            emit(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text"}},
            )
        if kind == "text":
            for _ in range(draw(st.integers(0, 4))):
                if draw(st.integers(0, 4)) == 0:
                    citation = draw(
                        st.sampled_from(
                            [
                                {
                                    "type": "web_search_result_location",
                                    "url": "https://example.com/\u00e9",
                                    "title": "Example \U0001f600",
                                    "cited_text": "x",
                                },
                                {"type": "web_search_result_location", "url": "https://a.b"},
                                {"type": "web_search_result_location", "url": 5, "title": "t"},
                                {"type": "char_location", "cited_text": "x"},
                                "not an object",
                            ]
                        )
                    )
                    delta(index, {"type": "citations_delta", "citation": citation})
                else:
                    delta(index, {"type": "text_delta", "text": draw(TEXT)})
        elif kind == "thinking":
            for _ in range(draw(st.integers(0, 4))):
                delta(index, {"type": "thinking_delta", "thinking": draw(TEXT)})
            if draw(st.booleans()):
                delta(index, {"type": "signature_delta", "signature": draw(TEXT)})
        elif kind in ("tool_use", "server_tool_use"):
            custom = block.get("name") in ("apply_patch", "exec")
            for piece in fragments(draw, draw(json_text(custom))):
                delta(index, {"type": "input_json_delta", "partial_json": piece})
        if draw(st.integers(0, 8)) == 0:  # any delta type on any block
            dtype = draw(
                st.sampled_from(
                    ["text_delta", "thinking_delta", "input_json_delta", "signature_delta"]
                )
            )
            field = {"text_delta": "text", "thinking_delta": "thinking"}.get(dtype, "partial_json")
            delta(index, {"type": dtype, field: draw(TEXT), "signature": draw(TEXT)})
        if draw(st.integers(0, 6)):  # sometimes never stopped: the next start ends it
            emit("content_block_stop", {"type": "content_block_stop", "index": index})
    end = draw(st.sampled_from(["stop", "stop", "stop", "truncate", "error", "garbage"]))
    if end == "error":
        etype = draw(st.sampled_from(["overloaded_error", "rate_limit_error", "api_error"]))
        emit("error", {"type": "error", "error": {"type": etype, "message": draw(TEXT)}})
    elif end == "garbage":
        frames.append(
            draw(
                st.sampled_from(
                    ["event: message_delta\ndata: {\n\n", "event: message_stop\ndata: []\n\n"]
                )
            )
        )
    reason = draw(
        st.sampled_from(["end_turn", "tool_use", "max_tokens", "refusal", "pause_turn", None])
    )
    emit(
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": reason}, "usage": usage()},
    )
    if end != "truncate":
        emit("message_stop", {"type": "message_stop"})
    return "".join(frames).encode()


def assert_same(
    native: ModuleType,
    tr: ResponsesTranslated,
    stream: bytes,
    chunks: list[bytes],
    **options: Any,
) -> None:
    got = run(native, tr, chunks, **options)
    want = run(_pure, tr, chunks, **options)
    assert got == want
    out = b"".join(want[0])
    check_frames(out)
    if not options.get("max_event_bytes") and options.get("fail_at") is None:
        for mod in (native, _pure):
            whole = run(mod, tr, [stream])
            assert b"".join(whole[0]) == out


@EXAMPLES
@given(
    st.data(),
    responses_stream(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 9),
)
def test_random_streams_match(
    native: ModuleType,
    data: st.DataObject,
    stream: bytes,
    summary: bool,
    compact: bool,
    json_tool: bool,
    how: int,
) -> None:
    tr = translated(
        summary=summary, compact=compact and how == 1, json_tool=json_tool, echo=how != 2
    )
    chunks = draw_splits(data.draw, stream)
    options: dict[str, Any] = {}
    if how == 3:
        options["max_event_bytes"] = 200
    if how == 4:
        options["fail_at"] = data.draw(st.integers(0, len(chunks)))
    assert_same(native, tr, stream, chunks, **options)


PATCH_STREAM = (
    frame("message_start", {"message": {"id": "m", "usage": {"input_tokens": 5}}})
    + frame("content_block_start", {"index": 0, "content_block": {"type": "thinking"}})
    + frame(
        "content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}
    )
    + frame(
        "content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "s"}}
    )
    + frame(
        "content_block_start",
        {"index": 1, "content_block": {"type": "tool_use", "id": "c", "name": "apply_patch"}},
    )
    + frame(
        "content_block_delta",
        {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"input": "+ \\ud83d'}},
    )
    + frame(
        "content_block_delta",
        {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '\\ude00\\n"}'}},
    )
    + frame("content_block_stop", {"index": 1})
    + frame("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}})
    + frame("message_stop", {})
).encode()


def test_a_custom_tool_call_split_inside_a_surrogate_pair(native: ModuleType) -> None:
    """Codex's apply_patch: the freeform input streams decoded, the pair split across deltas."""
    tr = translated(summary=True, compact=False, json_tool=False, echo=True)
    for cut in range(0, len(PATCH_STREAM), 37):
        assert_same(native, tr, PATCH_STREAM, [PATCH_STREAM[:cut], PATCH_STREAM[cut:]])
    out = b"".join(run(native, tr, [PATCH_STREAM])[0])
    deltas = [
        orjson.loads(f.split(b"\n")[1][6:])["delta"]
        for f in out.split(b"\n\n")[:-1]
        if f.startswith(b"event: response.custom_tool_call_input.delta")
    ]
    assert "".join(deltas) == "+ \U0001f600\n"


def test_fail_is_final_on_both_backends(kernels: ModuleType) -> None:
    tr = translated(summary=False, compact=False, json_tool=False, echo=False)
    start = frame("message_start", {"message": {"id": "m"}}).encode()
    enc = kernels.ResponsesStreamEncoder(
        tr, response_id="resp_1", created_at=1, sealer=RecordingSealer(), tenant="t"
    )
    assert enc.fail("too slow", "timeout_error").startswith(b"event: error\n")
    assert (enc.outcome, enc.error) == ("upstream_error", ("timeout_error", "too slow"))
    assert enc.feed(start) == b"" and enc.finish() == b""
    enc = kernels.ResponsesStreamEncoder(
        tr, response_id="resp_1", created_at=1, sealer=RecordingSealer(), tenant="t"
    )
    enc.feed(start)
    tail = enc.fail("the upstream connection failed")
    event = orjson.loads(tail.split(b"\n")[1].removeprefix(b"data: "))
    assert event["type"] == "response.failed" and event["sequence_number"] == 2
    assert event["response"]["error"] == {
        "code": "server_error",
        "message": "the upstream connection failed",
    }
    assert enc.fail("again") == b"" and enc.finish() == b""


@pytest.mark.parametrize("together", [False, True], ids=["two chunks", "one chunk"])
def test_a_line_over_the_limit_after_the_start_fails_the_started_response(
    kernels: ModuleType, together: bool
) -> None:
    tr = translated(summary=False, compact=False, json_tool=False, echo=False)
    start = frame("message_start", {"message": {"id": "m"}}).encode()
    big = b"data: " + b"x" * 500
    enc = kernels.ResponsesStreamEncoder(
        tr,
        response_id="resp_1",
        created_at=1,
        sealer=RecordingSealer(),
        tenant="t",
        max_event_bytes=256,
    )
    chunks = [start + big] if together else [start, big]
    out = b"".join(enc.feed(chunk) for chunk in chunks)
    assert enc.started and out.startswith(b"event: response.created\n")
    assert (enc.outcome, enc.error) == (
        "protocol_error",
        ("api_error", "SSE line longer than 256 bytes"),
    )
    assert b"event: response.failed\n" in out


def test_a_sealer_error_comes_out_of_feed(kernels: ModuleType) -> None:
    class Broken:
        def seal(self, plaintext: bytes, context: bytes) -> str:
            raise RuntimeError("no key")

    tr = translated(summary=False, compact=True, json_tool=False, echo=False)
    enc = kernels.ResponsesStreamEncoder(
        tr, response_id="resp_1", created_at=1, sealer=Broken(), tenant="t"
    )
    stream = frame("message_start", {"message": {"id": "m"}}) + frame("message_stop", {})
    with pytest.raises(RuntimeError, match="no key"):
        enc.feed(stream.encode())


def test_backend_exports_the_encoder() -> None:
    """``FERRULE_BACKEND`` chooses the Responses route's encoder as it chooses the others."""
    from ferrule import backend

    assert backend.load("python")[1].ResponsesStreamEncoder is _pure.ResponsesStreamEncoder
    chosen = backend.load()[1].ResponsesStreamEncoder
    assert backend.ResponsesStreamEncoder is chosen


def test_the_translate_suites_messages_match(native: ModuleType) -> None:
    """The curated answers of test_responses_translate (every block kind, citations, web search,
    custom tools, max_tokens) with a real translated request: the same bytes on both backends,
    fed whole and one event at a time."""
    import test_responses_translate as suite

    for msg in suite.MESSAGES:
        stream = suite.anthropic_sse(msg)
        events = [e + b"\n\n" for e in stream.split(b"\n\n")[:-1]]
        for chunks in ([stream], events):
            assert_same(native, suite.STREAM_TR, stream, chunks)


def test_usage_sums_past_u64_are_capped_not_a_crash(kernels: ModuleType) -> None:
    """orjson writes no int past 2**64 - 1: a broken upstream's counts must not kill the stream."""
    tr = translated(summary=False, compact=False, json_tool=False, echo=False)
    big = {"input_tokens": 2**64 - 1, "cache_read_input_tokens": 5, "output_tokens": 2**64 - 1}
    stream = frame("message_start", {"message": {"id": "m", "usage": big}}) + frame(
        "message_stop", {}
    )
    outs, _, _ = run(kernels, tr, [stream.encode()])
    last = orjson.loads(b"".join(outs).split(b"\n\n")[-2].split(b"\n")[1][6:])
    assert last["type"] == "response.completed"
    usage = last["response"]["usage"]
    assert usage["input_tokens"] == usage["total_tokens"] == 2**64 - 1
    assert usage["input_tokens_details"]["cached_tokens"] == 5
