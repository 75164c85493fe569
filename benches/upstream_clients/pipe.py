"""A minimal ASGI byte pipe for the upstream-client benchmark: no translation, only transport.

Every request's body is forwarded as is to ``$UPSTREAM_URL/v1/messages`` (POST); the upstream's
status and content-type come back, and its body follows: streamed chunk by chunk as it arrives
when the upstream answers ``text/event-stream``, read whole and sent with a content-length
otherwise (what Ferrule does with a non-stream reply it has to translate).

``PIPE_ENGINE`` picks the upstream HTTP client, one shared client per worker, made in the ASGI
lifespan and closed at shutdown:

* ``httpx``: plain ``httpx.AsyncClient`` (httpcore, HTTP/1.1), explicit pool limits;
* ``httpx-aiohttp``: the same httpx API over ``httpx_aiohttp.AiohttpTransport``;
* ``aiohttp``: ``aiohttp.ClientSession`` with a ``TCPConnector`` of the same limits (and no
  cookie jar: a shared proxy client must not replay one user's upstream cookies to another);
* ``httpx2`` / ``httpx2-aiohttp``: the same two httpx set-ups on ``httpx2``, pydantic's fork of
  httpx (with httpcore2), which the openai and anthropic SDKs now depend on; extra rows, run only
  where ``httpx2`` is installed;
* ``native``: the issue-12 prototype, hyper on a tokio thread inside a PyO3 extension
  (benches/upstream_native, built into the venv with maturin), bridged to asyncio by
  ``native_client.py`` with coalesced chunk delivery;
* ``none``: no upstream call at all, the fake upstream's bytes answered from memory (one body
  message per response): the floor set by Granian and the ASGI plumbing alone.

``PIPE_POOL`` (default 64) is the connection limit and the keep-alive pool size of each engine.
Streaming upstream responses are always closed (``finally``), also when the client goes away.
``PIPE_WATCH_DISCONNECT=1`` also watches ``receive()`` for ``http.disconnect`` and cancels the
forwarding when the client goes (Granian's ``send`` does not fail after a disconnect); it is off
for the throughput runs and on for the disconnect check.
Run it with ``granian --interface asgi --workers 1 --loop uvloop pipe:app`` from this folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import httpx

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ENGINES = ("httpx", "httpx-aiohttp", "aiohttp", "none", "httpx2", "httpx2-aiohttp", "native")
ENGINE = os.environ.get("PIPE_ENGINE", "aiohttp")
if ENGINE not in ENGINES:
    raise SystemExit(f"PIPE_ENGINE must be one of {ENGINES}, not {ENGINE!r}")
UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8089").rstrip("/")
TARGET = UPSTREAM_URL + "/v1/messages"
POOL = int(os.environ.get("PIPE_POOL", "64"))
WATCH_DISCONNECT = os.environ.get("PIPE_WATCH_DISCONNECT", "0") == "1"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0

# What the upstream needs from the caller; the rest of a real request is Ferrule's business.
FORWARD_HEADERS = (b"x-api-key", b"anthropic-version", b"anthropic-beta", b"x-bench-pace-ms")

STATE: dict[str, Any] = {}

UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (
    httpx.HTTPError,
    aiohttp.ClientError,
    TimeoutError,
)
if ENGINE.startswith("httpx2"):
    import httpx2

    UPSTREAM_ERRORS += (httpx2.HTTPError,)
if ENGINE == "native":
    import native_client

    UPSTREAM_ERRORS += (native_client.UpstreamError,)


class StreamBroken(Exception):
    """The upstream failed after the response had started: the downstream stream is cut."""


def _describe(exc: BaseException) -> str:
    parts = []
    cur: BaseException | None = exc
    while cur is not None:
        parts.append(f"{type(cur).__module__}.{type(cur).__qualname__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    return " <- ".join(parts)


def _httpx_module() -> Any:
    if ENGINE.startswith("httpx2"):
        import httpx2

        return httpx2
    return httpx


def _httpx_client() -> Any:  # an httpx(2).AsyncClient
    hx = _httpx_module()
    limits = hx.Limits(max_connections=POOL, max_keepalive_connections=POOL, keepalive_expiry=30.0)
    timeout = hx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT, pool=CONNECT_TIMEOUT)
    client: Any
    if ENGINE in ("httpx", "httpx2"):
        client = hx.AsyncClient(limits=limits, timeout=timeout, http1=True, http2=False)
    elif ENGINE == "httpx-aiohttp":
        from httpx_aiohttp import HttpxAiohttpClient

        client = HttpxAiohttpClient(limits=limits, timeout=timeout)
    else:
        from httpx_aiohttp.httpx2 import Httpx2AiohttpClient

        client = Httpx2AiohttpClient(limits=limits, timeout=timeout)
    return client


def _aiohttp_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=POOL, limit_per_host=0, keepalive_timeout=30.0)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
        auto_decompress=False,
    )


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if ENGINE == "aiohttp":
                STATE["client"] = _aiohttp_session()
            elif ENGINE == "native":
                STATE["client"] = native_client.NativeClient(TARGET, POOL)
            elif ENGINE == "none":
                STATE["client"] = None
            else:
                STATE["client"] = _httpx_client()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            client = STATE.pop("client", None)
            if isinstance(client, aiohttp.ClientSession) or ENGINE == "native":
                await client.close()
            elif client is not None:
                await client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return bytes(body)
    parts = [body]
    while message.get("more_body", False):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


def upstream_headers(scope: Scope) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    for name, value in scope["headers"]:
        if name in FORWARD_HEADERS:
            headers[name.decode()] = value.decode("latin-1")
    return headers


async def via_httpx(client: Any, scope: Scope, body: bytes, send: Send) -> None:
    request = client.build_request("POST", TARGET, content=body, headers=upstream_headers(scope))
    response = await client.send(request, stream=True)
    try:
        content_type = response.headers.get("content-type", "application/json").encode()
        if content_type.startswith(b"text/event-stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache")],
                }
            )
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UPSTREAM_ERRORS as exc:
                raise StreamBroken(_describe(exc)) from exc
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            data = await response.aread()
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (b"content-type", content_type),
                        (b"content-length", str(len(data)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data, "more_body": False})
    finally:
        await response.aclose()


async def via_aiohttp(
    session: aiohttp.ClientSession, scope: Scope, body: bytes, send: Send
) -> None:
    async with session.post(TARGET, data=body, headers=upstream_headers(scope)) as response:
        content_type = response.headers.get("content-type", "application/json").encode()
        if content_type.startswith(b"text/event-stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache")],
                }
            )
            try:
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UPSTREAM_ERRORS as exc:
                raise StreamBroken(_describe(exc)) from exc
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            data = await response.read()
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [
                        (b"content-type", content_type),
                        (b"content-length", str(len(data)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data, "more_body": False})


def native_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    # content-type and accept are set on the Rust side
    return [(name, value) for name, value in scope["headers"] if name in FORWARD_HEADERS]


async def via_native(client: Any, scope: Scope, body: bytes, send: Send) -> None:
    answer = await client.post(body, native_headers(scope))
    content_type = answer.content_type.encode()
    chunks = answer.chunks
    if chunks is None:
        data = answer.body
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data, "more_body": False})
        return
    try:
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache")],
            }
        )
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UPSTREAM_ERRORS as exc:
            raise StreamBroken(_describe(exc)) from exc
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        answer.close()


async def from_memory(body: bytes, send: Send) -> None:
    from fast_upstream import EVENTS, NON_STREAM_BODY

    if b'"stream":true' in body or b'"stream": true' in body:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        data = b"".join(EVENTS)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    length = str(len(NON_STREAM_BODY)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", length)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": NON_STREAM_BODY, "more_body": False})


async def forward(scope: Scope, body: bytes, send: Send) -> None:
    client = STATE["client"]
    if client is None:
        await from_memory(body, send)
        return
    try:
        if isinstance(client, aiohttp.ClientSession):
            await via_aiohttp(client, scope, body, send)
        elif ENGINE == "native":
            await via_native(client, scope, body, send)
        else:
            await via_httpx(client, scope, body, send)
    except UPSTREAM_ERRORS as exc:
        # Only before the response started: StreamBroken (mid-stream) is not caught here.
        message = f"upstream error: {type(exc).__name__}: {exc}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 502,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(message)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": message, "more_body": False})


async def until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    if not WATCH_DISCONNECT:
        await forward(scope, body, send)
        return
    # Granian's send() keeps succeeding after the client has gone, so the only signal is an
    # http.disconnect from receive(): race the forwarding against it and cancel the loser.
    work = asyncio.ensure_future(forward(scope, body, send))
    watch = asyncio.ensure_future(until_disconnect(receive))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()
            STATE["cancelled"] = STATE.get("cancelled", 0) + 1
    with contextlib.suppress(asyncio.CancelledError):
        await work
