"""The official ``anthropic`` SDK, unchanged, against Ferrule's Anthropic-native route
(``/v1/messages``, ``/v1/messages/count_tokens``) through a real ``ferrule serve`` (both backends)
in front of the simulated upstream: plain and streamed messages, tool use, thinking, token counting,
upstream errors as the SDK's own exceptions, Ferrule's own errors in Anthropic's envelope, and the
``request-id`` header passed back."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import orjson
import pytest

from servers import TEST_KEY, MockUpstream, Proxy

MODEL = "claude-sonnet-4-6"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
}
WEATHER_ARGS = {"city": "city-value", "unit": "celsius"}


def sdk(proxy: Proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=TEST_KEY, max_retries=0, timeout=30)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def check_envelope(body: Any, error_type: str | None) -> str:
    """Anthropic's error envelope (``error_type`` None: any type); returns the message."""
    assert isinstance(body, dict) and body["type"] == "error", body
    err = body["error"]
    assert isinstance(err["type"], str) and err["type"] == (error_type or err["type"]), body
    assert isinstance(err["message"], str) and err["message"]
    return str(err["message"])


def test_messages_create_is_passed_through(proxy: Proxy, mock: MockUpstream) -> None:
    client = sdk(proxy)
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=200,
        system="Be brief.",
        messages=user("Hello there [mock:words=20]"),  # type: ignore[arg-type]
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == MODEL
    assert message.stop_reason == "end_turn"
    [block] = message.content
    assert block.type == "text" and block.text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    # the upstream's request-id reaches the SDK, plus Ferrule's own id
    assert raw.headers["request-id"].startswith("req_")
    assert message._request_id == raw.headers["request-id"]
    assert raw.headers["x-request-id"]
    assert any(k.startswith("anthropic-ratelimit-") for k in raw.headers)
    # the SDK's request went upstream unchanged: its own API version, its body, the key
    [seen] = mock.requests()
    assert seen["headers"]["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert seen["headers"]["x-api-key"] == TEST_KEY  # the SDK sent it as a bearer token
    assert "authorization" not in seen["headers"]
    assert seen["body"] == {
        "model": MODEL,
        "max_tokens": 200,
        "system": "Be brief.",
        "messages": user("Hello there [mock:words=20]"),
    }
    # byte-faithful: odd spacing and key order arrive upstream exactly as sent
    odd = b'{ "messages" : [{"content":"Hi  there","role":"user"}],\n "max_tokens":20, "model":"claude-sonnet-4-6" }'
    resp = httpx.post(
        proxy.url + "/v1/messages",
        content=odd,
        headers={
            "x-api-key": TEST_KEY,
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        },
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert mock.requests()[-1]["raw"] == odd.decode()


def test_messages_stream_final_message(proxy: Proxy) -> None:
    client = sdk(proxy)
    kw: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 200,
        "messages": user("Stream me [mock:words=30]"),
    }
    plain = client.messages.create(**kw)
    with client.messages.stream(**kw) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 3
    assert final.id.startswith("msg_") and final.stop_reason == "end_turn"
    [block] = final.content
    assert block.type == "text" and block.text == "".join(pieces)
    assert block.text == plain.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == plain.usage.output_tokens
    # raw SSE: Anthropic's own events, unchanged
    resp = httpx.post(
        proxy.url + "/v1/messages",
        json={**kw, "stream": True},
        headers={"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["request-id"].startswith("req_")
    events = [
        line[len("event: ") :] for line in resp.text.splitlines() if line.startswith("event: ")
    ]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_tool_use(proxy: Proxy, streamed: bool) -> None:
    client = sdk(proxy)
    kw: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 300,
        "tools": [WEATHER],
        "messages": user("Weather in Paris? [mock:tool]"),
    }
    if streamed:
        with client.messages.stream(**kw) as stream:
            json_events = [e for e in stream if e.type == "input_json"]
            message = stream.get_final_message()
        assert len(json_events) > 1  # the input arrived in fragments
    else:
        message = client.messages.create(**kw)
    assert message.stop_reason == "tool_use"
    [use] = [b for b in message.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id.startswith("toolu_")
    assert use.input == WEATHER_ARGS
    # the round trip: tool_result back, echoed by the upstream exactly as the SDK sent it
    follow = client.messages.create(
        **{
            **kw,
            "messages": [
                *kw["messages"],
                {
                    "role": "assistant",
                    "content": [b.model_dump(exclude_none=True) for b in message.content],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": use.id,
                            "content": "sunny [mock:echo]",
                        }
                    ],
                },
            ],
        }
    )
    sent = orjson.loads(follow.content[0].text)  # type: ignore[union-attr]
    assert sent["messages"][1]["content"][-1]["id"] == use.id
    assert sent["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": use.id,
        "content": "sunny [mock:echo]",
    }


def test_thinking_blocks(proxy: Proxy) -> None:
    client = sdk(proxy)
    kw: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": user("Think first [mock:thinking]"),
    }
    message = client.messages.create(**kw)
    thinking, text = message.content[0], message.content[-1]
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature
    assert text.type == "text" and text.text
    with client.messages.stream(**kw) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == [b.type for b in message.content]
    assert final.content[0].thinking == thinking.thinking  # type: ignore[union-attr]
    assert final.content[0].signature == thinking.signature  # type: ignore[union-attr]


def test_count_tokens(proxy: Proxy, mock: MockUpstream) -> None:
    client = sdk(proxy)
    short = client.messages.count_tokens(model=MODEL, messages=user("Hi"))  # type: ignore[arg-type]
    long = client.messages.count_tokens(
        model=MODEL,
        messages=user("Hi " + "and some more words " * 50),  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert 0 < short.input_tokens < long.input_tokens
    assert [r["path"] for r in mock.requests()] == ["/v1/messages/count_tokens"] * 2


def test_upstream_rate_limit_is_the_sdks_rate_limit_error(proxy: Proxy) -> None:
    client = sdk(proxy)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model=MODEL, max_tokens=50, messages=user("Hello [mock:error=429]"))  # type: ignore[arg-type]
    err = caught.value
    assert err.status_code == 429
    check_envelope(err.body, "rate_limit_error")
    assert err.type == "rate_limit_error"
    assert err.request_id and err.request_id.startswith("req_")
    assert err.response.headers.get("retry-after")
    # the same when streaming: the error comes before the stream starts
    with (
        pytest.raises(anthropic.RateLimitError),
        client.messages.stream(
            model=MODEL,
            max_tokens=50,
            messages=user("Hello [mock:error=429]"),  # type: ignore[arg-type]
        ) as stream,
    ):
        stream.get_final_message()


def test_upstream_overloaded_and_bad_request(proxy: Proxy, mock: MockUpstream) -> None:
    client = sdk(proxy)
    mock.script(["error=529"] * 3)  # one more than Ferrule retries: the 529 comes back
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model=MODEL, max_tokens=50, messages=user("Hello"))  # type: ignore[arg-type]
    assert caught.value.status_code == 529  # the native route keeps Anthropic's own status
    check_envelope(caught.value.body, "overloaded_error")
    # a request the upstream rejects: its 400 and message reach the SDK
    mock.script(["error=400"])
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=MODEL, max_tokens=50, messages=user("Hello"))  # type: ignore[arg-type]
    check_envelope(bad.value.body, "invalid_request_error")
    assert bad.value.request_id and bad.value.request_id.startswith("req_")


@pytest.mark.parametrize(
    ("path", "content", "status", "error_type"),
    [
        ("/v1/messages", b"{not json", 400, "invalid_request_error"),
        ("/v1/messages", b"", 400, "invalid_request_error"),
        ("/v1/messages", b"[1, 2]", 400, "invalid_request_error"),
        ("/v1/messages/count_tokens", b"{not json", 400, "invalid_request_error"),
    ],
)
def test_ferrules_own_errors_use_anthropics_envelope(
    proxy: Proxy, mock: MockUpstream, path: str, content: bytes, status: int, error_type: str
) -> None:
    resp = httpx.post(
        proxy.url + path,
        content=content,
        headers={
            "x-api-key": TEST_KEY,
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        },
        timeout=30,
    )
    assert resp.status_code == status
    check_envelope(resp.json(), error_type)
    assert resp.json()["request_id"] == resp.headers["x-request-id"]
    assert mock.requests() == []


def test_ferrules_own_errors_reach_the_sdk(proxy: Proxy, mock: MockUpstream) -> None:
    # no key: Ferrule answers 401 itself, in Anthropic's shape, and the SDK raises its own error
    no_key = {"authorization": anthropic.Omit(), "x-api-key": anthropic.Omit()}
    with pytest.raises(anthropic.AuthenticationError) as caught:
        sdk(proxy).messages.create(
            model=MODEL,
            max_tokens=50,
            messages=user("Hello"),  # type: ignore[arg-type]
            extra_headers=no_key,  # type: ignore[arg-type]
        )
    check_envelope(caught.value.body, "authentication_error")
    resp = httpx.get(proxy.url + "/v1/messages", headers={"x-api-key": TEST_KEY})
    assert resp.status_code == 405
    check_envelope(resp.json(), None)
    assert mock.requests() == []


def test_beta_messages_forward_the_beta_header(proxy: Proxy, mock: MockUpstream) -> None:
    message = sdk(proxy).beta.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=user("Hello beta"),  # type: ignore[arg-type]
        betas=["context-management-2025-06-27"],
    )
    assert message.content[0].type == "text"
    [seen] = mock.requests()
    assert seen["headers"]["anthropic-beta"] == "context-management-2025-06-27"
