"""The simulated Anthropic upstream is faithful: the official ``anthropic`` SDK parses everything.

One real Granian server (``mock_upstream``) serves the whole module; its state is reset before each
test. Clients use ``max_retries=0`` so an error is seen once, as sent. The SDK 2.x sends
``anthropic-version: 2026-10-21`` and ``Authorization: Bearer``; the 2023-06-01 cases (sampling
parameters) go through httpx with ``x-api-key``, the way Ferrule itself talks upstream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from ferrule.mock import MockOptions, mock_upstream

pytestmark = pytest.mark.e2e

MODEL = "claude-opus-4-6"
OLD_HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
NEW_HEADERS = {"x-api-key": "test-key", "anthropic-version": "2026-10-21"}
WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1},
        },
        "required": ["city", "unit"],
    },
}
CLOCK_TOOL: dict[str, Any] = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with mock_upstream(MockOptions(answer_words=12)) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh_state(base_url: str) -> None:
    httpx.post(base_url + "/_mock/reset").raise_for_status()


@pytest.fixture
def client(base_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base_url, api_key="test-key", max_retries=0) as sdk:
        yield sdk


def ask(text: str, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``messages.create``/``stream`` with one user turn."""
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def post(
    base_url: str, body: dict[str, Any], headers: dict[str, str] = OLD_HEADERS
) -> httpx.Response:
    return httpx.post(base_url + "/v1/messages", headers=headers, json=body)


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` pairs of an SSE body (the mock writes one data line per event)."""
    out = []
    for chunk in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        out.append((lines["event"], orjson.loads(lines["data"])))
    return out


def blocks(message: anthropic.types.Message) -> list[dict[str, Any]]:
    """Content blocks as plain dicts (the stream helper adds a ``parsed_output`` to text blocks)."""
    return [{k: v for k, v in b.to_dict().items() if k != "parsed_output"} for b in message.content]


def stats(base_url: str) -> dict[str, int]:
    result: dict[str, int] = httpx.get(base_url + "/_mock/stats").json()
    return result


# -- what arrives and what goes back ---------------------------------------------------------------


def test_sdk_request_headers_are_recorded(client: anthropic.Anthropic, base_url: str) -> None:
    client.messages.create(**ask("hello"))
    [seen] = httpx.get(base_url + "/_mock/requests").json()
    assert seen["method"] == "POST" and seen["path"] == "/v1/messages"
    assert seen["headers"]["anthropic-version"] == "2026-10-21"
    assert seen["headers"]["authorization"] == "Bearer test-key"
    assert "x-api-key" not in seen["headers"]
    assert seen["body"]["messages"] == [{"role": "user", "content": "hello"}]


def test_text_answer_is_deterministic_and_streams_the_same(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(**ask("hello [mock:words=7]"))
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["content-type"] == "application/json"
    for name in ("requests", "tokens", "input-tokens", "output-tokens"):
        assert f"anthropic-ratelimit-{name}-remaining" in raw.headers
    assert (
        message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    )
    assert (
        message.model == MODEL
        and message.stop_reason == "end_turn"
        and message.stop_sequence is None
    )
    [block] = message.content
    assert block.type == "text" and len(block.text.split()) == 7 and block.text.endswith(".")
    assert message.usage.output_tokens == 7 and message.usage.input_tokens > 0
    assert message.usage.cache_creation is not None and message.usage.service_tier == "standard"

    again = client.messages.create(**ask("hello [mock:words=7]"))
    assert blocks(again) == blocks(message) and again.id != message.id
    with client.messages.stream(**ask("hello [mock:words=7]")) as stream:
        assert "".join(stream.text_stream) == block.text
        streamed = stream.get_final_message()
    assert blocks(streamed) == blocks(message) and streamed.usage.output_tokens == 7


def test_stream_wire_format(base_url: str) -> None:
    response = post(base_url, ask("[mock:words=3]", stream=True))
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["request-id"].startswith("req_")
    names = [name for name, _ in sse_events(response.text)]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for name, data in sse_events(response.text):
        assert data["type"] == name
    start = sse_events(response.text)[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert set(start["usage"]) >= {
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }


def test_thinking(client: anthropic.Anthropic) -> None:
    message = client.messages.create(**ask("think [mock:thinking]"))
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature
    assert text.type == "text"
    with client.messages.stream(**ask("think [mock:thinking]")) as stream:
        kinds = {e.delta.type for e in stream if e.type == "content_block_delta"}
        final = stream.get_final_message()
    assert {"thinking_delta", "signature_delta", "text_delta"} <= kinds
    assert blocks(final) == blocks(message)
    # Thinking asked for by the request itself, the way Ferrule maps reasoning_effort.
    adaptive = client.messages.create(**ask("hi", thinking={"type": "adaptive"}))
    assert adaptive.content[0].type == "thinking"


def test_tool_use_is_reassembled_by_the_sdk(client: anthropic.Anthropic, base_url: str) -> None:
    message = client.messages.create(**ask("weather? [mock:tool]", tools=[WEATHER_TOOL]))
    assert message.stop_reason == "tool_use"
    [tool] = message.content
    assert tool.type == "tool_use" and tool.id.startswith("toolu_") and tool.name == "get_weather"
    assert tool.input == {"city": "city-value", "unit": "celsius"}
    with client.messages.stream(**ask("weather? [mock:tool]", tools=[WEATHER_TOOL])) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == tool.input and final.stop_reason == "tool_use"

    raw = post(base_url, ask("[mock:tool]", tools=[WEATHER_TOOL], stream=True)).text
    fragments = [
        d["delta"]["partial_json"]
        for n, d in sse_events(raw)
        if d.get("delta", {}).get("type") == "input_json_delta"
    ]
    assert len([f for f in fragments if f]) >= 3
    assert orjson.loads("".join(fragments)) == tool.input
    # Without tools the mock still answers with a tool call, of a placeholder tool.
    placeholder = client.messages.create(**ask("[mock:tool]"))
    assert placeholder.content[0].input == {"x": 1}


def test_two_tools_after_text(client: anthropic.Anthropic) -> None:
    kwargs = ask("[mock:tools2]", tools=[WEATHER_TOOL, CLOCK_TOOL])
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert [b.name for b in final.content[1:]] == ["get_weather", "get_time"]
    assert final.content[1].id != final.content[2].id and final.stop_reason == "tool_use"
    assert client.messages.create(**kwargs).content[2].input == {"zone": "zone-value"}


def test_tool_result_round_trip_and_directive_inside_it(client: anthropic.Anthropic) -> None:
    first = client.messages.create(**ask("[mock:tool]", tools=[WEATHER_TOOL]))
    tool = first.content[0]
    messages: list[Any] = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [b.to_dict() for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": tool.id, "content": "sunny [mock:words=2]"}
            ],
        },
    ]
    second = client.messages.create(
        model=MODEL, max_tokens=100, messages=messages, tools=[WEATHER_TOOL]
    )
    assert len(second.content[0].text.split()) == 2


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "stream"])
def test_stop_reasons(client: anthropic.Anthropic, streaming: bool) -> None:
    def run(**kwargs: Any) -> anthropic.types.Message:
        if not streaming:
            return client.messages.create(**kwargs)
        with client.messages.stream(**kwargs) as stream:
            return stream.get_final_message()

    stopped = run(**ask("[mock:stop_sequence]", stop_sequences=["END", "STOP"]))
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "END"
    cut = run(**ask("[mock:max_tokens]"))
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 1024
    short = run(**ask("[mock:words=40]", max_tokens=5))
    assert short.stop_reason == "max_tokens" and len(short.content[0].text.split()) == 5
    refused = run(**ask("[mock:refusal]"))
    assert refused.stop_reason == "refusal"
    assert refused.stop_details is not None and refused.stop_details.type == "refusal"


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "stream"])
def test_forced_cache_usage(client: anthropic.Anthropic, streaming: bool) -> None:
    if streaming:
        with client.messages.stream(**ask("[mock:cache]")) as stream:
            usage = stream.get_final_message().usage
    else:
        usage = client.messages.create(**ask("[mock:cache]")).usage
    assert (
        usage.cache_creation_input_tokens and usage.cache_read_input_tokens and usage.input_tokens
    )
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens > 0
    assert usage.cache_creation.ephemeral_1h_input_tokens > 0
    assert (
        usage.cache_creation.ephemeral_5m_input_tokens
        + usage.cache_creation.ephemeral_1h_input_tokens
        == usage.cache_creation_input_tokens
    )


def test_prompt_cache_simulation_and_count_tokens(client: anthropic.Anthropic) -> None:
    system: Any = [
        {"type": "text", "text": "policy " * 1200, "cache_control": {"type": "ephemeral"}}
    ]
    kwargs = ask("question", system=system)
    first = client.messages.create(**kwargs).usage
    second = client.messages.create(**kwargs).usage
    assert first.cache_creation_input_tokens and not first.cache_read_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert not second.cache_creation_input_tokens
    counted = client.messages.count_tokens(model=MODEL, system=system, messages=kwargs["messages"])
    assert counted.input_tokens == second.input_tokens + second.cache_read_input_tokens
    assert counted.input_tokens == first.input_tokens + first.cache_creation_input_tokens


def test_echo_returns_the_body_received(client: anthropic.Anthropic) -> None:
    kwargs = ask("[mock:echo]", metadata={"user_id": "u-1"})
    echoed = orjson.loads(client.messages.create(**kwargs).content[0].text)
    assert echoed == {k: v for k, v in kwargs.items()}
    with client.messages.stream(**kwargs) as stream:
        assert orjson.loads(stream.get_final_text())["stream"] is True


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.APIStatusError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_error_statuses_map_to_sdk_exceptions(
    client: anthropic.Anthropic,
    status: int,
    exception: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    with pytest.raises(exception) as caught:
        client.messages.create(**ask(f"[mock:error={status}]"))
    error = caught.value
    assert error.status_code == status and error.type == error_type
    assert error.request_id is not None and error.request_id.startswith("req_")
    assert error.body == {
        "type": "error",
        "error": {"type": error_type, "message": error.api_message},
        "request_id": error.request_id,
    }
    assert error.response.headers["x-should-retry"] == ("true" if status >= 429 else "false")
    if status == 429:
        assert error.response.headers["retry-after"] == "1"
        assert error.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_streaming_request_errors_before_any_byte(client: anthropic.Anthropic) -> None:
    with (
        pytest.raises(anthropic.OverloadedError),
        client.messages.stream(**ask("[mock:error=529]")) as stream,
    ):
        stream.get_final_message()


def test_intermediary_errors_are_html(base_url: str) -> None:
    response = post(base_url, ask("[mock:error=502]"))
    assert response.status_code == 502 and response.headers["content-type"].startswith("text/html")


def test_midstream_error_raises_in_the_sdk(client: anthropic.Anthropic, base_url: str) -> None:
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(**ask("[mock:midstream_error]")) as stream,
    ):
        for _ in stream:
            pass
    assert caught.value.type == "overloaded_error"
    names = [
        n for n, _ in sse_events(post(base_url, ask("[mock:midstream_error]", stream=True)).text)
    ]
    assert names[-1] == "error" and names.count("content_block_delta") == 3


def test_truncated_stream_has_no_message_stop(client: anthropic.Anthropic, base_url: str) -> None:
    with client.messages.stream(**ask("[mock:truncate]")) as stream:
        final = stream.get_final_message()
    assert final.stop_reason is None  # what a consumer can tell: the stream never finished
    names = [n for n, _ in sse_events(post(base_url, ask("[mock:truncate]", stream=True)).text)]
    assert "message_stop" not in names and "message_delta" not in names
    assert stats(base_url)["streams_completed"] == 2


def test_credentials_version_and_routes(base_url: str) -> None:
    body = ask("hi")
    missing_key = post(base_url, body, {"anthropic-version": "2023-06-01"})
    assert missing_key.status_code == 401
    assert missing_key.json()["error"] == {
        "type": "authentication_error",
        "message": "x-api-key header is required",
    }
    # Rejected requests are logged too, with what they carried.
    assert httpx.get(base_url + "/_mock/requests").json()[-1]["body"] == body
    missing_version = post(base_url, body, {"x-api-key": "k"})
    assert missing_version.status_code == 400
    assert "anthropic-version" in missing_version.json()["error"]["message"]
    unknown = httpx.get(base_url + "/v1/nothing", headers=OLD_HEADERS)
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    assert unknown.json()["request_id"].startswith("req_")
    bad_json = httpx.post(base_url + "/v1/messages", headers=OLD_HEADERS, content=b"{nope")
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]


def test_api_key_option(base_url: str) -> None:
    with mock_upstream(MockOptions(api_key="right")) as other:
        wrong = post(other, ask("hi"), {**OLD_HEADERS, "x-api-key": "wrong"})
        right = post(other, ask("hi"), {**OLD_HEADERS, "x-api-key": "right"})
    assert wrong.status_code == 401 and right.status_code == 200


def test_models_and_count_tokens(client: anthropic.Anthropic) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"claude-opus-4-6", "claude-sonnet-4-6", "claude-haiku-4-5-20251001"} <= set(ids)
    assert client.models.retrieve("claude-haiku-4-5").id == "claude-haiku-4-5-20251001"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-unknown")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(**{**ask("hi"), "model": "claude-unknown"})
    count = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert count.input_tokens > 0
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(model=MODEL, messages=[])


# -- strict validation ----------------------------------------------------------------------------

TOOL_USE: dict[str, Any] = {
    "type": "tool_use",
    "id": "toolu_01A",
    "name": "get_weather",
    "input": {},
}
TOOL_RESULT: dict[str, Any] = {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "ok"}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


# (changes to a valid body, anthropic-version, words the 400 message must contain)
REJECTED: dict[str, tuple[dict[str, Any], str, str]] = {
    "unknown field": ({"n": 2}, "2023-06-01", "n: Extra inputs are not permitted"),
    "missing max_tokens": ({"max_tokens": None}, "2023-06-01", "max_tokens: Field required"),
    "missing model": ({"model": None}, "2023-06-01", "model: Field required"),
    "missing messages": ({"messages": None}, "2023-06-01", "messages: Field required"),
    "no messages": ({"messages": []}, "2023-06-01", "messages: at least one message"),
    "max_tokens too big": (
        {"max_tokens": 10**6},
        "2023-06-01",
        "maximum allowed number of output tokens",
    ),
    "empty text block": (
        {"messages": [user([{"type": "text", "text": ""}])]},
        "2023-06-01",
        "text content blocks must be non-empty",
    ),
    "empty content": (
        {"messages": [user("")]},
        "2023-06-01",
        "messages.0: all messages must have non-empty",
    ),
    "image_url block": (
        {"messages": [user([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}])]},
        "2023-06-01",
        "messages.0.content.0: Input tag 'image_url'",
    ),
    "system role in messages": (
        {"messages": [{"role": "system", "content": "be brief"}, user("hi")]},
        "2023-06-01",
        "messages.0.role: Input should be 'user' or 'assistant'",
    ),
    "openai tool_calls field": (
        {
            "messages": [
                user("hi"),
                {"role": "assistant", "content": "x", "tool_calls": []},
                user("go"),
            ]
        },
        "2023-06-01",
        "messages.1.tool_calls: Extra inputs are not permitted",
    ),
    "openai-shaped tool": (
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            ]
        },
        "2023-06-01",
        "tools.0: Input tag 'function'",
    ),
    "tool without input_schema": (
        {"tools": [{"name": "f", "parameters": {"type": "object"}}]},
        "2023-06-01",
        "tools.0.custom.input_schema: Field required",
    ),
    "tool_result without tool_use": (
        {"messages": [user("hi"), assistant("ok"), user([TOOL_RESULT])]},
        "2023-06-01",
        "messages.2.content.0: unexpected `tool_use_id`",
    ),
    "tool_use without tool_result": (
        {"messages": [user("hi"), assistant([TOOL_USE]), user("and?")]},
        "2023-06-01",
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01A",
    ),
    "tool_result after text": (
        {
            "messages": [
                user("hi"),
                assistant([TOOL_USE]),
                user([{"type": "text", "text": "x"}, TOOL_RESULT]),
            ]
        },
        "2023-06-01",
        "without `tool_result` blocks immediately after",
    ),
    "five cache breakpoints": (
        {
            "system": [
                {"type": "text", "text": f"s{i}", "cache_control": {"type": "ephemeral"}}
                for i in range(5)
            ]
        },
        "2023-06-01",
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    ),
    "temperature on 2026-10-21": (
        {"temperature": 1.0},
        "2026-10-21",
        "temperature: Extra inputs are not permitted",
    ),
    "top_k on 2026-10-21": ({"top_k": 5}, "2026-10-21", "top_k: Extra inputs are not permitted"),
    "temperature above 1": (
        {"temperature": 1.5},
        "2023-06-01",
        "temperature: Input should be less than or equal to 1",
    ),
    "temperature with top_p": (
        {"temperature": 0.5, "top_p": 0.9},
        "2023-06-01",
        "`temperature` and `top_p` cannot both be specified",
    ),
    "thinking budget too small": (
        {"thinking": {"type": "enabled", "budget_tokens": 512}},
        "2023-06-01",
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
    ),
    "thinking budget not below max_tokens": (
        {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 2048},
        "2023-06-01",
        "`max_tokens` must be greater than `thinking.budget_tokens`",
    ),
    "thinking with temperature": (
        {
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "max_tokens": 2048,
            "temperature": 0.2,
        },
        "2023-06-01",
        "`temperature` may only be set to 1 when thinking is enabled",
    ),
    "manual thinking with forced tool": (
        {
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "max_tokens": 2048,
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "any"},
        },
        "2023-06-01",
        "Thinking may not be enabled when tool_choice forces tool use",
    ),
    "tool_choice as a string": (
        {"tool_choice": "auto"},
        "2023-06-01",
        "tool_choice: Input should be a valid dictionary",
    ),
    "tool_choice of an unknown tool": (
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool", "name": "nope"}},
        "2023-06-01",
        "tool 'nope' was not found",
    ),
    "tool_choice extra field": (
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "auto", "parallel": False}},
        "2023-06-01",
        "tool_choice.auto.parallel: Extra inputs are not permitted",
    ),
    "stop_sequences not strings": (
        {"stop_sequences": ["END", 3]},
        "2023-06-01",
        "stop_sequences.1: Input should be a valid string",
    ),
    "stop_sequences as a string": (
        {"stop_sequences": "END"},
        "2023-06-01",
        "stop_sequences: Input should be a valid list",
    ),
    "metadata beyond user_id": (
        {"metadata": {"session": "s"}},
        "2023-06-01",
        "metadata.session: Extra inputs are not permitted",
    ),
    "prefill on a 4.6 model": (
        {"messages": [user("hi"), assistant("The answer is")]},
        "2023-06-01",
        "does not support assistant message prefill",
    ),
    "prefill ending in whitespace": (
        {"model": "claude-haiku-4-5", "messages": [user("hi"), assistant("The answer is ")]},
        "2023-06-01",
        "final assistant content cannot end with trailing whitespace",
    ),
}


@pytest.mark.parametrize(
    ("changes", "version", "expected"), list(REJECTED.values()), ids=list(REJECTED)
)
def test_validation_rejects(
    base_url: str, changes: dict[str, Any], version: str, expected: str
) -> None:
    body = {**ask("hi"), **changes}
    body = {k: v for k, v in body.items() if v is not None}
    response = post(base_url, body, {**OLD_HEADERS, "anthropic-version": version})
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert expected in error["error"]["message"]


ACCEPTED: dict[str, tuple[dict[str, Any], str]] = {
    "consecutive user turns": ({"messages": [user("a"), user("b")]}, "2023-06-01"),
    "assistant first": ({"messages": [assistant("Hello!"), user("hi")]}, "2023-06-01"),
    "prefill on haiku 4.5": (
        {"model": "claude-haiku-4-5", "messages": [user("hi"), assistant("Sure:")]},
        "2023-06-01",
    ),
    "sampling on 2023-06-01": ({"temperature": 0.3, "top_k": 40}, "2023-06-01"),
    "tool round trip": (
        {
            "tools": [WEATHER_TOOL],
            "messages": [
                user("hi"),
                assistant([TOOL_USE]),
                user([TOOL_RESULT, {"type": "text", "text": "thanks"}]),
            ],
        },
        "2026-10-21",
    ),
    "system blocks and metadata": (
        {"system": [{"type": "text", "text": "be brief"}], "metadata": {"user_id": "u"}},
        "2026-10-21",
    ),
    # adaptive thinking supports forced tool use (docs: thinking-tool-workflows)
    "adaptive thinking with forced tool": (
        {"thinking": {"type": "adaptive"}, "tools": [WEATHER_TOOL], "tool_choice": {"type": "any"}},
        "2023-06-01",
    ),
    "thinking with temperature 1": (
        {
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "max_tokens": 2048,
            "temperature": 1,
        },
        "2023-06-01",
    ),
}


@pytest.mark.parametrize(("changes", "version"), list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_validation_accepts(base_url: str, changes: dict[str, Any], version: str) -> None:
    response = post(
        base_url, {**ask("hi"), **changes}, {**OLD_HEADERS, "anthropic-version": version}
    )
    assert response.status_code == 200, response.text


# -- control endpoints and cancellation ------------------------------------------------------------


def test_script_queue_is_consumed_in_order(client: anthropic.Anthropic, base_url: str) -> None:
    queued = httpx.post(base_url + "/_mock/script", json=["error=529", 529, "words=3 thinking"])
    assert queued.json() == {"queued": 3}
    for _ in range(2):
        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(**ask("hi"))
    scripted = client.messages.create(**ask("hi"))
    assert [b.type for b in scripted.content] == ["thinking", "text"]
    assert len(scripted.content[1].text.split()) == 3
    assert (
        len(client.messages.create(**ask("hi")).content[0].text.split()) == 12
    )  # the default again
    assert stats(base_url)["requests"] == 4
    assert httpx.post(base_url + "/_mock/script", json={"x": 1}).status_code == 400


def test_requests_log_and_reset(client: anthropic.Anthropic, base_url: str) -> None:
    client.messages.create(**ask("one"))
    client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "two"}])
    log = httpx.get(base_url + "/_mock/requests").json()
    assert [r["path"] for r in log] == ["/v1/messages", "/v1/messages/count_tokens"]
    httpx.post(base_url + "/_mock/reset")
    assert httpx.get(base_url + "/_mock/requests").json() == []
    assert stats(base_url)["requests"] == 0


def wait_for(base_url: str, key: str, value: int, timeout: float = 2.0) -> float:
    """Seconds until ``/_mock/stats`` shows ``key == value``."""
    started = time.monotonic()
    while stats(base_url)[key] != value:
        assert time.monotonic() - started < timeout, stats(base_url)
        time.sleep(0.005)
    return time.monotonic() - started


def test_client_disconnect_cancels_the_stream(base_url: str) -> None:
    body = ask("[mock:words=200][mock:delay=20]", stream=True)
    with (
        httpx.Client() as http,
        http.stream("POST", base_url + "/v1/messages", headers=OLD_HEADERS, json=body) as response,
    ):
        lines = response.iter_lines()
        for _ in range(12):  # message_start, block start, ping and a few deltas
            next(lines)
        assert stats(base_url)["open_streams"] == 1
    assert wait_for(base_url, "streams_cancelled", 1) < 0.5
    assert stats(base_url) | {"requests_cancelled": 0} == {
        "requests": 1,
        "streams_started": 1,
        "streams_completed": 0,
        "streams_cancelled": 1,
        "open_streams": 0,
        "requests_cancelled": 0,
    }


def test_hang_sends_headers_then_nothing(base_url: str) -> None:
    body = ask("[mock:hang=5]", stream=True)
    timeout = httpx.Timeout(5.0, read=0.3)
    with (
        httpx.Client(timeout=timeout) as http,
        http.stream("POST", base_url + "/v1/messages", headers=OLD_HEADERS, json=body) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            next(response.iter_raw())
    wait_for(base_url, "streams_cancelled", 1)


def test_stall_before_headers_and_a_cancelled_plain_request(base_url: str) -> None:
    timeout = httpx.Timeout(5.0, read=0.3)
    with httpx.Client(timeout=timeout) as http, pytest.raises(httpx.ReadTimeout):
        http.post(base_url + "/v1/messages", headers=OLD_HEADERS, json=ask("[mock:stall=5]"))
    wait_for(base_url, "requests_cancelled", 1)
    assert stats(base_url)["streams_started"] == 0
