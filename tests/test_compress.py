"""Compression: the kernel's rules as tables, and the policy layer (``ferrule.compression``).

Every kernel test runs on both backends through the ``kernels`` fixture; the policy tests run
``compress_request`` with each backend's ``Compressor`` patched into ``ferrule.backend``.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
from types import ModuleType
from typing import Any

import pytest

from ferrule import _pure, backend, corpus, tokens
from ferrule.compression import compress_request, tool_kind

LOSSLESS: list[tuple[str, str, str, str]] = [
    # (id, kind, input, expected)
    ("plain", "tool_result", "hello", "hello"),
    ("sgr", "tool_result", "\x1b[1;31mred\x1b[0m ok", "red ok"),
    ("osc bel", "tool_result", "a\x1b]0;title\x07b", "ab"),
    ("osc st hyperlink", "tool_result", "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
    ("charset", "tool_result", "a\x1b(Bb", "ab"),
    ("unterminated csi", "tool_result", "a\x1b[12", "a12"),
    ("osc across lines", "tool_result", "a\x1b]0;t\nb", "a0;t\nb"),
    ("lone esc", "tool_result", "a\x1b", "a"),
    ("esc esc", "tool_result", "a\x1b\x1b[0mb", "ab"),
    ("private csi", "tool_result", "\x1b[?25lx\x1b[?25h", "x"),
    ("erase line", "tool_result", "50%\x1b[K\r100%\x1b[K", "100%"),
    ("progress bar", "tool_result", "get\n 10%\r 50%\r100%\ndone", "get\n100%\ndone"),
    ("crlf", "tool_result", "a\r\nb\r\n", "a\nb"),
    ("redraw then clear", "tool_result", "abc\r   \rdef\r", "def"),
    ("trailing spaces", "tool_result", "a  \nb\t \n c", "a\nb\n c"),
    ("blank runs", "tool_result", "\n\na\n\n\n\nb\n \n\t\nc\n\n", "a\n\nb\n\nc"),
    ("leading indent kept", "tool_result", "   x\n  y  ", "   x\n  y"),
    ("unicode", "tool_result", "é\x1b[32m😀 \u2028 \n", "é😀 \u2028"),
    ("form feed kept", "tool_result", "a\x0c\n", "a\x0c"),
    (
        "json object",
        "tool_result",
        '{ "b" : 1 ,\n  "a" : [ true , null ] }\n',
        '{"b":1,"a":[true,null]}',
    ),
    (
        "json numbers as spelled",
        "tool_result",
        "[ -0 , 1.50 , 2E+3 , 123456789012345678901234567890 ]",
        "[-0,1.50,2E+3,123456789012345678901234567890]",
    ),
    (
        "json strings kept",
        "tool_result",
        '[ " a  b " , "\\u00e9\\n\\"" ]',
        '[" a  b ","\\u00e9\\n\\""]',
    ),
    ("json crlf pretty", "tool_result", '{\r\n  "a": 1\r\n}\r\n', '{"a":1}'),
    ("json after ansi", "tool_result", '\x1b[32m{"a": 1}\x1b[0m', '{"a":1}'),
    ("json after cr", "tool_result", 'loading\r{"a": 1}', '{"a":1}'),
    ("not json: trailing comma", "tool_result", "[1, 2,]", "[1, 2,]"),
    ("not json: leading zero", "tool_result", "[01 ]", "[01 ]"),
    ("not json: raw tab in string", "tool_result", '["a\tb"] ', '["a\tb"]'),
    ("not json: bad escape", "tool_result", '["\\x"] ', '["\\x"]'),
    ("not json: two documents", "tool_result", "[1] [2]", "[1] [2]"),
    ("not json: scalar", "tool_result", " 42 ", " 42"),
    ("not json: single quotes", "tool_result", "{'a': 1}", "{'a': 1}"),
    ("text: only escapes", "text", "a  \r\n\x1b[1mb\x1b[0m\n\n\n", "a  \r\nb\n\n\n"),
    ("text: json kept", "text", '{ "a": 1 }', '{ "a": 1 }'),
    ("file kept", "file", "x = 1  \n\n\n\x1b[0m\r\n", "x = 1  \n\n\n\x1b[0m\r\n"),
    (
        "cat -n listing kept",
        "tool_result",
        "     1\tdef f():  \n     2\t\n     3\t    return 1  \n",
        "     1\tdef f():  \n     2\t\n     3\t    return 1  \n",
    ),
    (
        "swe-agent listing kept",
        "text",
        "[File: a.py]\n9:x  \n10:y\n11:\x1b[0m",
        "[File: a.py]\n9:x  \n10:y\n11:\x1b[0m",
    ),
    ("arrow listing kept", "tool_result", "  7→a \n  8→b \n  9→c ", "  7→a \n  8→b \n  9→c "),
    ("pipe listing kept", "tool_result", "1 | a \n2 | b \n3 | c \n", "1 | a \n2 | b \n3 | c \n"),
    (
        "timestamps are no listing",
        "tool_result",
        "12:00:01 a \n12:00:02 b \n12:00:03 c ",
        "12:00:01 a\n12:00:02 b\n12:00:03 c",
    ),
    ("two numbered lines are no listing", "tool_result", "1: a \n2: b \n", "1: a\n2: b"),
    ("gap is no listing", "tool_result", "1: a \n2: b \n4: c \n", "1: a\n2: b\n4: c"),
    (
        "ten digits are no number",
        "tool_result",
        "1234567890: a \n1234567891: b \n1234567892: c ",
        "1234567890: a\n1234567891: b\n1234567892: c",
    ),
    ("never empty: blanks", "tool_result", " \n\t\n", " \n\t\n"),
    ("never empty: escapes", "text", "\x1b[0m", "\x1b[0m"),
    ("empty", "tool_result", "", ""),
]


def one(kernels: ModuleType, text: str, kind: str, mode: str = "lossless", **kw: Any) -> str:
    out = kernels.Compressor(mode, **kw).compress(text, kind, "message 1")
    assert isinstance(out, str)
    return out


@pytest.mark.parametrize(
    ("kind", "text", "expected"), [c[1:] for c in LOSSLESS], ids=[c[0] for c in LOSSLESS]
)
def test_lossless(kernels: ModuleType, kind: str, text: str, expected: str) -> None:
    out = one(kernels, text, kind)
    assert out == expected
    assert one(kernels, out, kind) == out  # idempotent
    assert one(kernels, text, kind, "off") is text
    if out == text:
        assert out is text  # unchanged blocks come back as the same object


def test_dedup_points_backwards(kernels: ModuleType) -> None:
    log = "\n".join(f"line {i}: all good" for i in range(20))
    c = kernels.Compressor("lossless")
    assert c.compress(log, "tool_result", "message 2 block 1") == log
    assert c.compress("hi", "text", "message 3") == "hi"
    # The same output again, spelled differently (ANSI, CRLF) and as a file: a pointer.
    noisy = "\x1b[32m" + log.replace("\n", "\r\n") + "\x1b[0m\r\n"
    pointer = "[ferrule: same as message 2 block 1 above]"
    assert c.compress(noisy, "tool_result", "message 4 block 1") == pointer
    assert c.compress(log, "file", "message 6 block 1") == pointer
    assert c.compress(pointer, "tool_result", "message 8 block 1") == pointer
    assert c.compress("hi", "text", "message 9") == "hi"  # short blocks are kept
    # Never forwards: the first copy is kept by a fresh compressor, whatever follows.
    fresh = kernels.Compressor("lossless")
    assert fresh.compress(noisy, "tool_result", "message 4 block 1") == log


def test_dedup_needs_200_characters(kernels: ModuleType) -> None:
    for size, pointed in ((199, False), (200, True)):
        text = "é" * size  # characters, not bytes
        c = kernels.Compressor("lossless")
        c.compress(text, "text", "a")
        assert (c.compress(text, "text", "b") != text) is pointed


def test_pointer_is_never_longer(kernels: ModuleType) -> None:
    text = "x" * 210
    c = kernels.Compressor("lossless")
    c.compress(text, "text", "r" * 300)
    assert c.compress(text, "text", "b") == text


def test_off_mode(kernels: ModuleType) -> None:
    c = kernels.Compressor("off")
    text = "\x1b[0m" + "x  \n" * 100
    assert c.compress(text, "tool_result", "a") is text
    assert c.compress(text, "tool_result", "b") is text


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("max",), {}),
        (("Lossless",), {}),
        (("lossless",), {"cut_at": 999}),
        (("off",), {"cut_at": -1}),
    ],
)
def test_bad_arguments(kernels: ModuleType, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        kernels.Compressor(*args, **kwargs)


def test_bad_kind(kernels: ModuleType) -> None:
    for mode in ("off", "lossless"):
        with pytest.raises(ValueError):
            kernels.Compressor(mode).compress("x", "image", "a")


def test_same_signature(native: ModuleType) -> None:
    native_sig = inspect.signature(native.Compressor)
    pure = inspect.signature(_pure.Compressor)
    strip = [p.replace(annotation=inspect.Parameter.empty) for p in pure.parameters.values()]
    assert list(native_sig.parameters.values()) == strip


# -- aggressive -----------------------------------------------------------------------------------

HEALTH = "INFO GET /health 200 0.4ms from 10.0.0.7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"start\n{HEALTH}\n{HEALTH}\n{HEALTH}\nend",
            f"start\n{HEALTH}\n[ferrule: previous line repeated 2 more times]\nend",
        ),
        ("a\nok\nok\nok\nok\nb", "a\nok\nok\nok\nok\nb"),  # the marker would be longer
        (f"{HEALTH}\n{HEALTH}\nx", f"{HEALTH}\n{HEALTH}\nx"),  # two is no run
        (
            "\x1b[33mWARN pool is 99% full, waiting for a slot\x1b[0m\r\n" * 9,
            "WARN pool is 99% full, waiting for a slot\n[ferrule: previous line repeated 8 more times]",
        ),
    ],
)
def test_aggressive_runs(kernels: ModuleType, text: str, expected: str) -> None:
    out = one(kernels, text, "tool_result", "aggressive")
    assert out == expected
    assert one(kernels, out, "tool_result", "aggressive") == out
    assert one(kernels, text, "text", "aggressive") == kernels.Compressor("lossless").compress(
        text, "text", "x"
    )


def test_aggressive_runs_to_a_fixpoint(kernels: ModuleType) -> None:
    # Collapsing the first run creates lines equal to their neighbours: collapsed again.
    marker = "[ferrule: previous line repeated 2 more times]"
    line = "the same log line, long enough"
    text = "\n".join([f"{line}\n{marker}"] * 2 + [line] * 3 + [marker] * 2)
    out = one(kernels, text, "tool_result", "aggressive")
    assert one(kernels, out, "tool_result", "aggressive") == out


def server_log(lines: int) -> list[str]:
    return [
        f"2026-11-27T10:00:{i % 60:02}Z INFO request {i} served in {i % 7}ms" for i in range(lines)
    ]


def test_aggressive_cut_keeps_head_tail_and_errors(kernels: ModuleType) -> None:
    log = server_log(3000)
    log[1500:1503] = [
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in f',
        "KeyError: 'k'",
    ]
    log[2000] = "worker 3: connection refused, FATAL"
    text = "\n".join(log)
    out = one(kernels, text, "tool_result", "aggressive")
    assert len(out) <= 24_000
    assert out.startswith(log[0] + "\n") and out.endswith("\n" + log[-1])
    assert "\n".join(log[1500:1503]) in out
    assert f"\n{log[2000]}\n" in out
    assert "lines cut]\nTraceback" in out
    cut = sum(
        int(m.split()[1])
        for m in out.split("\n")
        if m.startswith("[ferrule: ") and m.endswith(" lines cut]")
    )
    kept = [line for line in out.split("\n") if not line.startswith("[ferrule: ")]
    assert cut + len(kept) == len(log)
    assert one(kernels, out, "tool_result", "aggressive") == out
    assert one(kernels, text, "tool_result", "lossless") == text


def test_aggressive_cut_at_option(kernels: ModuleType) -> None:
    text = "\n".join(server_log(100))
    out = one(kernels, text, "tool_result", "aggressive", cut_at=2000)
    assert len(out) <= 2000
    assert one(kernels, out, "tool_result", "aggressive", cut_at=2000) == out


def test_aggressive_caps_long_lines(kernels: ModuleType) -> None:
    text = "é" * 50_000
    out = one(kernels, text, "tool_result", "aggressive")
    assert out == "é" * 2400 + " [ferrule: 46600 chars cut] " + "é" * 1000
    # A long one-line JSON document is cut like any line; the result is no longer JSON.
    doc = json.dumps([{"id": i, "name": f"item {i}"} for i in range(2000)])
    out = one(kernels, doc, "tool_result", "aggressive")
    assert len(out) < 4000 and " chars cut] " in out


def test_aggressive_files_untouched(kernels: ModuleType) -> None:
    text = "\n".join(server_log(3000))
    assert one(kernels, text, "file", "aggressive") is text


# -- the policy layer --------------------------------------------------------------------------


@pytest.fixture
def policy(kernels: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """compress_request on one backend."""
    monkeypatch.setattr(backend, "Compressor", kernels.Compressor)
    return kernels


@pytest.mark.parametrize(
    ("name", "tool_input", "kind"),
    [
        ("Read", {}, "file"),
        ("str_replace_editor", {"command": "view"}, "file"),
        ("str_replace_based_edit_tool", {}, "file"),
        ("NotebookEdit", {}, "file"),
        ("open_file", {}, "file"),
        ("view", {}, "file"),
        ("Grep", {}, "file"),
        ("MultiEdit", {}, "file"),
        ("Bash", {"command": "cat src/app.py"}, "file"),
        ("Bash", {"command": "cd /repo && sed -n 1,40p app.py"}, "file"),
        ("shell", {"cmd": ["git", "diff"]}, "file"),
        ("Bash", {"command": "pytest -q"}, "tool_result"),
        ("Bash", {"command": "concatenate"}, "tool_result"),
        ("get_reservation_details", {"reservation_id": "X"}, "tool_result"),
        ("search_direct_flight", {}, "tool_result"),
        ("threadsafe_run", {}, "tool_result"),
        (None, None, "tool_result"),
    ],
)
def test_tool_kind(name: Any, tool_input: Any, kind: str) -> None:
    assert tool_kind(name, tool_input) == kind


def conversation() -> dict[str, Any]:
    noisy = "\x1b[32mok\x1b[0m  \r\n" * 3
    listing = "\n".join(f"{n:6}\tx = {n}  " for n in range(1, 40))
    data = json.dumps({"rows": [{"id": 2**70, "name": "Zoë"}] * 5}, indent=2, ensure_ascii=False)
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "sys  \n\n\n", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "fix it  \x1b[0m\n\n\n"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Looking.  \n\n\n"},
                    {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "make"}},
                    {
                        "type": "tool_use",
                        "id": "t2",
                        "name": "Read",
                        "input": {"file_path": "a.py"},
                    },
                    {"type": "tool_use", "id": "t3", "name": "http", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": noisy},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t2",
                        "content": "a = 1  \n\n\nb = 2  \n",
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "t3",
                        "content": [
                            {"type": "text", "text": data},
                            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                        ],
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "text", "text": listing},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t4", "name": "http", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t4", "content": data + "\n"}],
            },
        ],
    }


def test_compress_request(policy: ModuleType) -> None:
    body = conversation()
    original = copy.deepcopy(body)
    result = compress_request(body, "lossless")
    assert result.body is body  # in place
    msgs = body["messages"]
    assert msgs[0]["content"] == "fix it  \n\n\n"  # user text: only the escape went
    assert msgs[1] == original["messages"][1]  # assistant turns untouched
    results = msgs[2]["content"]
    assert results[0]["content"] == "ok\nok\nok"
    assert results[1]["content"] == "a = 1  \n\n\nb = 2  \n"  # Read: a file, kept byte for byte
    minified = json.dumps(
        {"rows": [{"id": 2**70, "name": "Zoë"}] * 5}, separators=(",", ":"), ensure_ascii=False
    )
    assert results[2]["content"][0]["text"] == minified
    assert results[2]["content"][1] == original["messages"][2]["content"][2]["content"][1]
    assert results[2]["cache_control"] == {"type": "ephemeral"}
    assert results[3] == original["messages"][2]["content"][3]  # a listing in user text
    assert msgs[4]["content"][0]["content"] == "[ferrule: same as message 3 block 3 part 1 above]"
    assert body["system"] == original["system"] and body["tools"] == original["tools"]
    assert (result.blocks, result.changed) == (6, 4)
    assert result.bytes_saved == sum(
        len(a.encode()) - len(b.encode())
        for a, b in [
            (original["messages"][0]["content"], msgs[0]["content"]),
            (original["messages"][2]["content"][0]["content"], results[0]["content"]),
            (original["messages"][2]["content"][2]["content"][0]["text"], minified),
            (original["messages"][4]["content"][0]["content"], msgs[4]["content"][0]["content"]),
        ]
    )
    assert result.tokens_saved == result.tokens_before - result.tokens_after > 0
    again = compress_request(copy.deepcopy(original), "off")
    assert again.tokens_before == again.tokens_after == result.tokens_before
    assert again.body == original and again.changed == 0 and again.blocks == 0


def test_compress_request_is_idempotent_and_deterministic(policy: ModuleType) -> None:
    for mode in ("lossless", "aggressive"):
        first = compress_request(conversation(), mode).body
        assert compress_request(conversation(), mode).body == first
        assert compress_request(copy.deepcopy(first), mode).body == first


def test_cache_control_does_not_change_compression(policy: ModuleType) -> None:
    plain = conversation()
    marked = conversation()
    for message in marked["messages"]:
        if isinstance(message["content"], list):
            for block in message["content"]:
                block["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    compress_request(plain, "lossless")
    compress_request(marked, "lossless")
    for a, b in zip(plain["messages"], marked["messages"], strict=True):
        if isinstance(a["content"], list):
            for x, y in zip(a["content"], b["content"], strict=True):
                x.pop("cache_control", None)
                y.pop("cache_control")
                assert x == y


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": None},
        {
            "messages": [
                "x",
                {"role": "user"},
                {"role": "user", "content": [1, None, {"type": "text"}]},
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": 5,
                            "content": [{"type": "text", "text": 1}],
                        }
                    ],
                }
            ]
        },
        {"system": "s", "tools": ["weird"], "messages": [{"role": "user", "content": "hi  "}]},
    ],
)
def test_malformed_bodies_pass_through(policy: ModuleType, body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    result = compress_request(body, "aggressive")
    assert body == before and result.changed == 0
    assert result.tokens_before == result.tokens_after


def test_unknown_mode() -> None:
    with pytest.raises(ValueError):
        compress_request({"messages": []}, "max")


@pytest.mark.parametrize("mode", ["lossless", "aggressive"])
def test_corpus_sessions_are_prefix_stable(policy: ModuleType, mode: str) -> None:
    """Request k compressed == the first messages of request k+1 compressed, every turn."""
    for seed in range(3):
        previous: list[Any] | None = None
        saved = 0
        for body in corpus.session(seed, turns=10).requests():
            result = compress_request(body, mode)
            messages = result.body["messages"]
            if previous is not None:
                assert messages[: len(previous)] == previous
            previous = messages
            saved = result.bytes_saved
        assert saved > 0


# -- the synthetic corpus ----------------------------------------------------------------------


def test_corpus_is_deterministic() -> None:
    a = json.dumps([s.messages for s in corpus.corpus(3)])
    assert a == json.dumps([s.messages for s in corpus.corpus(3)])
    assert a != json.dumps([s.messages for s in corpus.corpus(3, seed=1)])
    for needle in (
        "\\u001b[",
        "\\r\\n",
        "\\r ",
        "\\u2501",
        "Traceback (most recent call last)",
        "     1\\t",
    ):
        assert needle in a, needle


def test_corpus_requests_are_prefixes() -> None:
    s = corpus.session(7, turns=6)
    requests = s.requests()
    assert len(requests) == sum(m["role"] == "user" for m in s.messages)
    for a, b in itertools.pairwise(requests):
        assert b["messages"][: len(a["messages"])] == a["messages"]
        assert a["messages"][-1]["role"] == "user"
    assert requests[-1]["messages"] == s.messages


def test_tokens_are_counted_on_the_corpus() -> None:
    body = corpus.session(1, turns=6).requests()[-1]
    result = compress_request(body, "lossless")
    assert 0 < result.tokens_after < result.tokens_before
    assert tokens.count("hello world") == 2
