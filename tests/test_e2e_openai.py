"""End to end through a real ``ferrule serve`` (Granian) and the simulated Anthropic upstream,
driven by the official openai SDK and curl, on both backends."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion

from servers import TEST_KEY, MockUpstream, Proxy
from sse_client import check_stream, error_of, text_of

MODEL = "tokenpak-anthropic/claude-sonnet-4-6"
HI = [{"role": "user", "content": "Hello there"}]


def post(proxy: Proxy, body: object, **kw: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {TEST_KEY}", **kw.pop("headers", {})}  # type: ignore[dict-item]
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(proxy.v1 + "/chat/completions", content=content, headers=headers, timeout=30)


def test_health_reports_backend(proxy: Proxy) -> None:
    health = httpx.get(proxy.url + "/health").json()
    assert health["status"] == "ok" and health["backend"] == proxy.backend


def test_sync_create_validates_and_forwards_key(proxy: Proxy, mock: MockUpstream) -> None:
    client = openai.OpenAI(base_url=proxy.v1, api_key=TEST_KEY, max_retries=0)
    answer = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=50)  # type: ignore[arg-type]
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == MODEL
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    [seen] = mock.requests()
    assert seen["headers"]["x-api-key"] == TEST_KEY
    assert "authorization" not in seen["headers"]
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    assert seen["body"]["model"] == "claude-sonnet-4-6"
    # the raw JSON, validated strictly by the SDK's own type
    raw = post(proxy, {"model": MODEL, "messages": HI})
    assert raw.status_code == 200
    ChatCompletion.model_validate(raw.json())
    assert raw.headers["x-request-id"]


def test_async_create_and_stream(proxy: Proxy) -> None:
    async def go() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=TEST_KEY, max_retries=0)
        plain = await client.chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
        parts = []
        stream = await client.chat.completions.create(model=MODEL, messages=HI, stream=True)  # type: ignore[arg-type]
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        await client.close()
        return plain.choices[0].message.content or "", "".join(parts)

    plain, streamed = asyncio.run(go())
    assert plain and plain == streamed  # the simulated answer is a function of the request


def test_stream_follows_the_rules(proxy: Proxy) -> None:
    raw = post(proxy, {"model": MODEL, "messages": HI, "stream": True})
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = check_stream(raw.content)
    assert text_of(chunks)
    raw = post(
        proxy,
        {"model": MODEL, "messages": HI, "stream": True, "stream_options": {"include_usage": True}},
    )
    chunks = check_stream(raw.content, expect_usage=True)
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_sdk_stream_sync(proxy: Proxy) -> None:
    client = openai.OpenAI(base_url=proxy.v1, api_key=TEST_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HI,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["stop"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_plain_and_stream(proxy: Proxy) -> None:
    base = [
        "curl",
        "-sS",
        proxy.v1 + "/chat/completions",
        "-H",
        f"Authorization: Bearer {TEST_KEY}",
        "-H",
        "Content-Type: application/json",
    ]
    out = subprocess.run(
        [*base, "-d", orjson.dumps({"model": MODEL, "messages": HI}).decode()],
        capture_output=True,
        check=True,
        timeout=30,
    )
    ChatCompletion.model_validate_json(out.stdout)
    out = subprocess.run(
        [
            *base,
            "-N",
            "-d",
            orjson.dumps({"model": MODEL, "messages": HI, "stream": True}).decode(),
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    check_stream(out.stdout)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        ({"model": MODEL}, 400, "messages"),
        ({"model": MODEL, "messages": "hi"}, 400, "messages"),
        ({"model": MODEL, "messages": HI, "n": 3}, 400, "'n'"),
        ({"model": MODEL, "messages": HI, "temperature": "warm"}, 400, "temperature"),
        (b"[1,2]", 400, "JSON object"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape_and_nothing_goes_upstream(
    proxy: Proxy, mock: MockUpstream, body: object, status: int, fragment: str
) -> None:
    resp = post(proxy, body)
    assert resp.status_code == status
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert fragment in err["message"] and err["type"] == "invalid_request_error"
    assert mock.requests() == []


def test_missing_key_unknown_route_and_wrong_method(proxy: Proxy, mock: MockUpstream) -> None:
    resp = httpx.post(proxy.v1 + "/chat/completions", json={"model": MODEL, "messages": HI})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    resp = httpx.get(proxy.url + "/nope")
    assert resp.status_code == 404 and "no route" in resp.json()["error"]["message"]
    resp = httpx.get(proxy.v1 + "/chat/completions")
    assert resp.status_code == 405
    assert mock.requests() == []


def test_upstream_errors_keep_status_message_and_retry_headers(
    proxy: Proxy, mock: MockUpstream
) -> None:
    client = openai.OpenAI(base_url=proxy.v1, api_key=TEST_KEY, max_retries=0)
    mock.script(["error=429"] * 3)  # more 429s than Ferrule's attempts: the 429 comes back
    with pytest.raises(openai.RateLimitError) as rl:
        client.chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    assert rl.value.response.headers.get("retry-after")
    assert rl.value.response.headers["x-ferrule-attempts"] == "3"
    mock.reset()
    mock.script(["error=529"] * 3)
    resp = post(proxy, {"model": MODEL, "messages": HI})
    assert resp.status_code == 503 and resp.json()["error"]["message"]
    mock.script(["error=529"] * 3)  # before the first byte of a stream: an HTTP error, not a 200
    resp = post(proxy, {"model": MODEL, "messages": HI, "stream": True})
    assert resp.status_code == 503
    # a request the upstream rejects: its message reaches the client, and it is never retried
    mock.reset()
    mock.script(["error=400"])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    assert len(mock.requests()) == 1


def test_one_overload_is_retried_invisibly(proxy: Proxy, mock: MockUpstream) -> None:
    mock.script(["error=529"])
    resp = post(proxy, {"model": MODEL, "messages": HI, "stream": True})
    assert resp.status_code == 200 and resp.headers["x-ferrule-attempts"] == "2"
    check_stream(resp.content)
    assert len(mock.requests()) == 2


def test_midstream_error_and_truncation_end_the_stream_with_an_error(proxy: Proxy) -> None:
    resp = post(
        proxy,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "go [mock:midstream_error]"}],
            "stream": True,
        },
    )
    assert resp.status_code == 200
    assert error_of(resp.content)["type"] == "overloaded_error"
    resp = post(
        proxy,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "go [mock:truncate]"}],
            "stream": True,
        },
    )
    assert resp.status_code == 200
    assert "message_stop" in error_of(resp.content)["message"]
    client = openai.OpenAI(base_url=proxy.v1, api_key=TEST_KEY, max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "go [mock:truncate]"}],
            stream=True,  # type: ignore[arg-type]
        ):
            pass


def test_upstream_unreachable_is_a_502(tmp_path: object) -> None:
    from ferrule.procs import free_port
    from servers import start_proxy

    dead = f"http://127.0.0.1:{free_port()}"
    with start_proxy("python", dead, "/dev/null") as p:
        resp = post(p, {"model": MODEL, "messages": HI})
        assert resp.status_code == 502
        assert resp.json()["error"]["type"] == "api_error"


def test_client_disconnect_mid_stream_closes_the_upstream(proxy: Proxy, mock: MockUpstream) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "long [mock:words=400] [mock:delay=20]"}],
        "stream": True,
    }
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            proxy.v1 + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {TEST_KEY}"},
        ) as resp,
    ):
        for _ in resp.iter_bytes():
            break  # got the first bytes, now hang up
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:
        stats = mock.stats()
        if stats["streams_cancelled"] >= 1:
            break
        time.sleep(0.02)
    assert stats["streams_cancelled"] == 1, stats
    assert stats["open_streams"] == 0
    assert stats["streams_completed"] == 0


def test_models_in_both_shapes(proxy: Proxy) -> None:
    client = openai.OpenAI(base_url=proxy.v1, api_key=TEST_KEY, max_retries=0)
    ids = [m.id for m in client.models.list()]
    assert "claude-sonnet-4-6" in ids
    anth = httpx.get(proxy.v1 + "/models", headers={"anthropic-version": "2023-06-01"}).json()
    assert anth["data"][0]["type"] == "model" and "has_more" in anth
