"""Hostile input to the request parsers: whatever arrives, the answer is a ProxyError with a 4xx
status (rendered in the route's error shape), never another exception (which would be a 500)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrule.errors import ProxyError
from ferrule.routes.common import parse_json
from ferrule.translate.request import to_anthropic

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "x", None])
MESSAGE = st.fixed_dictionaries(
    {"role": ROLES},
    optional={
        "content": JSON
        | st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["text", "image_url", "refusal", "file"])},
                optional={"text": JSON, "image_url": JSON, "refusal": JSON},
            ),
            max_size=3,
        ),
        "tool_calls": JSON
        | st.lists(
            st.fixed_dictionaries(
                {
                    "id": JSON,
                    "function": st.fixed_dictionaries(
                        {}, optional={"name": JSON, "arguments": JSON | st.text(max_size=20)}
                    ),
                }
            ),
            max_size=2,
        ),
        "tool_call_id": JSON,
    },
)
REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "model": JSON | st.just("claude-sonnet-4-6"),
        "messages": JSON | st.lists(MESSAGE, max_size=5),
        "max_tokens": JSON,
        "max_completion_tokens": JSON,
        "temperature": JSON,
        "top_p": JSON,
        "stop": JSON,
        "stream": JSON,
        "stream_options": JSON,
        "n": JSON,
        "logprobs": JSON,
        "tools": JSON,
        "tool_choice": JSON,
        "parallel_tool_calls": JSON,
        "response_format": JSON,
        "reasoning_effort": JSON,
        "user": JSON,
    },
)


def _translate(body: Any, version: str) -> None:
    try:
        out = to_anthropic(body, aliases={}, version=version)
    except ProxyError as err:
        assert 400 <= err.status < 500 and err.message
        return
    orjson.dumps(out.body)  # whatever was accepted serializes


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUEST, st.sampled_from(["2023-06-01", "2026-10-21"]))
def test_structured_garbage_never_escapes_as_another_exception(body: Any, version: str) -> None:
    _translate(body, version)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_value_as_body(body: Any) -> None:
    _translate(body, "2023-06-01")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_a_400(raw: bytes) -> None:
    try:
        parse_json(raw, "the request body")
    except ProxyError as err:
        assert err.status == 400


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',  # lone surrogate
        b'{"temperature": NaN}',
        b"[" * 2000 + b"]" * 2000,  # deeper than orjson's limit
        b'{"a": 1e400}',
        b"\xff\xfe{}",
    ],
)
def test_hostile_json_is_a_400(raw: bytes) -> None:
    with pytest.raises(ProxyError) as info:
        parse_json(raw, "the request body")
    assert info.value.status == 400
