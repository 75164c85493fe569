"""Property tests of compression (hypothesis), on both backends.

Random blocks are built from the pieces that matter (ANSI sequences whole and broken, carriage
returns, CRLF, trailing blanks, numbered lines, error lines, JSON punctuation and escapes, huge
numbers, pointer and marker look-alikes, unicode) and from random unicode; JSON documents come
with random whitespace and every number spelling; conversations repeat earlier outputs. The
properties: the native kernel gives the Python twin's bytes, compressing twice changes nothing,
a request compresses to a prefix of the next one, nothing grows, and minified JSON parses to the
same values with the same spelling and key order.
"""

from __future__ import annotations

import copy
import itertools
import json
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrule import _pure, backend
from ferrule.compression import compress_request

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

MODES = ("off", "lossless", "aggressive")
KINDS = ("tool_result", "file", "text")

FRAGMENTS = [
    *("\x1b[31m", "\x1b[0m", "\x1b[1;32m", "\x1b[?25l", "\x1b[K", "\x1b[2A", "\x1b(B", "\x1b7"),
    *("\x1b]0;title\x07", "\x1b]8;;http://x\x1b\\", "\x1bP1$r\x1b\\", "\x1b", "\x1b[", "\x1b[12"),
    *("\x1b]", "\x1b ", "\x1b]x\n", "\x1b\x1b", "\x1b[3\r"),
    *("\r", "\n", "\r\n", "\n\n\n", " ", "  ", "\t", " \n", "\t\r\n", "\x0b", "\x0c"),
    *("word", "ok", "Error: boom", "FAILED", "Traceback (most recent call last):", "  File 'x'"),
    *("1:", "2:", "3:", "  10\t", "  11\t", "12→", " |", "1 |", "12:00:01", "0", "9"),
    *("{", "}", "[", "]", ",", ":", '"', "\\", "\\u00e9", "\\n", '\\"', "true", "null", "-0"),
    *("1.5e+3", "123456789012345678901234567890", "01", "1.", '"a"', '{"k": [1, 2]}'),
    *("é", "😀", "\u2028", "\x00", "\x7f", "\x07", "━", "\ufeff", "→"),
    *("[ferrule: same as ", " above]", "[ferrule: previous line repeated 2 more times]"),
    *("[ferrule: 3 lines cut]", " [ferrule: 9 chars cut] "),
]
LINES = [
    "INFO GET /health 200 0.4ms from 10.0.0.7",
    "WARN pool is 99% full",
    "ok",
    "",
    "   ",
    "\x1b[32mPASSED\x1b[0m tests/test_a.py::test_b",
    "ERROR worker crashed",
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in f',
    "ValueError: bad",
    "x" * 170,
    "y" * 400 + "é" * 50,
    "Z" * 2100,
    "Traceback in a log line",
    "é" * 40 + " [ferrule: 12 chars cut] " + "z" * 30,
    "[ferrule: previous line repeated 2 more times]",
    " 50%\r100%",
]

PIECES = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
LOG = st.lists(st.sampled_from(LINES), max_size=160).map("\n".join)
BIG_LOG = st.lists(st.sampled_from(LINES), min_size=40, max_size=300).map("\n".join)
TEXT = st.one_of(PIECES, st.text(max_size=60), LOG)


@st.composite
def json_docs(draw: st.DrawFn) -> str:
    """A JSON array or object with random whitespace between tokens and odd number spellings."""
    ws = st.sampled_from(["", "", " ", "  ", "\t", "\n", "\r\n", "\n    ", " \r "])
    numbers = st.one_of(
        st.integers(-(2**70), 2**70).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(["-0", "0.0", "1E5", "1e-7", "2.50", "-0.0e+00", "1" * 40, "1E400"]),
    )
    strings = st.tuples(st.text(max_size=8), st.booleans()).map(
        lambda t: json.dumps(t[0], ensure_ascii=t[1])
    )
    scalars = st.one_of(numbers, strings, st.sampled_from(["true", "false", "null"]))

    def dump(depth: int) -> str:
        kind = draw(st.integers(0, 2)) if depth < 4 else 0
        if kind == 0 and depth > 0:
            return draw(scalars)
        items = draw(st.integers(0, 4))
        if kind == 2 or (kind == 0 and draw(st.booleans())):
            body = [f"{draw(strings)}{draw(ws)}:{draw(ws)}{dump(depth + 1)}" for _ in range(items)]
            open_, close = "{", "}"
        else:
            body = [dump(depth + 1) for _ in range(items)]
            open_, close = "[", "]"
        sep = [f"{draw(ws)},{draw(ws)}" for _ in body]
        inner = "".join(part + (sep[i] if i < len(body) - 1 else "") for i, part in enumerate(body))
        return f"{open_}{draw(ws)}{inner}{draw(ws)}{close}"

    return f"{draw(ws)}{dump(0)}{draw(ws)}"


BLOCK_TEXT = st.one_of(TEXT, json_docs())


@st.composite
def conversations(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Blocks with kinds, some repeating earlier ones (as agents repeat outputs)."""
    pool = draw(st.lists(BLOCK_TEXT, min_size=1, max_size=5))
    texts = st.one_of(st.sampled_from(pool), BLOCK_TEXT)
    return draw(st.lists(st.tuples(texts, st.sampled_from(KINDS)), max_size=10))


@EXAMPLES
@given(logs=st.lists(BIG_LOG, min_size=1, max_size=3), cut_at=st.sampled_from([1000, 1500, 4000]))
def test_native_equals_python_on_cut_logs(native: ModuleType, logs: list[str], cut_at: int) -> None:
    blocks = [(log, "tool_result") for log in logs]
    got = run(native, blocks, "aggressive", cut_at)
    assert got == run(_pure, blocks, "aggressive", cut_at)
    assert (
        run(native, list(zip(got, ["tool_result"] * len(got), strict=True)), "aggressive", cut_at)
        == got
    )
    for text, out in zip(logs, got, strict=True):
        assert len(out) <= max(len(text) if len(text) <= cut_at else cut_at, 0)


def run(mod: ModuleType, blocks: list[tuple[str, str]], mode: str, cut_at: int) -> list[str]:
    c = mod.Compressor(mode, cut_at=cut_at)
    return [c.compress(text, kind, f"message {i + 1}") for i, (text, kind) in enumerate(blocks)]


CUT_AT = st.sampled_from([1000, 1500, 24_000])


@EXAMPLES
@given(blocks=conversations(), cut_at=CUT_AT)
def test_native_equals_python(
    native: ModuleType, blocks: list[tuple[str, str]], cut_at: int
) -> None:
    for mode in MODES:
        got = run(native, blocks, mode, cut_at)
        assert got == run(_pure, blocks, mode, cut_at)
        assert all(type(out) is str for out in got)


@EXAMPLES
@given(blocks=conversations(), cut_at=CUT_AT)
def test_properties(kernels: ModuleType, blocks: list[tuple[str, str]], cut_at: int) -> None:
    for mode in MODES:
        out = run(kernels, blocks, mode, cut_at)
        # idempotent: compressing the compressed conversation changes nothing
        again = run(kernels, list(zip(out, (k for _, k in blocks), strict=True)), mode, cut_at)
        assert again == out
        # prefix-stable: the first k blocks alone compress to the same outputs
        k = len(blocks) // 2
        assert run(kernels, blocks[:k], mode, cut_at) == out[:k]
        for (text, kind), new in zip(blocks, out, strict=True):
            assert len(new) <= len(text)  # never grows, in any mode
            assert new or not text  # never empties a block
            if kind == "file" and not new.startswith("[ferrule: same as "):
                assert new == text
            if mode == "off":
                assert new is text


def strip_json_whitespace(doc: str) -> str:
    """Whitespace outside strings removed, by a plain scanner independent of the kernels."""
    out, in_string, escaped = [], False, False
    for ch in doc:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch not in " \t\n\r":
            out.append(ch)
            in_string = ch == '"'
    return "".join(out)


def spelled(doc: str) -> Any:
    """Parsed with every number kept as spelled and every object as its ordered pairs."""
    return json.loads(
        doc, parse_int=str, parse_float=str, parse_constant=str, object_pairs_hook=list
    )


@EXAMPLES
@given(doc=json_docs())
def test_json_minified(kernels: ModuleType, doc: str) -> None:
    out = kernels.Compressor("lossless").compress(doc, "tool_result", "m")
    assert out == strip_json_whitespace(doc)
    assert spelled(out) == spelled(doc)
    try:
        value = orjson.loads(doc)
    except orjson.JSONDecodeError:
        return  # beyond orjson (numbers past a double, say): still valid JSON, checked above
    assert orjson.loads(out) == value


# -- whole requests ------------------------------------------------------------------------------

TOOLS = [("Read", {"file_path": "a.py"}), ("Bash", {"command": "make test"}), ("http", {})]


@st.composite
def agent_sessions(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Anthropic messages of an agent loop: tool calls, their results, some user text."""
    pool = draw(st.lists(BLOCK_TEXT, min_size=1, max_size=4))
    outputs = st.one_of(st.sampled_from(pool), BLOCK_TEXT)
    messages: list[dict[str, Any]] = [{"role": "user", "content": draw(TEXT) or "start"}]
    for turn in range(draw(st.integers(1, 6))):
        calls = draw(st.lists(st.sampled_from(TOOLS), min_size=1, max_size=3))
        ids = [f"t{turn}_{i}" for i in range(len(calls))]
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": i, "name": n, "input": a}
                    for i, (n, a) in zip(ids, calls, strict=True)
                ],
            }
        )
        results: list[dict[str, Any]] = []
        for i in ids:
            text = draw(outputs)
            content: Any = text if draw(st.booleans()) else [{"type": "text", "text": text}]
            results.append({"type": "tool_result", "tool_use_id": i, "content": content})
            if draw(st.integers(0, 4)) == 0:
                results[-1]["cache_control"] = {"type": "ephemeral"}
        if draw(st.booleans()):
            results.append({"type": "text", "text": draw(TEXT) or "go on"})
        messages.append({"role": "user", "content": results})
    return messages


def requests_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"model": "m", "max_tokens": 1, "messages": copy.deepcopy(messages[: i + 1])}
        for i, m in enumerate(messages)
        if m["role"] == "user"
    ]


@settings(EXAMPLES, max_examples=60)
@given(messages=agent_sessions())
def test_requests_prefix_stable_and_same_on_both_backends(
    native: ModuleType, monkeypatch: pytest.MonkeyPatch, messages: list[dict[str, Any]]
) -> None:
    for mode in ("lossless", "aggressive"):
        outputs = {}
        for mod in (native, _pure):
            monkeypatch.setattr(backend, "Compressor", mod.Compressor)
            compressed = [compress_request(body, mode).body for body in requests_of(messages)]
            for a, b in itertools.pairwise(compressed):
                assert b["messages"][: len(a["messages"])] == a["messages"]
            last = compressed[-1]
            assert compress_request(copy.deepcopy(last), mode).body == last  # idempotent
            outputs[mod.__name__] = compressed
        assert outputs[native.__name__] == outputs[_pure.__name__]
