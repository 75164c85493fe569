"""Differential tests: the native kernels must match their pure-Python twins byte for byte.

Hypothesis generates valid Anthropic streams (random unicode, every way of framing SSE, every
JSON spelling), malformed ones (byte soup, mutations, tricky JSON), and splits each at random
points, biased towards the hard places: between ``\\r`` and ``\\n`` and inside a multi-byte
character, with empty chunks thrown in. Both backends get the same chunks; the bytes returned by
every call and the final attributes must be identical, and (without a size limit) the output must
not depend on the split.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrule import _pure

EXAMPLES = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

MODEL = 'claude-\u2028"model"\x7f'
CREATED = 1_700_000_000

# -- generic helpers -------------------------------------------------------------------------------


def draw_splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """Cut ``data`` at random points, favouring the spots where decoders break, plus empty chunks."""
    cuts = set(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    hard = [i for i in range(1, len(data)) if data[i - 1] == 0x0D or 0x80 <= data[i] < 0xC0]
    if hard:
        cuts |= set(draw(st.lists(st.sampled_from(hard), max_size=8)))
    chunks: list[bytes] = []
    prev = 0
    for cut in sorted(cuts):
        chunks.append(data[prev:cut])
        prev = cut
        if draw(st.integers(0, 9)) == 0:
            chunks.append(b"")
    chunks.append(data[prev:])
    return chunks


def translator_attrs(t: Any) -> tuple[Any, ...]:
    values = (t.started, t.done, t.outcome, t.error, t.message_id, t.stop_reason, t.usage)
    return values, tuple(type(v) for v in values)


def run_translator(mod: ModuleType, chunks: list[bytes], **options: Any) -> tuple[list[bytes], Any]:
    t = mod.StreamTranslator(MODEL, CREATED, **options)
    outs = [t.feed(chunk) for chunk in chunks]
    outs.append(t.finish())
    return outs, translator_attrs(t)


def assert_same_translation(native: ModuleType, chunks: list[bytes], **options: Any) -> bytes:
    """Both backends give the same bytes call by call; returns the whole output."""
    got = run_translator(native, chunks, **options)
    want = run_translator(_pure, chunks, **options)
    assert got == want
    out = b"".join(want[0])
    for frame in out.split(b"\n\n")[:-1]:
        assert frame.startswith(b"data: ")
        if frame != b"data: [DONE]":
            orjson.loads(frame[6:])  # every frame is valid JSON
    return out


def assert_split_independent(native: ModuleType, data: bytes, out: bytes, **options: Any) -> None:
    """Fed whole, both backends give the same bytes as fed in pieces."""
    for mod in (native, _pure):
        whole, _ = run_translator(mod, [data], **options)
        assert b"".join(whole) == out


# -- valid streams ---------------------------------------------------------------------------------

TRICKY_CHARS = "\x00\x01\x08\t\n\x0b\x0c\r\x1b\x1f\x7f\x80\x85\"\\/'<>&\u00e9\u2028\u2029\ufeff\ufffd\U0001f600\U0001f1eb\U0001f1f7 ab"
TEXT = st.one_of(st.text(max_size=30), st.text(alphabet=TRICKY_CHARS, max_size=30))
STOP_REASONS = st.one_of(
    st.sampled_from(
        [
            "end_turn",
            "stop_sequence",
            "pause_turn",
            "max_tokens",
            "model_context_window_exceeded",
            "tool_use",
            "refusal",
        ]
    ),
    st.none(),
    TEXT,
)
COUNT = st.one_of(
    st.integers(0, 10**6),
    st.integers(0, 2**64 + 10),
    st.sampled_from(
        [
            2**64 - 1,
            2**64,
            -1,
            -(2**63) - 1,
            0.0,
            -0.0,
            1.0,
            2.5,
            True,
            False,
            None,
            "7",
            [1],
            {"n": 1},
        ]
    ),
)


def usage(draw: st.DrawFn) -> dict[str, Any]:
    keys = [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    ]
    u = {k: draw(COUNT) for k in draw(st.lists(st.sampled_from(keys), unique=True))}
    if draw(st.booleans()):
        u["cache_creation"] = {
            k: draw(COUNT)
            for k in draw(
                st.lists(
                    st.sampled_from(["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"])
                )
            )
        }
    return u


def dumps(draw: st.DrawFn, obj: Any) -> list[str]:
    """``obj`` as JSON in one of several spellings, as the lines of the ``data`` field."""
    style = draw(st.sampled_from(["compact", "ascii", "spaced", "indent"]))
    if style == "compact":
        return [json.dumps(obj, ensure_ascii=False, separators=(",", ":"))]
    if style == "ascii":  # \\uXXXX escapes, surrogate pairs for astral characters
        return [json.dumps(obj, ensure_ascii=True)]
    if style == "spaced":
        return [json.dumps(obj, ensure_ascii=False, separators=(" , ", " : "))]
    return json.dumps(obj, ensure_ascii=False, indent=2).split("\n")


def frame(draw: st.DrawFn, event: str | None, obj: Any, eol: str) -> str:
    lines = []
    if draw(st.integers(0, 5)) == 0:
        lines.append(": keep-alive")
    if event is not None:
        lines.append(("event:" if draw(st.booleans()) else "event: ") + event)
    sep = "data:" if draw(st.booleans()) else "data: "
    lines += [sep + line for line in dumps(draw, obj)]
    if draw(st.integers(0, 5)) == 0:
        lines.append("id: " + draw(TEXT).replace("\r", "").replace("\n", ""))
    return eol.join(lines) + eol + eol


@st.composite
def anthropic_stream(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    frames: list[str] = []

    def emit(event: str | None, obj: Any) -> None:
        frames.append(frame(draw, event, obj, eol))
        if draw(st.integers(0, 6)) == 0:
            frames.append(frame(draw, "ping", {"type": "ping"}, eol))
        if draw(st.integers(0, 15)) == 0:
            frames.append(
                frame(
                    draw,
                    draw(st.sampled_from(["future", "message", "Ping"])),
                    {"x": draw(TEXT)},
                    eol,
                )
            )

    message = {
        "id": draw(TEXT),
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude",
        "usage": usage(draw),
    }
    if draw(st.integers(0, 20)) == 0:
        del message["id"]
    emit("message_start", {"type": "message_start", "message": message})
    for index in range(draw(st.integers(0, 5))):
        kind = draw(
            st.sampled_from(["text", "thinking", "tool_use", "tool_use", "redacted_thinking"])
        )
        block: dict[str, Any] = {"type": kind}
        if kind == "tool_use":
            # "json_response" sometimes, so the json_tool option is exercised
            name = draw(st.one_of(TEXT, st.just("json_response")))
            block |= {"id": draw(TEXT), "name": name, "input": {}}
        emit(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )
        for _ in range(draw(st.integers(0, 6))):
            dtype = {
                "text": "text_delta",
                "thinking": "thinking_delta",
                "tool_use": "input_json_delta",
            }.get(kind)
            if dtype is None or draw(st.integers(0, 8)) == 0:
                dtype = draw(
                    st.sampled_from(
                        ["signature_delta", "citations_delta", "text_delta", "input_json_delta"]
                    )
                )
            field = {
                "text_delta": "text",
                "thinking_delta": "thinking",
                "input_json_delta": "partial_json",
            }.get(dtype, "signature")
            d_index = index if draw(st.integers(0, 10)) else draw(st.integers(0, 6))
            emit(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": d_index,
                    "delta": {"type": dtype, field: draw(TEXT)},
                },
            )
        emit("content_block_stop", {"type": "content_block_stop", "index": index})
    end = draw(st.sampled_from(["stop", "stop", "stop", "truncate", "error"]))
    if end == "error":
        emit("error", {"type": "error", "error": {"type": draw(TEXT), "message": draw(TEXT)}})
    emit(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": draw(STOP_REASONS)},
            "usage": usage(draw),
        },
    )
    if end != "truncate":
        emit("message_stop", {"type": "message_stop"})
        if draw(st.booleans()):
            emit(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "late"},
                },
            )
    data = "".join(frames).encode()
    if draw(st.integers(0, 10)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data


@EXAMPLES
@given(st.data(), anthropic_stream(), st.booleans(), st.sampled_from([None, "json_response"]))
def test_valid_streams(
    native: ModuleType,
    data: st.DataObject,
    stream: bytes,
    include_usage: bool,
    json_tool: str | None,
) -> None:
    chunks = draw_splits(data.draw, stream)
    options: dict[str, Any] = {"include_usage": include_usage, "json_tool": json_tool}
    out = assert_same_translation(native, chunks, **options)
    assert_split_independent(native, stream, out, **options)


@EXAMPLES
@given(TEXT, st.sampled_from(["text_delta", "thinking_delta"]))
def test_strings_escaped_like_orjson(native: ModuleType, text: str, dtype: str) -> None:
    field = "text" if dtype == "text_delta" else "thinking"
    stream = (
        b"event: message_start\ndata: " + orjson.dumps({"message": {"id": text}}) + b"\n\n"
        b"event: content_block_start\ndata: "
        + orjson.dumps(
            {"index": 0, "content_block": {"type": "tool_use", "id": text, "name": text}}
        )
        + b"\n\nevent: content_block_delta\ndata: "
        + orjson.dumps({"index": 0, "delta": {"type": dtype, field: text}})
        + b"\n\nevent: content_block_delta\ndata: "
        + orjson.dumps({"index": 0, "delta": {"type": "input_json_delta", "partial_json": text}})
        + b"\n\nevent: error\ndata: "
        + json.dumps({"error": {"type": text, "message": text}}).encode()
        + b"\n\n"
    )
    out = assert_same_translation(native, [stream])
    if text:
        assert out.count(orjson.dumps(text)[1:-1]) >= 5


# -- malformed streams -----------------------------------------------------------------------------

NAMES = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
    "ping",
    "x",
]
PAYLOADS = [
    '{"type":"message_start","message":{"id":"m","usage":{"input_tokens":3}}}',
    '{"message":{"id":"\\u00e9\\ud83d\\ude00"}}',
    '{"index":0,"content_block":{"type":"tool_use","id":"t","name":"n"}}',
    '{"index":-0,"content_block":{"type":"tool_use","id":"t","name":"n"}}',
    '{"index":0,"delta":{"type":"text_delta","text":"hi\\n"}}',
    '{"index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"a"}}',
    '{"index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}',
    '{"delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":18446744073709551615}}',
    '{"error":{"type":"overloaded_error","message":"busy"}}',
    "{}",
    "[]",
    '"str"',
    "{",
    '{"a":"\\ud800"}',
    '{"a":1e400}',
    '{"a":-0}',
    '{"a":1,"a":2}',
    "\ufeff{}",
    "{} x",
    "null",
]
FRAGMENTS = st.one_of(
    st.sampled_from(["event: " + n + "\n" for n in NAMES]).map(str.encode),
    st.sampled_from(["data: " + p + "\n" for p in PAYLOADS]).map(str.encode),
    st.sampled_from(
        [
            b"\n",
            b"\r",
            b"\r\n",
            b"\n\n",
            b"data:",
            b"data: ",
            b"event:",
            b":",
            b" ",
            b"id: 1\n",
            b"retry: 5\n",
            b"{",
            b"}",
            b'"',
            b"\\",
        ]
    ),
    st.sampled_from(
        [
            b"\xef\xbb\xbf",
            b"\xff",
            b"\xc3",
            b"\xe2\x82",
            b"\xed\xa0\x80",
            b"\xf0\x9f\x98",
            b"\xc3\xa9",
            b"\x00",
            b"\xe2\x80\xa8",
        ]
    ),
    st.binary(max_size=8),
)
LIMIT = st.one_of(st.just(0), st.integers(1, 200))


@EXAMPLES
@given(st.data(), st.lists(FRAGMENTS, max_size=40).map(b"".join), LIMIT)
def test_malformed_streams(
    native: ModuleType, data: st.DataObject, stream: bytes, limit: int
) -> None:
    chunks = draw_splits(data.draw, stream)
    out = assert_same_translation(native, chunks, max_event_bytes=limit)
    # The line limit bounds what is held of an unfinished line, so a long line that ends in the
    # same chunk passes where a split one breaks it: only without limits is the split moot.
    if limit == 0:
        assert_split_independent(native, stream, out, max_event_bytes=limit)


@st.composite
def mutated_stream(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(anthropic_stream()))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["delete", "insert", "truncate", "flip"]))
        if action == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif action == "insert":
            data[pos:pos] = draw(FRAGMENTS)
        elif action == "truncate":
            del data[pos:]
        elif pos < len(data):
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


@EXAMPLES
@given(st.data(), mutated_stream(), st.booleans())
def test_mutated_streams(
    native: ModuleType, data: st.DataObject, stream: bytes, include_usage: bool
) -> None:
    chunks = draw_splits(data.draw, stream)
    out = assert_same_translation(native, chunks, include_usage=include_usage)
    assert_split_independent(native, stream, out, include_usage=include_usage)


# -- JSON payloads ---------------------------------------------------------------------------------

KEYS = st.one_of(
    st.sampled_from(
        [
            "type",
            "index",
            "delta",
            "text",
            "thinking",
            "partial_json",
            "message",
            "id",
            "name",
            "usage",
            "content_block",
            "stop_reason",
            "error",
            "input_tokens",
            "output_tokens",
            "cache_creation",
            "ephemeral_5m_input_tokens",
        ]
    ),
    st.text(max_size=5),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.sampled_from(["text_delta", "tool_use", "input_json_delta", "thinking_delta"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=20,
)
TOKENS = [
    "-0",
    "-0.0",
    "0e5",
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551616",
    "1" + "0" * 400,
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    '"\\ud800"',
    '"\\udc00"',
    '"\\ud83d\\ude00"',
    '"\\ud800\\u0041"',
    "\\u0000",
    "\x00",
    "\x1f",
    "\ufeff",
    "NaN",
    "Infinity",
    "-",
    "1.",
    ".5",
    "01",
    "+1",
    "tru",
    "nul",
    ",",
    ":",
    "{",
    "}",
    "[",
    "]",
    '"',
    "\\",
    " ",
    "\n",
    "\t",
    "\r",
    "\x0c",
    '{"a":1,"a":[2]}',
    "[" * 130 + "]" * 130,
]


@st.composite
def json_payload(draw: st.DrawFn) -> str:
    value = draw(JSON | st.dictionaries(KEYS, JSON, min_size=1, max_size=6))
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    )
    for _ in range(draw(st.integers(0, 2))):
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos:]
    return text


@EXAMPLES
@given(st.sampled_from(NAMES[:7]), st.lists(json_payload(), min_size=1, max_size=4), st.booleans())
def test_json_payloads(
    native: ModuleType, event: str, payloads: list[str], include_usage: bool
) -> None:
    start = b'event: message_start\ndata: {"message":{"id":"m"}}\n\n'
    body = b"".join(
        b"event: "
        + event.encode()
        + b"\ndata: "
        + p.replace("\r", "").replace("\n", "").encode()
        + b"\n\n"
        for p in payloads
    )
    assert_same_translation(
        native, [start + body, b"event: message_stop\ndata: {}\n\n"], include_usage=include_usage
    )


RAW_COUNTS = [
    "0",
    "-0",
    "7",
    "-1",
    "1.0",
    "1e0",
    "-0.0",
    "0e5",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1" + "0" * 400,
    "true",
    "false",
    "null",
    '"3"',
    "[3]",
    '{"n":3}',
    '"\\ud800"',
    "[" * 1020 + "]" * 1020,
    "[" * 1021 + "]" * 1021,
    "[" * 1022 + "]" * 1022,
    "[" * 1025 + "]" * 1025,
]


@pytest.mark.parametrize("raw", RAW_COUNTS, ids=lambda r: r[:24])
def test_count_spellings(native: ModuleType, raw: str) -> None:
    """Counts as orjson + ``_count`` read them (``-0`` is a count, ``1.0`` is not), at every depth."""
    usage = f'{{"input_tokens":{raw},"cache_creation":{{"ephemeral_1h_input_tokens":{raw}}}}}'
    stream = "".join(
        [
            f'event: message_start\ndata: {{"message":{{"id":"m","usage":{usage}}}}}\n\n',
            f'event: content_block_start\ndata: {{"index":{raw},"content_block":{{"type":"tool_use","id":"t","name":"f"}}}}\n\n',
            f'event: content_block_delta\ndata: {{"index":{raw},"delta":{{"type":"input_json_delta","partial_json":"{{}}"}}}}\n\n',
            f'event: message_delta\ndata: {{"delta":{{}},"usage":{{"output_tokens":{raw}}}}}\n\n',
            "event: message_stop\ndata: {}\n\n",
        ]
    )
    assert_same_translation(native, [stream.encode()], include_usage=True)


@pytest.mark.parametrize("depth", [127, 128, 129, 1023, 1024, 1025])
@pytest.mark.parametrize("where", ["top", "ignored", "index", "usage"])
def test_nesting_limit(native: ModuleType, depth: int, where: str) -> None:
    """orjson accepts 1024 nested containers and rejects 1025, wherever they are."""
    inner = depth - {"top": 0, "ignored": 1, "index": 1, "usage": 3}[where]
    nested = "[" * inner + "]" * inner
    doc = {
        "top": nested,
        "ignored": f'{{"x":{nested}}}',
        "index": f'{{"index":{nested}}}',
        "usage": f'{{"message":{{"id":"m","usage":{{"input_tokens":{nested}}}}}}}',
    }[where]
    stream = f"event: message_start\ndata: {doc}\n\n".encode()
    out = assert_same_translation(native, [stream])
    assert (b"invalid JSON" in out) == (depth > 1024)


# -- SSE decoder -----------------------------------------------------------------------------------


def run_decoder(mod: ModuleType, chunks: list[bytes], **options: int) -> list[Any]:
    """Everything observable, call by call; feeding goes on after an error, as a caller could."""
    decoder = mod.SseDecoder(**options)
    seen: list[Any] = []
    for chunk in chunks:
        try:
            seen.append(decoder.feed(chunk))
        except mod.SseError as exc:
            seen.append(("SseError", str(exc), exc.events))
        seen.append(decoder.retry)
    return seen


@EXAMPLES
@given(st.data(), st.lists(FRAGMENTS, max_size=40).map(b"".join), LIMIT, LIMIT)
def test_decoder(
    native: ModuleType, data: st.DataObject, stream: bytes, max_line: int, max_event: int
) -> None:
    chunks = draw_splits(data.draw, stream)
    options = {"max_line_bytes": max_line, "max_event_bytes": max_event}
    assert run_decoder(native, chunks, **options) == run_decoder(_pure, chunks, **options)
    if max_line == max_event == 0:
        events = [e for result in run_decoder(native, chunks)[::2] for e in result]
        assert events == run_decoder(native, [stream])[0]


@EXAMPLES
@given(st.data(), st.binary(max_size=64))
def test_decoder_invalid_utf8(native: ModuleType, data: st.DataObject, junk: bytes) -> None:
    """U+FFFD replacement agrees (Python ``errors="replace"`` vs Rust ``from_utf8_lossy``)."""
    junk = junk.replace(b"\r", b"").replace(b"\n", b"")
    stream = b"event: " + junk + b"\ndata: " + junk + b"\nid: " + junk + b"\n\n"
    chunks = draw_splits(data.draw, stream)
    got = run_decoder(native, chunks)
    assert got == run_decoder(_pure, chunks)
    events = [e for result in got[::2] for e in result]
    assert events[0][1] == junk.decode("utf-8", "replace")
