"""The chat route's request path in one call (``ChatRequests``, issue 12): the native twin must
give what ``ferrule._pure.chat_request`` gives, byte for byte, including *when* it declines, and
that twin is the Python stages themselves (translation, the compression walk, breakpoints).

Hypothesis builds Chat Completions bodies the way agents send them and the ways they get them
wrong: every role, string and part contents, tool calls whose arguments are JSON, blank, broken
or not objects, tools and tool choices, sampling values in and out of range, stop sequences,
user ids, model names (known, aliased, prefixed, unknown), the keys only the stages translate,
texts with ANSI colours, repeated long blocks (deduplication pointers), Python-only whitespace
(U+001C) and non-ASCII. Each body goes through both twins under every compression mode,
breakpoint TTL and API version.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrule import _pure
from ferrule.breakpoints import place_breakpoints_json
from ferrule.compress_walk import FILE_TOOLS
from ferrule.compression import compress_request
from ferrule.translate.request import model_facts, to_anthropic

EXAMPLES = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ALIASES = {"fast": "claude-haiku-4-5", "tokenpak-anthropic/house": "claude-opus-4-1"}
MODELS = st.sampled_from(
    [
        "claude-sonnet-4-6",
        "claude-opus-4-1",
        "claude-opus-4-7",
        "claude-haiku-4-5",
        "claude-3-5-haiku-latest",
        "tokenpak-anthropic/claude-sonnet-4-6",
        "ferrule/fast",
        "fast",
        "tokenpak-anthropic/house",
        "some-unknown-model",
        "",
        "modèle",
        "m\x07",
    ]
)
LONG = "All work and no play makes Jack a dull boy.\n" * 6  # over DEDUP_MIN_CHARS: deduplicated
TEXT = st.one_of(
    st.sampled_from(["", " ", "\x1c", "hello", " trailing \n", LONG, "\x1b[31mred\x1b[0m " * 30]),
    st.text(max_size=40),
    st.just(LONG + "\x1b[1mbold\x1b[0m"),
)
JSONISH = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
    ),
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)
NUMBER = st.one_of(
    st.none(),
    st.sampled_from([0, 1, 2, -1, 0.0, -0.0, 0.5, 1.0, 1.5, 1e-7, 2**70, True, "0.5"]),
    st.floats(-3, 3, allow_nan=False),
)
ARGS = st.one_of(
    st.none(),
    st.sampled_from(["", "  ", "{}", '{"path": "a.py"}', '{"command": "cat a.py"}', "[1]", "{bad"]),
    st.dictionaries(st.sampled_from(["command", "cmd", "path"]), JSONISH, max_size=2).map(
        lambda d: (
            orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS).decode()
            if not any(isinstance(v, float) and v != v for v in d.values())
            else "{}"
        )
    ),
    st.just({"path": "x"}),
    st.just({"command": ["git", "diff"]}),
)
TOOL_NAMES = st.sampled_from(["Read", "bash", "str_replace_editor", "search", "HTTPGet", ""])
CALL = st.fixed_dictionaries(
    {"id": st.sampled_from(["call_1", "call_2", "call_3"]), "type": st.just("function")},
    optional={
        "function": st.fixed_dictionaries({"name": TOOL_NAMES}, optional={"arguments": ARGS})
    },
)
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.just({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}),
    st.just({"type": "refusal", "refusal": "no"}),
    st.just({"type": "text"}),
    st.just("not a part"),
)
CONTENT = st.one_of(TEXT, st.lists(PART, max_size=3), st.none())
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": CONTENT}),
    st.fixed_dictionaries({"role": st.just("user"), "content": CONTENT}),
    st.fixed_dictionaries(
        {"role": st.just("assistant")},
        optional={"content": CONTENT, "tool_calls": st.lists(CALL, max_size=2)},
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "tool_call_id": st.sampled_from(["call_1", "call_2", "", 3])},
        optional={"content": CONTENT},
    ),
    st.just({"role": "critic", "content": "x"}),
    st.just(["not", "a", "message"]),
)
TOOL = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "function", "custom"])},
    optional={
        "function": st.fixed_dictionaries(
            {"name": TOOL_NAMES},
            optional={
                "description": st.sampled_from(["", "Reads a file.", LONG]),
                "parameters": st.one_of(
                    st.none(),
                    st.just({"type": "object", "properties": {"path": {"type": "string"}}}),
                    st.just("not a schema"),
                ),
                "strict": st.sampled_from([True, False, None]),
            },
        )
    },
)
BODY = st.fixed_dictionaries(
    {"model": MODELS, "messages": st.lists(MESSAGE, min_size=0, max_size=7)},
    optional={
        "max_tokens": st.sampled_from([None, 1, 1024, 0, -5, 2**31, 1.5, True]),
        "max_completion_tokens": st.sampled_from([None, 256]),
        "stream": st.sampled_from([True, False, None, "yes"]),
        "stream_options": st.sampled_from([None, {}, {"include_usage": True}, [1]]),
        "temperature": NUMBER,
        "top_p": NUMBER,
        "stop": st.one_of(st.none(), TEXT, st.lists(TEXT, max_size=3), st.just([1])),
        "user": st.sampled_from([None, "", "user-1", "usér", 7]),
        "safety_identifier": st.sampled_from([None, "", "sid-9"]),
        "prompt_cache_key": st.sampled_from([None, "k", 5]),
        "n": st.sampled_from([None, 1, 2, True, 1.0]),
        "logprobs": st.sampled_from([None, False, True]),
        "tools": st.one_of(st.none(), st.lists(TOOL, max_size=3), st.just("tools")),
        "tool_choice": st.sampled_from(
            [None, "auto", "none", "required", "sometimes", {"function": {"name": "Read"}}]
        ),
        "parallel_tool_calls": st.sampled_from([None, True, False, "no"]),
        "frequency_penalty": st.just(0.5),
        "reasoning_effort": st.sampled_from([None, "low"]),
        "response_format": st.sampled_from([None, {"type": "json_object"}]),
        "verbosity": st.sampled_from([None, "low"]),
    },
)
BIG = st.sampled_from([LONG * 25, "x" * 5000, "\x1b[33mwarn\x1b[0m progress 10%\r" * 300])
GOOD_TEXT = st.one_of(TEXT, BIG)


@st.composite
def _conversation(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request (most of what the fast path prepares): a system prompt, turns of
    text, tool calls with their results, tools and a tool choice, sampling in range."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append(
            {"role": draw(st.sampled_from(["system", "developer"])), "content": draw(GOOD_TEXT)}
        )
    calls = 0
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["user", "parts", "assistant", "calls"]))
        if kind == "user":
            messages.append({"role": "user", "content": draw(GOOD_TEXT)})
        elif kind == "parts":
            parts = draw(st.lists(GOOD_TEXT, min_size=1, max_size=3))
            messages.append(
                {"role": "user", "content": [{"type": "text", "text": t} for t in parts]}
            )
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": draw(TEXT)})
        else:
            ids = [f"call_{calls + k}" for k in range(draw(st.integers(1, 3)))]
            calls += len(ids)
            messages.append(
                {
                    "role": "assistant",
                    "content": draw(st.sampled_from([None, "", "On it."])),
                    "tool_calls": [
                        {
                            "id": i,
                            "type": "function",
                            "function": {"name": draw(TOOL_NAMES) or "t", "arguments": draw(ARGS)},
                        }
                        for i in ids
                    ],
                }
            )
            for i in ids:
                messages.append({"role": "tool", "tool_call_id": i, "content": draw(GOOD_TEXT)})
    body: dict[str, Any] = {
        "model": draw(MODELS.filter(lambda m: m.isascii() and m.isprintable() and m)),
        "messages": messages,
    }
    if draw(st.booleans()):
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": n, "description": draw(st.sampled_from(["", "d", LONG * 10]))},
            }
            for n in draw(
                st.lists(
                    st.sampled_from(["Read", "bash", "Edit"]), min_size=1, max_size=3, unique=True
                )
            )
        ]
        body["tool_choice"] = draw(
            st.sampled_from(
                [
                    None,
                    "auto",
                    "none",
                    "required",
                    {"type": "function", "function": {"name": "Read"}},
                ]
            )
        )
        body["parallel_tool_calls"] = draw(st.sampled_from([None, True, False]))
    for key, values in (
        ("temperature", st.one_of(st.none(), st.floats(0, 1), st.sampled_from([0, 1, 0.0]))),
        ("top_p", st.one_of(st.none(), st.floats(0, 1))),
        ("stream", st.booleans()),
        ("stop", st.one_of(st.none(), st.lists(TEXT, max_size=2))),
        ("user", st.sampled_from([None, "agent-7"])),
        ("max_tokens", st.sampled_from([None, 512])),
    ):
        value = draw(values)
        if value is not None:
            body[key] = value
    return body


OPTIONS = st.tuples(
    st.sampled_from(["off", "lossless", "aggressive", "bogus"]),
    st.sampled_from(["5m", "1h", None]),
    st.sampled_from(["2023-06-01", "2026-10-21"]),
    st.booleans(),  # strict_params
)


def _pair(native: ModuleType, ttl: str | None, version: str, strict: bool) -> tuple[Any, Any]:
    facts = model_facts(ALIASES)
    kw: dict[str, Any] = {
        "aliases": ALIASES,
        "version": version,
        "strict": strict,
        "ttl": ttl,
        "file_tools": FILE_TOOLS,
    }
    return native.ChatRequests(facts, **kw), _pure.ChatRequests(facts, **kw)


@EXAMPLES
@given(body=st.one_of(BODY, _conversation()), options=OPTIONS)
def test_the_request_path_matches_its_twin(
    native: ModuleType, body: dict[str, Any], options: tuple[str, str | None, str, bool]
) -> None:
    mode, ttl, version, strict = options
    raw = json.dumps(body, ensure_ascii=False).encode()  # big integers too (orjson refuses them)
    ours, twin = _pair(native, ttl, version, strict)
    assert ours.prepare(raw, mode) == twin.prepare(raw, mode)


def _agent_turn(n_tools: int = 3, results: int = 12) -> dict[str, Any]:
    """An agent loop's request: tools, a system prompt, tool calls and their results."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": f"The {name} tool. " * 40,
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
            },
        }
        for name in ["Read", "bash", "search"][:n_tools]
    ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a coding agent. " * 60},
        {"role": "user", "content": "Fix the failing test."},
    ]
    for i in range(results):
        call = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "Read" if i % 2 else "bash", "arguments": '{"path": "a.py"}'},
        }
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        output = (
            "\x1b[32m ok \x1b[0m\n" + LONG if i % 3 else "   1\tdef f():\n   2\t  pass\n   3\t\n"
        )
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": output})
    # then 25 parallel calls: their results are one user turn longer than the lookback window
    calls = [
        {"id": f"par_{k}", "type": "function", "function": {"name": "bash", "arguments": "{}"}}
        for k in range(25)
    ]
    messages.append({"role": "assistant", "content": "Checking all.", "tool_calls": calls})
    for k in range(25):
        messages.append({"role": "tool", "tool_call_id": f"par_{k}", "content": f"result {k}"})
    return {"model": "claude-sonnet-4-6", "messages": messages, "tools": tools, "stream": True}


def _stages(body: dict[str, Any], mode: str, ttl: str) -> bytes:
    """The Python stages one by one, as the pipeline runs them when the path declines."""
    out = to_anthropic(body, aliases=ALIASES, version="2023-06-01").body
    compress_request(out, mode)
    return place_breakpoints_json(out, ttl=ttl) or orjson.dumps(out)


@pytest.mark.parametrize("mode", ["off", "lossless", "aggressive"])
@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_an_agent_turn_takes_the_native_path(native: ModuleType, mode: str, ttl: str) -> None:
    """The common case is not declined, and its bytes are the stages' (breakpoints on the system
    prompt, the previous and the newest turn, and one within the newest turn's 25 results; the
    tools alone are below the model's minimum; tool outputs rewritten)."""
    body = _agent_turn()
    ours, twin = _pair(native, ttl, "2023-06-01", False)
    got = ours.prepare(orjson.dumps(body), mode)
    assert got is not None
    assert got == twin.prepare(orjson.dumps(body), mode)
    payload, asked, model, stream, _, _, max_tokens, tools, _, rewrites, blocks, turns = got
    assert payload == _stages(body, mode, ttl)
    assert (asked, model, stream, tools) == ("claude-sonnet-4-6", "claude-sonnet-4-6", True, True)
    assert max_tokens > 0
    # where thinking blocks would be looked for: every assistant turn's calls, the first four
    assert turns == [[f"call_{i}"] for i in range(12)] + [[f"par_{k}" for k in range(4)]]
    sent = orjson.loads(payload)
    marked = [
        b
        for part in (sent["tools"], sent["system"], *(m["content"] for m in sent["messages"]))
        for b in part
        if "cache_control" in b
    ]
    assert len(marked) == 4
    assert "cache_control" in sent["system"][-1] and "cache_control" in marked[-1]
    assert marked[-1] is sent["messages"][-1]["content"][-1]
    if mode == "off":
        assert (rewrites, blocks) == ([], 0)
    else:
        assert blocks == 13 + 25 and rewrites, "ANSI colours and repeated outputs are rewritten"
        assert any("[ferrule: same as message" in after for _, after in rewrites)


def test_declines_go_the_stages_way(native: ModuleType) -> None:
    ours, _ = _pair(native, "5m", "2023-06-01", False)
    base = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
    assert ours.prepare(orjson.dumps(base), "lossless") is not None
    for extra in (
        {"reasoning_effort": "low"},  # translated by the stages only
        {"response_format": {"type": "json_object"}},
        {"n": 2},  # a 400 the stages word
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
        {"user": "usér"},  # printable, but not ASCII
        {"temperature": 0.3, "model": "claude-opus-4-7"},  # dropped with a warning there
        {"temperature": 0.3, "top_p": 0.9},  # not both on this model: a warning there
    ):
        assert ours.prepare(orjson.dumps(base | extra), "lossless") is None, extra
    kept = ours.prepare(orjson.dumps(base | {"temperature": 0}), "lossless")
    assert kept is not None and kept[8] == 0


@pytest.mark.parametrize(
    "module",
    ["ferrule.compress_walk", "ferrule._pure", "ferrule._pure.chat_request", "ferrule.compression"],
)
def test_each_module_of_the_request_path_imports_first(module: str) -> None:
    """No import circle: each imports in a fresh interpreter before anything else of Ferrule's
    (``compress_walk`` once reached ``_pure`` through a kernel constant, and ``_pure`` back)."""
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, timeout=60)
