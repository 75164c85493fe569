"""The chat route's request path in one native call (``ChatRequests``, issue 12), in the app:
which requests take it, and that what reaches the upstream is what the stages would have sent.

The app runs in-process (so the path taken can be watched) in front of the simulated upstream,
which records the bytes it was sent; the expected bytes are the Python stages run one by one
(translation, compression, breakpoints)."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

import orjson
import pytest

from asgi_call import post
from ferrule import backend
from ferrule.app import App
from ferrule.breakpoints import place_breakpoints_json
from ferrule.cache import MemoryStore
from ferrule.compression import compress_request
from ferrule.config import load
from ferrule.routes.chat import ChatDialect
from ferrule.seal import Sealer
from ferrule.tenant import tenant_id
from ferrule.thinking import ThinkingMemory
from ferrule.translate.request import to_anthropic
from servers import TEST_KEY, MockUpstream

MODEL = "claude-sonnet-4-6"
SYSTEM = "You are a careful assistant. " * 150  # over the model's minimum: breakpoints go in


def _stages(body: dict[str, Any], mode: str = "lossless") -> bytes:
    out = to_anthropic(body, aliases={}, version="2023-06-01").body
    compress_request(out, mode)
    return place_breakpoints_json(out, ttl="5m") or orjson.dumps(out)


def _call(
    app: App, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        sent = await post(app, "/v1/chat/completions", body, TEST_KEY, headers)
        await app.services.upstream.aclose()
        app.services._upstream = None  # each call has its own event loop: its own client
        return sent

    sent = asyncio.run(run())
    out = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], orjson.loads(out)


@pytest.fixture
def app(
    mock: MockUpstream, tmp_path: Any, kernels: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> App:
    """The app, with the request path of one backend (the test runs once per backend)."""
    monkeypatch.setattr(backend, "ChatRequests", kernels.ChatRequests)
    return App(load(env={"FERRULE_DATA_DIR": str(tmp_path), "FERRULE_UPSTREAM_URL": mock.url}))


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each request took the native path."""
    seen: list[bool] = []
    original = ChatDialect._native

    async def watched(self: ChatDialect, *args: Any) -> Any:
        got = await original(self, *args)
        seen.append(got is not None)
        return got

    monkeypatch.setattr(ChatDialect, "_native", watched)
    return seen


def _sent(mock: MockUpstream) -> bytes:
    [request] = mock.requests()
    raw: str = request["raw"]
    return raw.encode()


def test_a_plain_request_goes_native_and_sends_the_stages_bytes(
    app: App, mock: MockUpstream, taken: list[bool]
) -> None:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Say hello. \x1b[1mplease\x1b[0m"},
        ],
        "max_tokens": 64,
        "user": "agent-3",
    }
    status, answer = _call(app, body)
    assert status == 200 and answer["object"] == "chat.completion"
    assert taken == [True]
    sent = _sent(mock)
    assert sent == _stages(body)
    assert b"cache_control" in sent and b"\x1b" not in sent  # marked and compressed


def test_what_the_path_declines_runs_the_stages(
    app: App, mock: MockUpstream, taken: list[bool]
) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Think first."}],
        "reasoning_effort": "low",
    }
    status, _ = _call(app, body)
    assert status == 200 and taken == [False]
    assert _sent(mock) == _stages(body)


def test_a_bad_compression_header_is_the_stages_400(
    app: App, mock: MockUpstream, taken: list[bool]
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    status, answer = _call(app, body, [(b"x-ferrule-compression", b"maximum")])
    assert status == 400 and answer["error"]["param"] == "x-ferrule-compression"
    assert taken == [False] and mock.requests() == []


def test_a_tool_turn_goes_native_unless_thinking_is_kept_for_it(
    app: App, mock: MockUpstream, taken: list[bool]
) -> None:
    """With the thinking memory on, a tool turn takes the native path while nothing is kept for
    its calls; once thinking is kept for them, the stages put it back."""
    app.services.thinking = ThinkingMemory(MemoryStore(1 << 20), Sealer(["k"]), 3600)
    call = {"id": "toolu_1", "type": "function", "function": {"name": "Read", "arguments": "{}"}}
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Read it."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "print('hi')"},
        ],
        "tools": [{"type": "function", "function": {"name": "Read"}}],
    }
    assert _call(app, body)[0] == 200 and taken == [True]
    assert _sent(mock) == _stages(body)

    thought = {"type": "thinking", "thinking": "Read first.", "signature": "c2lnbmF0dXJl"}
    answer = {"content": [thought, {"type": "tool_use", "id": "toolu_1", "name": "Read"}]}
    asyncio.run(app.services.thinking.remember(tenant_id(TEST_KEY), answer))
    mock.reset()
    status, answer = _call(app, body)
    assert taken == [True, False]
    # the simulated upstream checks signatures as the API does: this made-up one is refused
    assert status == 400 and "signature" in answer["error"]["message"]
    [turn] = [m for m in orjson.loads(_sent(mock))["messages"] if m["role"] == "assistant"]
    assert turn["content"][0] == thought
