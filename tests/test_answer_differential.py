"""A whole JSON answer in one call (``answer_to_openai``, ``answer_usage``): the native kernel
must match its pure-Python twin exactly, and the twin must be the general path's answer.

Hypothesis builds Anthropic answers (random blocks, tool inputs of any JSON, ids and names of
any JSON type, JSON mode's forced tool, usage counts in every spelling), writes them in random
JSON spellings, and breaks some (tokens inserted anywhere). Both backends get the same bytes;
their results, and the types inside them, must be identical.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ferrule import _pure
from ferrule.translate.response import to_openai
from test_kernels_differential import JSON, RAW_COUNTS, STOP_REASONS, TEXT, TOKENS

EXAMPLES = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MODEL = 'gpt-\u2028"x"\x7f'
CREATED = 1_700_000_000
JSON_TOOL = "json_answer"

# JSON that orjson reads (JSON above also holds integers beyond 64 bits, which it rejects)
SAFE_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=15,
)
ANY_JSON = st.one_of(SAFE_JSON, SAFE_JSON, JSON)
ANY_ID = st.one_of(TEXT, TEXT, ANY_JSON, st.just(JSON_TOOL))
BLOCK = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(TEXT, TEXT, ANY_JSON)}),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": TEXT, "signature": TEXT}),
    st.fixed_dictionaries(
        {"type": st.just("tool_use"), "id": ANY_ID, "name": ANY_ID},
        optional={"input": ANY_JSON},
    ),
    st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": TEXT}),
    st.dictionaries(st.sampled_from(["type", "text", "id", "name", "input"]), ANY_JSON, max_size=4),
    ANY_JSON,
)
COUNT = st.one_of(st.integers(-5, 2**64 + 5), st.sampled_from([2**63, 2**64 - 1]), ANY_JSON)
USAGE = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": COUNT,
            "cache_creation_input_tokens": COUNT,
            "cache_read_input_tokens": COUNT,
            "output_tokens": COUNT,
            "cache_creation": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "ephemeral_5m_input_tokens": COUNT,
                        "ephemeral_1h_input_tokens": COUNT,
                    },
                ),
                ANY_JSON,
            ),
        },
    ),
    ANY_JSON,
)
MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(TEXT, ANY_JSON),
        "type": st.just("message"),
        "role": st.just("assistant"),
        "content": st.one_of(st.lists(BLOCK, max_size=5), st.lists(BLOCK, max_size=5), ANY_JSON),
        "stop_reason": st.one_of(STOP_REASONS, ANY_JSON),
        "usage": USAGE,
    },
)


@st.composite
def answer_bytes(draw: st.DrawFn) -> bytes:
    value: Any = draw(st.one_of(MESSAGE, MESSAGE, MESSAGE, JSON))
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    )
    if draw(st.integers(0, 4)) == 0:  # a duplicate key: the last value, at the first place
        text = text.replace('"usage"', '"usage": {"output_tokens": 9}, "usage"', 1)
    for _ in range(draw(st.integers(0, 3)) if draw(st.integers(0, 3)) == 0 else 0):
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos:]
    return text.encode("utf-8", "surrogatepass")


def _typed(result: Any) -> Any:
    """The result with the type of every part, so that an int is not a bool is not a float."""
    if result is None:
        return None
    body, counts = result
    return body, counts, type(body), tuple(type(c) for c in counts)


@EXAMPLES
@given(answer_bytes(), st.sampled_from([None, JSON_TOOL, "other"]))
@example(b'{"content":[{"type":"tool_use","name":"json_answer","input":{"a":[1.50,-0]}}],'
         b'"stop_reason":"tool_use"}', JSON_TOOL)  # fmt: skip
@example(b'{"usage":{"input_tokens":18446744073709551615,"output_tokens":1}}', None)
@example(b'{"id":"m","content":[{"type":"text","text":"\\ud800"}]}', None)
@example(b"\xff{}", None)
def test_answer_to_openai_matches_the_twin(
    native: ModuleType, raw: bytes, json_tool: str | None
) -> None:
    got = native.answer_to_openai(raw, MODEL, CREATED, json_tool)
    want = _pure.answer_to_openai(raw, MODEL, CREATED, json_tool)
    assert _typed(got) == _typed(want)
    assert native.answer_usage(raw) == _pure.answer_usage(raw)
    if want is not None:
        orjson.loads(want[0])  # valid JSON
        assert want[1] == _pure.answer_usage(raw)


TOOL_USE = st.fixed_dictionaries(
    {"type": st.just("tool_use"), "id": ANY_ID, "name": st.one_of(ANY_ID, st.just(JSON_TOOL))},
    optional={"input": ANY_JSON},
)


@EXAMPLES
@given(
    st.lists(st.one_of(TOOL_USE, TOOL_USE, BLOCK), min_size=1, max_size=6),
    st.one_of(STOP_REASONS, st.just("tool_use")),
    st.sampled_from([None, JSON_TOOL]),
)
def test_tool_calls_and_json_mode_match_the_twin(
    native: ModuleType, blocks: list[Any], stop_reason: Any, json_tool: str | None
) -> None:
    """Answers with tool calls (JSON mode's forced tool among them) in every mix."""
    raw = json.dumps({"id": "m", "content": blocks, "stop_reason": stop_reason}).encode()
    got = native.answer_to_openai(raw, MODEL, CREATED, json_tool)
    assert _typed(got) == _typed(_pure.answer_to_openai(raw, MODEL, CREATED, json_tool))


@pytest.mark.parametrize("raw_count", RAW_COUNTS, ids=lambda r: r[:24])
def test_count_spellings(native: ModuleType, raw_count: str) -> None:
    """Counts read as orjson and ``_count`` read them, on both sides."""
    raw = (
        f'{{"id":"m","content":[],"usage":{{"input_tokens":{raw_count},"output_tokens":2,'
        f'"cache_creation":{{"ephemeral_1h_input_tokens":{raw_count}}}}}}}'
    ).encode()
    got = native.answer_to_openai(raw, MODEL, CREATED, None)
    assert _typed(got) == _typed(_pure.answer_to_openai(raw, MODEL, CREATED, None))
    assert native.answer_usage(raw) == _pure.answer_usage(raw)


def test_the_twin_is_the_general_path(kernels: ModuleType) -> None:
    """The one-call answer is byte for byte what the general path (parse, ``to_openai``)
    answers, and its counts are the ledger's usage of the same message."""
    from ferrule.exchange import usage_from_counts
    from ferrule.pricing import Usage

    message = {
        "id": "msg_1",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "caf\u00e9 \U0001f600"},
            {"type": "tool_use", "id": "t1", "name": "get", "input": {"q": [1, 2.5, None]}},
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 30,
            "cache_read_input_tokens": 5,
            "output_tokens": 7,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
        },
    }
    raw = orjson.dumps(message)
    got = kernels.answer_to_openai(raw, "gpt-4o", CREATED, None)
    assert got is not None
    body, counts = got
    assert body == to_openai(message, model="gpt-4o", created=CREATED, json_tool=None)
    assert usage_from_counts(counts) == Usage.from_anthropic(message["usage"])
    assert kernels.answer_usage(raw) == counts
    assert kernels.answer_to_openai(b"[]", "m", 0, None) is None
    assert kernels.answer_usage(b"not json") is None


@EXAMPLES
@given(st.tuples(*[st.integers(0, 2**64 - 1) | st.integers(0, 50)] * 6))
def test_usage_from_counts_is_the_usage_of_the_object(counts: tuple[int, ...]) -> None:
    """The ledger's usage from a kernel's counts is what ``Usage.from_anthropic`` makes of the
    usage object they were read from (the fast path builds no such object)."""
    from ferrule.exchange import usage_from_counts
    from ferrule.pricing import Usage

    uncached, created, read, output, w5m, w1h = counts
    usage = {
        "input_tokens": uncached,
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": read,
        "output_tokens": output,
        "cache_creation": {"ephemeral_5m_input_tokens": w5m, "ephemeral_1h_input_tokens": w1h},
    }
    assert usage_from_counts(counts) == Usage.from_anthropic(usage)  # type: ignore[arg-type]
