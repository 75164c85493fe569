"""Compression through a real proxy on both routes: modes, the per-request header, the token
figures in the response headers, and prefix stability of what reaches the upstream."""

from __future__ import annotations

import itertools

import httpx
import orjson

from servers import TEST_KEY, MockUpstream, Proxy

AUTH = {"authorization": f"Bearer {TEST_KEY}"}
LOG = "".join(f"\x1b[32mstep {i}\x1b[0m ok   \r" + f"progress {i}%\r" * 3 + "\n" for i in range(60))
JSON_RESULT = orjson.dumps(
    {"rows": [{"id": i, "name": f"n{i}"} for i in range(40)]}, option=orjson.OPT_INDENT_2
).decode()


def conversation(turns: int) -> list[dict[str, object]]:
    msgs: list[dict[str, object]] = [{"role": "user", "content": "run the build"}]
    for t in range(turns):
        msgs.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{t}",
                        "type": "function",
                        "function": {"name": "bash", "arguments": "{}"},
                    }
                ],
            }
        )
        msgs.append(
            {
                "role": "tool",
                "tool_call_id": f"call_{t}",
                "content": LOG if t % 2 == 0 else JSON_RESULT,
            }
        )
    return msgs


def send(proxy: Proxy, msgs: list[dict[str, object]], **headers: str) -> httpx.Response:
    body = {
        "model": "claude-sonnet-4-6",
        "messages": msgs,
        "tools": [
            {"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}
        ],
    }
    return httpx.post(
        proxy.v1 + "/chat/completions", json=body, headers={**AUTH, **headers}, timeout=30
    )


def upstream_tool_results(mock: MockUpstream) -> list[str]:
    out = []
    for msg in mock.requests()[-1]["body"]["messages"]:
        for block in msg["content"] if isinstance(msg["content"], list) else []:
            if block.get("type") == "tool_result":
                out.append(block.get("content"))
    return out


def test_lossless_by_default_with_token_headers(proxy: Proxy, mock: MockUpstream) -> None:
    r = send(proxy, conversation(2))
    assert r.status_code == 200
    assert r.headers["x-ferrule-compression"] == "lossless"
    before, after = (
        int(r.headers["x-ferrule-tokens-before"]),
        int(r.headers["x-ferrule-tokens-after"]),
    )
    assert after < before and int(r.headers["x-ferrule-tokens-saved"]) == before - after
    # the size after compression is the prompt as the upstream counted it (its usage)
    assert after == r.json()["usage"]["prompt_tokens"] > 0
    log, js = upstream_tool_results(mock)
    # colour codes gone; each carriage-return redraw collapsed to the line finally shown
    assert "\x1b[" not in log and "\r" not in log and "step 3" not in log and "progress 3%" in log
    assert orjson.loads(js) == orjson.loads(JSON_RESULT) and len(js) < len(JSON_RESULT)


def test_header_chooses_the_mode(proxy: Proxy, mock: MockUpstream) -> None:
    r = send(proxy, conversation(2), **{"x-ferrule-compression": "off"})
    assert "x-ferrule-compression" not in r.headers
    assert upstream_tool_results(mock)[0] == LOG
    r = send(proxy, conversation(2), **{"x-ferrule-compression": "aggressive"})
    assert r.headers["x-ferrule-compression"] == "aggressive"
    r = send(proxy, conversation(2), **{"x-ferrule-compression": "extreme"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-ferrule-compression"


def test_each_turn_extends_the_previous_upstream_request(proxy: Proxy, mock: MockUpstream) -> None:
    """Prefix stability on the wire: the compressed messages of turn k are exactly the first
    messages of turn k+1 (cache_control markers aside), so Anthropic's prompt cache matches."""
    sent = []
    for turns in range(1, 5):
        assert send(proxy, conversation(turns)).status_code == 200
        msgs = mock.requests()[-1]["body"]["messages"]
        for m in msgs:
            for b in m["content"] if isinstance(m["content"], list) else []:
                b.pop("cache_control", None)
        sent.append(msgs)
    for earlier, later in itertools.pairwise(sent):
        # the last turn of `earlier` is the user turn that `later` extends with more blocks
        assert later[: len(earlier) - 1] == earlier[:-1]
        assert (
            later[len(earlier) - 1]["content"][: len(earlier[-1]["content"])]
            == earlier[-1]["content"]
        )


def test_anthropic_route_is_compressed_too(proxy: Proxy, mock: MockUpstream) -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 50,
        # the API wants the tools of a tool history defined
        "tools": [{"name": "bash", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "bash", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": LOG}],
            },
        ],
    }
    headers = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"}
    r = httpx.post(proxy.v1 + "/messages", json=body, headers=headers, timeout=30)
    assert r.status_code == 200 and r.headers["x-ferrule-compression"] == "lossless"
    [result] = upstream_tool_results(mock)
    assert "\x1b[" not in result and len(result) < len(LOG)


def _figures(headers: httpx.Headers) -> tuple[int, int, int]:
    return (
        int(headers["x-ferrule-tokens-before"]),
        int(headers["x-ferrule-tokens-after"]),
        int(headers["x-ferrule-tokens-saved"]),
    )


def test_stream_token_headers_come_from_the_upstreams_usage(
    proxy: Proxy, mock: MockUpstream
) -> None:
    """A streamed chat answer's headers go out with its first event: the prompt's size is
    message_start's usage. Anthropic's own stream starts before that: the saved figure alone.
    A request compression left alone says 0 saved, without counting anything."""
    body = {
        "model": "claude-sonnet-4-6",
        "messages": conversation(2),
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}
        ],
    }
    with httpx.stream(
        "POST", proxy.v1 + "/chat/completions", json=body, headers=AUTH, timeout=30
    ) as r:
        before, after, saved = _figures(r.headers)
        chunks = [orjson.loads(line[6:]) for line in r.iter_lines() if line[6:13] == '{"id":"']
    prompt = [c["usage"]["prompt_tokens"] for c in chunks if c.get("usage")]
    assert saved > 0 and before == after + saved and [after] == prompt

    plain = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 20,
        "stream": True,
        "messages": [{"role": "user", "content": "hello there"}],
    }
    headers = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", proxy.v1 + "/messages", json=plain, headers=headers) as r:
        # Anthropic's stream starts at once, before its first event counts the prompt
        assert r.headers["x-ferrule-tokens-saved"] == "0"
        assert "x-ferrule-tokens-before" not in r.headers
        r.read()
    r = httpx.post(proxy.v1 + "/messages", json={**plain, "stream": False}, headers=headers)
    before, after, saved = _figures(r.headers)
    usage = r.json()["usage"]
    prompt = sum(
        usage.get(k) or 0
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    assert saved == 0 and before == after == prompt > 0
