"""Small ASGI helpers shared by the routes: typed aliases, header access, bounded body reads and
plain responses. Kept framework-free: the proxy's hot path is a handful of awaits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

__all__ = [
    "BodyNow",
    "BodyTooLarge",
    "ClientGone",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "body_now",
    "header",
    "read_body",
    "run_now",
    "send_bytes",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
# Sends a middle piece of a started response's body (more to come) as far as it goes at once;
# returns the rest to await, or None (``body_now``).
BodyNow = Callable[[bytes], Awaitable[None] | None]


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class ClientGone(Exception):
    """The client disconnected before the request body was read."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` lower-case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """Read the whole request body, refusing more than ``limit`` bytes.

    A declared Content-Length over the limit is refused before a byte of the body is read."""
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge
        except ValueError:
            pass  # the server already rejects malformed framing; count what arrives instead
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def body_now(send: Send) -> BodyNow:
    """``BodyNow`` over ``send``. The app gives the relay one over the server's own ``send``:
    a middle piece needs none of the app's bookkeeping of the start and the end."""

    def now(body: bytes) -> Awaitable[None] | None:
        return run_now(send({"type": "http.response.body", "body": body, "more_body": True}))

    return now


def run_now(aw: Awaitable[None]) -> Awaitable[None] | None:
    """Run ``aw`` (a ``send``) as far as it goes without waiting: None when it finished, else
    the rest of it, to be awaited in the request's task. Granian's ``send`` of a body does its
    work when called and waits only when the connection's channel is full; this lets a stream's
    events go out from a callback, without a task switch per event (``upstream_native``)."""
    it = aw.__await__()
    try:
        waiting = next(it)  # Granian's awaitables are iterators without send()
    except StopIteration:
        return None
    return _rest(it, waiting)


async def _rest(it: Iterator[Any], waiting: Any) -> None:
    """Resume a half-run awaitable as its task would: each time what it waits for is done."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            if waiting is None:  # a bare yield: asyncio's "let the others run"
                await asyncio.sleep(0)
            else:
                woken = loop.create_future()

                def wake(_: Any, woken: asyncio.Future[None] = woken) -> None:
                    if not woken.done():
                        woken.set_result(None)

                waiting.add_done_callback(wake)
                await woken
            try:
                waiting = next(it)
            except StopIteration:
                return
    except BaseException:
        close = getattr(it, "close", None)
        if close is not None:
            close()
        raise
