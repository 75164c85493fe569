"""The byte pipe of ``pipe.py`` under Granian's RSGI interface (issue 12 prototype).

Same behaviour as the ASGI pipe: the body goes as is to ``$UPSTREAM_URL/v1/messages``; a
``text/event-stream`` answer is relayed chunk by chunk as it arrives (``response_stream`` +
``send_bytes``), anything else is read whole and sent with ``response_bytes`` (Granian adds the
content-length). ``PIPE_ENGINE`` is ``aiohttp`` (the same ``ClientSession`` set-up as pipe.py),
``native`` (the hyper prototype through ``native_client.py``) or ``none`` (the fake upstream's
bytes answered from memory: the floor set by Granian and the RSGI plumbing alone, as pipe.py's
``none``); ``PIPE_POOL`` as in pipe.py.

RSGI has no lifespan: the client is made on the first request, in the worker's loop, and closed
in ``__rsgi_del__``. Run it with
``granian --interface rsgi --workers 1 --loop uvloop pipe_rsgi:app`` from this folder.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

ENGINE = os.environ.get("PIPE_ENGINE", "aiohttp")
if ENGINE not in ("aiohttp", "native", "none"):
    raise SystemExit(f"PIPE_ENGINE must be aiohttp, native or none, not {ENGINE!r}")
UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8089").rstrip("/")
TARGET = UPSTREAM_URL + "/v1/messages"
POOL = int(os.environ.get("PIPE_POOL", "64"))
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
FORWARD_HEADERS = ("x-api-key", "anthropic-version", "anthropic-beta", "x-bench-pace-ms")
STREAM_HEADERS_TAIL = [("cache-control", "no-cache")]

if ENGINE == "native":
    import native_client

    UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (native_client.UpstreamError,)
else:
    UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError)


def _aiohttp_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=POOL, limit_per_host=0, keepalive_timeout=30.0)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
        auto_decompress=False,
    )


async def via_aiohttp(session: aiohttp.ClientSession, scope: Any, body: bytes, proto: Any) -> None:
    headers = {"content-type": "application/json", "accept": "application/json"}
    sh = scope.headers
    for name in FORWARD_HEADERS:
        value = sh.get(name)
        if value is not None:
            headers[name] = value
    async with session.post(TARGET, data=body, headers=headers) as response:
        content_type = response.headers.get("content-type", "application/json")
        if content_type.startswith("text/event-stream"):
            transport = proto.response_stream(
                response.status, [("content-type", content_type), *STREAM_HEADERS_TAIL]
            )
            async for chunk in response.content.iter_any():
                await transport.send_bytes(chunk)
        else:
            data = await response.read()
            proto.response_bytes(response.status, [("content-type", content_type)], data)


async def via_native(client: Any, scope: Any, body: bytes, proto: Any) -> None:
    sh = scope.headers
    headers = []
    for name in FORWARD_HEADERS:
        value = sh.get(name)
        if value is not None:
            headers.append((name.encode(), value.encode("latin-1")))
    answer = await client.post(body, headers)
    chunks = answer.chunks
    if chunks is None:
        proto.response_bytes(answer.status, [("content-type", answer.content_type)], answer.body)
        return
    try:
        transport = proto.response_stream(
            answer.status, [("content-type", answer.content_type), *STREAM_HEADERS_TAIL]
        )
        async for chunk in chunks:
            await transport.send_bytes(chunk)
    finally:
        answer.close()


def from_memory(body: bytes, proto: Any) -> None:
    from fast_upstream import EVENTS, NON_STREAM_BODY

    if b'"stream":true' in body or b'"stream": true' in body:
        transport = proto.response_stream(
            200, [("content-type", "text/event-stream; charset=utf-8"), *STREAM_HEADERS_TAIL]
        )
        return transport.send_bytes(b"".join(EVENTS))
    proto.response_bytes(200, [("content-type", "application/json")], NON_STREAM_BODY)
    return None


class App:
    def __init__(self) -> None:
        self.client: Any = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.client is not None:
            loop.run_until_complete(self.client.close())

    def _client(self) -> Any:
        if ENGINE == "native":
            return native_client.NativeClient(TARGET, POOL)
        return _aiohttp_session()

    async def __call__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        body = await proto()
        if ENGINE == "none":
            sent = from_memory(body, proto)
            if sent is not None:
                await sent
            return
        client = self.client
        if client is None:
            client = self.client = self._client()
        try:
            if ENGINE == "native":
                await via_native(client, scope, body, proto)
            else:
                await via_aiohttp(client, scope, body, proto)
        except UPSTREAM_ERRORS as exc:
            # Before the response started only; a mid-stream failure cannot be reported
            # (Granian ends the stream when the handler raises).
            msg = f"upstream error: {type(exc).__name__}: {exc}"
            proto.response_str(502, [("content-type", "text/plain")], msg)


app = App()
