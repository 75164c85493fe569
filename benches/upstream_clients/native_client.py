"""The asyncio side of the native upstream client (issue 12 prototype, benchmark only).

``upstream_native.Engine`` (benches/upstream_native, hyper on a tokio thread) does the HTTP;
this module turns its completions into asyncio futures. The engine's eventfd is watched with
``loop.add_reader``: one wake-up of the loop delivers every completion since the last one (see
the Rust module doc), so under load many requests finish per loop iteration and a stream's
events arrive coalesced into one ``bytes`` per drain.

    client = NativeClient("http://127.0.0.1:8089/v1/messages", pool=1024)
    answer = await client.post(body, [(b"x-api-key", key)])
    if answer.chunks is None:       # not an event stream: read whole
        use(answer.status, answer.content_type, answer.body)
    else:
        try:
            async for chunk in answer.chunks: ...
        finally:
            answer.close()           # cancels the upstream request if the stream did not end
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import upstream_native

FULL, HEAD, DATA, ERROR = 0, 1, 2, 3


class UpstreamError(Exception):
    """The upstream request failed (connect, protocol, or a stream cut mid-way)."""


class _Stream:
    __slots__ = ("chunks", "ended", "error", "waiter")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.ended = False
        self.error: str | None = None
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)


class Answer:
    __slots__ = ("_client", "_id", "_stream", "body", "content_type", "status")

    def __init__(
        self, client: NativeClient, rid: int, status: int, ctype: str, body: bytes | None
    ) -> None:
        self._client = client
        self._id = rid
        self.status = status
        self.content_type = ctype
        self.body = body
        self._stream: _Stream | None = None if body is not None else client._streams[rid]

    @property
    def chunks(self) -> AsyncIterator[bytes] | None:
        return None if self._stream is None else self._iter(self._stream)

    async def _iter(self, st: _Stream) -> AsyncIterator[bytes]:
        loop = self._client.loop
        while True:
            if st.chunks:
                # everything that arrived since the last drain, as one piece
                yield st.chunks.popleft() if len(st.chunks) == 1 else _join(st.chunks)
                continue
            if st.error is not None:
                raise UpstreamError(st.error)
            if st.ended:
                return
            st.waiter = loop.create_future()
            await st.waiter

    def close(self) -> None:
        st = self._client._streams.pop(self._id, None)
        if st is not None and not st.ended and st.error is None:
            self._client.engine.cancel(self._id)


def _join(chunks: deque[bytes]) -> bytes:
    data = b"".join(chunks)
    chunks.clear()
    return data


class NativeClient:
    def __init__(self, url: str, pool: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.engine = upstream_native.Engine(url, pool)
        self._next = 0
        self._waiters: dict[int, asyncio.Future[Answer]] = {}
        self._streams: dict[int, _Stream] = {}
        self.loop.add_reader(self.engine.fileno(), self._ready)

    def _ready(self) -> None:
        streams = self._streams
        waiters = self._waiters
        for rid, kind, n, text, data in self.engine.drain():
            if kind == DATA:
                st = streams.get(rid)
                if st is not None:
                    if data:
                        st.chunks.append(data)
                    if n:
                        st.ended = True
                    st.wake()
            elif kind in (FULL, HEAD):
                fut = waiters.pop(rid, None)
                if fut is None or fut.done():
                    if kind == HEAD:  # nobody waits for it any more
                        self.engine.cancel(rid)
                    continue
                if kind == HEAD:
                    streams[rid] = _Stream()
                fut.set_result(Answer(self, rid, n, text, data))
            else:  # ERROR
                fut = waiters.pop(rid, None)
                if fut is not None:
                    if not fut.done():
                        fut.set_exception(UpstreamError(text))
                    continue
                st = streams.get(rid)
                if st is not None:
                    st.error = text
                    st.wake()

    async def post(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> Answer:
        self._next += 1
        rid = self._next
        fut: asyncio.Future[Answer] = self.loop.create_future()
        self._waiters[rid] = fut
        self.engine.send(rid, body, headers)
        try:
            return await fut
        except asyncio.CancelledError:
            self._waiters.pop(rid, None)
            self.engine.cancel(rid)
            raise

    async def close(self) -> None:
        self.loop.remove_reader(self.engine.fileno())
        self.engine.close()
