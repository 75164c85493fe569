"""The native backend's upstream engine, and the one place that chooses the engine.

``NativeUpstream`` is an ``UpstreamClient`` (see ``ferrule.upstream``) whose HTTP runs in the
extension: hyper's pooled HTTP/1.1 client, TLS by rustls with the system's trust store, on a
tokio thread of its own (``rust/src/upstream_engine.rs``). Chosen by measurement: in the byte
pipe it took 119 against 278 us of CPU per request and 156 against 440 us per stream
(benches/RESULTS.md, "Upstream engine and server interface (issue 12)").

The bridge: the engine writes an eventfd when completions are waiting; the event loop watches it
(``add_reader``) and ``drain``s all of them in one call, so one wake-up serves many requests.

- ``send`` waits for the head. A body that is not an event stream comes whole with it (read on
  the tokio side), so a non-streamed request costs one wake-up.
- A stream's bytes wait in the engine, in a buffer of at most ``STREAM_BUFFER`` bytes, until the
  response's ``aiter_raw`` or ``pump`` takes them: everything read since the last take comes as
  one piece, and a client that reads slowly stops the engine reading the upstream (no unbounded
  memory). ``pump`` (the pipeline's relay) takes and relays a piece from the wake-up itself
  (``_drain``): no task switch per piece; only a send that has to wait goes back to the task.
- ``aclose`` on a response not read to the end cancels the request: the engine drops the
  connection, which is what tells the upstream the caller went away.

Failures keep the aiohttp engine's words and codes (``describe_cause``) and its timeouts: pool
slot (``pool_timeout``), connect (``connect_timeout``), the head, every read (``read_timeout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from typing import Any

from . import backend, threads
from .config import Config, ConfigError
from .errors import ProxyError
from .upstream import (
    Step,
    Upstream,
    UpstreamClient,
    UpstreamError,
    UpstreamTimeout,
    describe_cause,
    log_failure,
    pump_chunks,
    upstream_host,
)

__all__ = ["STREAM_BUFFER", "NativeResponse", "NativeUpstream", "open_upstream"]

# Completion kinds of UpstreamEngine.drain, and stream states of UpstreamEngine.take.
HEAD, READY, FAILED = 0, 1, 2
OPEN, DONE, TIMED_OUT, BROKEN = 0, 1, 2, 3

# Bytes of one stream the engine reads ahead of the client (then it stops reading that stream).
STREAM_BUFFER = 1024 * 1024


def open_upstream(cfg: Config) -> UpstreamClient:
    """The upstream client ``cfg.upstream_engine`` asks for: ``native`` (needs the native
    backend), ``aiohttp``, or ``auto``: native with the native backend, else aiohttp."""
    choice = cfg.upstream_engine
    if choice == "aiohttp" or (choice == "auto" and backend.UpstreamEngine is None):
        return Upstream(cfg)
    if backend.UpstreamEngine is None:
        raise ConfigError(
            "upstream_engine = native needs the native backend (FERRULE_BACKEND is python)"
        )
    return NativeUpstream(cfg)


class _Headers(Mapping[str, str]):
    """The head's (name, value) pairs looked up by name, case-insensitively: a scan of ~10
    pairs is cheaper than building a dict for the two or three lookups a response gets."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: tuple[tuple[bytes, bytes], ...]) -> None:
        self._pairs = pairs

    def __getitem__(self, key: str) -> str:
        want = key.lower().encode("latin-1", "replace")  # hyper's names are lowercase
        for name, value in self._pairs:
            if name == want:
                # decoded as aiohttp decodes them (UTF-8, undecodable bytes kept as surrogates)
                return value.decode("utf-8", "surrogateescape")
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)


class NativeResponse:
    """``UpstreamResponse`` of the native engine."""

    __slots__ = (
        "_announced",
        "_body",
        "_failure",
        "_id",
        "_open",
        "_pairs",
        "_pump",
        "_up",
        "_waiter",
        "status_code",
    )

    def __init__(
        self,
        up: NativeUpstream,
        rid: int,
        status: int,
        pairs: tuple[tuple[bytes, bytes], ...],
        body: bytes | None,
    ) -> None:
        self._up = up
        self._id = rid
        self.status_code = status
        self._pairs = pairs
        self._body = body  # the whole body, or None: to be taken from the engine
        self._open = body is None  # the engine still holds (part of) the body
        # The engine announces a stream (READY) once after each take that found it open. The
        # announcement wakes ``_waiter``; one that comes while nobody waits is remembered here,
        # so after a take that got bytes the stream waits at once instead of taking again.
        self._waiter: asyncio.Future[None] | None = None
        self._announced = False
        self._pump: tuple[Step, asyncio.Future[Awaitable[None] | None]] | None = None
        self._failure: UpstreamError | None = None  # how a pumped stream broke, when its
        # last piece still had to be awaited
        if body is None:
            up._streams[rid] = self

    @property
    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return self._pairs

    @property
    def headers(self) -> Mapping[str, str]:
        return _Headers(self._pairs)

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive: everything the engine read since the last piece."""
        body = self._body
        if body is not None:
            self._body = b""  # read once, as a network body is
            if body:
                yield body
            return
        up, rid = self._up, self._id
        while self._open:
            engine = up._engine
            if engine is None:
                raise UpstreamError("the upstream client was closed")
            self._announced = False  # the take below gets what was announced
            data, state, reason = engine.take(rid)
            if state != OPEN:
                self._open = False
                up._streams.pop(rid, None)
            if data:
                yield data
            if state == DONE:
                return
            if state == TIMED_OUT:
                raise UpstreamTimeout("no bytes from the upstream within the idle timeout")
            if state == BROKEN:
                raise UpstreamError(reason or "the upstream connection broke")
            if not self._announced:  # else more came while the bytes above were relayed
                loop = up._loop
                assert loop is not None
                waiter = self._waiter = loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None

    async def pump(self, step: Step) -> None:
        """Give each piece of the body to ``step`` as it arrives, until the body ends or ``step``
        says stop (True); what ``step`` returns to await (a send that must wait) is awaited
        before the next piece. The pieces of an open stream are given from the engine's wake-up
        itself (``_pumped``, in ``NativeUpstream._drain``): no task switch per piece. Raises
        what ``aiter_raw`` raises."""
        if not self._open or self._body is not None:
            await pump_chunks(self.aiter_raw(), step)
            return
        loop = self._up._loop
        assert loop is not None
        while self._open:
            done: asyncio.Future[Awaitable[None] | None] = loop.create_future()
            self._pump = (step, done)
            self._pumped()  # what came already
            try:
                then = await done
            finally:
                self._pump = None
            if then is None:
                return
            await then
            if self._failure is not None:
                raise self._failure
            if step(b"") is True:
                return

    def _pumped(self) -> None:
        """Take what the engine holds and give it to the pump's step; settle the pump's future
        when it has to stop (None), to await something (that), or failed."""
        pump = self._pump
        if pump is None:
            self._announced = True
            return
        step, done = pump
        if done.done():
            return
        up, rid = self._up, self._id
        try:
            engine = up._engine
            if engine is None:
                raise UpstreamError("the upstream client was closed")
            self._announced = False
            data, state, reason = engine.take(rid)
            if state != OPEN:
                self._open = False
                up._streams.pop(rid, None)
            then = step(data) if data else None
            if state == TIMED_OUT:
                self._failure = UpstreamTimeout(
                    "no bytes from the upstream within the idle timeout"
                )
            elif state == BROKEN:
                self._failure = UpstreamError(reason or "the upstream connection broke")
            if then is True or (then is None and state == DONE):
                done.set_result(None)
            elif then is not None:
                done.set_result(then)  # and the failure after it
            elif self._failure is not None:
                raise self._failure
        except Exception as exc:  # to the request's task; never into the other streams' drain
            done.set_exception(exc)

    async def aread(self) -> bytes:
        parts = [chunk async for chunk in self.aiter_raw()]
        return b"".join(parts)

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._up._streams.pop(self._id, None)
            self._up.cancel(self._id)


class NativeUpstream:
    """The native engine (``UpstreamClient``): one per worker, started on first use inside the
    worker's running loop (a thread does not survive Granian's fork)."""

    def __init__(self, cfg: Config) -> None:
        self.base = cfg.upstream_url.rstrip("/")
        self.host = upstream_host(self.base)
        self._cfg = cfg
        self._engine: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next = 0
        self._kick_due = False  # a ``_kick`` is scheduled on the loop
        self._heads: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, NativeResponse] = {}  # open streams, by request id
        self._closed = False
        self._logged: dict[str, float] = {}  # cause code -> when it was last logged

    @property
    def engine(self) -> Any:
        engine = self._engine
        if engine is None:
            engine = self._start()
        return engine

    def _start(self) -> Any:
        if self._closed:
            raise ProxyError(503, "Ferrule is shutting down", type="overloaded_error")
        factory = backend.UpstreamEngine
        assert factory is not None  # open_upstream chose this engine only with the backend
        cfg = self._cfg
        try:
            engine = factory(
                self.base,
                pool_size=cfg.pool_size,
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.read_timeout,
                pool_timeout=cfg.pool_timeout,
                whole_limit=cfg.max_response_bytes,
                stream_buffer=STREAM_BUFFER,
            )
        except (OSError, ValueError) as exc:  # no trust store, a URL hyper cannot use
            message = f"cannot connect to the upstream {self.host}: {exc}"
            log_failure(self._logged, "upstream_connect_error", message)
            raise ProxyError(502, message, code="upstream_connect_error") from None
        loop = self._loop = asyncio.get_running_loop()
        loop.add_reader(engine.fileno(), self._drain)
        self._engine = engine
        threads.batch_helpers()  # the engine's thread too yields to the loop
        return engine

    @property
    def in_use(self) -> int:
        """Connections currently lent out by the pool (for the metrics gauge)."""
        engine = self._engine
        return 0 if engine is None else int(engine.in_use)

    def _drain(self) -> None:
        heads, streams = self._heads, self._streams
        for rid, kind, status, a, b in self._engine.drain():
            if kind == READY:
                stream = streams.get(rid)
                if stream is not None:
                    waiter = stream._waiter
                    if waiter is not None:
                        if not waiter.done():
                            waiter.set_result(None)
                    else:
                        stream._pumped()  # or remembers the announcement
                continue
            fut = heads.pop(rid, None)
            if fut is None or fut.done():
                if kind == HEAD and b is None:
                    self._engine.cancel(rid)  # a stream nobody waits for any more
                continue
            if kind == HEAD:
                fut.set_result(NativeResponse(self, rid, status, a, b))
            else:
                fut.set_result((a, b))  # FAILED: (cause, reason)

    def _kick(self) -> None:
        self._kick_due = False
        if self._engine is not None:
            self._engine.kick()

    def cancel(self, rid: int) -> None:
        if self._engine is not None:
            self._engine.cancel(rid)

    async def send(
        self,
        path: str,
        body: bytes,
        headers: list[tuple[str, str]],
        timeout: float | None = None,
    ) -> NativeResponse:
        """Start a request and return once the status and headers arrived (see ``Upstream``'s
        ``send``: the same errors, the same duty to ``aclose`` the response). The engine keeps
        ``timeout`` itself: no timer task on the event loop."""
        engine = self.engine
        loop = self._loop
        assert loop is not None
        self._next += 1
        rid = self._next
        fut: asyncio.Future[Any] = loop.create_future()
        try:
            engine.send(rid, path, body, headers, timeout)
        except ValueError as exc:  # a header or path hyper refuses to send
            raise ProxyError(
                400, f"the request cannot be sent upstream: {exc}", type="invalid_request_error"
            ) from None
        except OSError:  # closed meanwhile (shutdown)
            raise ProxyError(503, "Ferrule is shutting down", type="overloaded_error") from None
        self._heads[rid] = fut
        if not self._kick_due:  # the engine gets this turn's requests in one wake-up
            self._kick_due = True
            loop.call_soon(self._kick)
        try:
            got = await fut
        except asyncio.CancelledError:
            self._heads.pop(rid, None)
            self._streams.pop(rid, None)  # its head may have come in the same turn
            engine.cancel(rid)
            raise
        if isinstance(got, NativeResponse):
            return got
        cause, reason = got
        if cause == "first_byte":
            raise asyncio.TimeoutError
        status, message, code = describe_cause(cause, reason, self.host, self._cfg.connect_timeout)
        log_failure(self._logged, code, message)
        raise ProxyError(
            status, message, type="timeout_error" if status == 504 else "api_error", code=code
        )

    async def aclose(self) -> None:
        """Stop the engine: requests still waiting fail, streams still open end broken."""
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(engine.fileno())
        engine.close()
        for fut in self._heads.values():
            if not fut.done():
                fut.set_result(("connection", "Ferrule is shutting down"))
        self._heads.clear()
        for stream in list(self._streams.values()):
            waiter = stream._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # its next take finds the engine gone
            stream._pumped()  # the same, for a pumped one
