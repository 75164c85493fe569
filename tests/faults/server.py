"""The fault-injecting fake Anthropic upstream: a raw-socket asyncio HTTP/1.1 server.

No HTTP framework on purpose: a framework would refuse to send a reset, a half-written chunked body
or a 64 MiB line without newline, which are exactly the faults the proxy must survive. The server
reads one request, takes the next queued :class:`~faults.scenarios.Scenario` (or the default one),
lets it write whatever it wants through an :class:`Exchange`, and records what happened in a
:class:`Record`: when the connection was accepted, what was asked, when the first byte left, when
the *client* went away (EOF or RST, which is how a test proves the proxy cancels its upstream call),
and how many bytes were sent.

Two ways to run it:

* in a background thread with its own event loop: :func:`fault_upstream` (a context manager);
* as a process: ``python -m tests.faults --port P`` (see ``__main__``), driven over HTTP through
  ``/_faults/*`` (:class:`faults.remote.RemoteFaultUpstream`), for multi-worker proxies.

Every scenario runs under a time budget (its own bound, capped by ``hard_limit_s``) so no test can
hang on the fake; stopping it cancels every connection and joins the thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import http
import itertools
import json
import socket
import struct
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from . import wire
from .aio import run_within, wait_future
from .scenarios import Scenario, ScenarioLike, ok, scenario_from_json, to_scenario

__all__ = [
    "ClientGone",
    "Exchange",
    "FaultServer",
    "FaultState",
    "FaultUpstream",
    "Record",
    "RecordWaits",
    "Request",
    "fault_upstream",
]

T = TypeVar("T")
Framing = Literal["length", "chunked", "close"]

MAX_HEAD = 64 * 1024
MAX_PIPELINED = 1024 * 1024
CONTROL_PREFIX = "/_faults/"
_REASONS = {529: "Overloaded"}


class ClientGone(Exception):
    """The client closed or reset the connection; the scenario stops writing."""


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One parsed request. Header names are lower-cased; repeated headers are joined by ", "."""

    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or ``None`` when it is not JSON (a fault test may send junk)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def json_dict(self) -> dict[str, Any]:
        data = self.json()
        return data if isinstance(data, dict) else {}

    @property
    def wants_close(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "close" in tokens or (self.version == "HTTP/1.0" and "keep-alive" not in tokens)


@dataclass
class Record:
    """What the fake saw and did for one request (times are ``time.monotonic()``, which on Linux
    is one clock for every process, so a remote record compares with local timestamps).

    ``outcome`` is ``complete`` (response fully framed), ``closed`` (the fake closed the connection
    before or instead of finishing, e.g. a truncated stream), ``reset`` (the fake sent RST),
    ``client_gone`` (the client closed or reset first), ``timeout`` (the fake's own time budget
    ran out) or ``error`` (a bug in a scenario; ``error`` holds the traceback).
    """

    attempt: int
    scenario: str
    spec: dict[str, Any]
    conn_id: int
    request_on_conn: int
    accepted_at: float
    request_at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    first_byte_at: float | None = None
    client_closed_at: float | None = None
    client_close: str | None = None  # "eof" | "reset"
    bytes_sent: int = 0
    finished_at: float | None = None
    outcome: str | None = None
    error: str | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def ttfb(self) -> float | None:
        """Seconds from the request being read to the first response byte."""
        return None if self.first_byte_at is None else self.first_byte_at - self.request_at

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["body"] = base64.b64encode(self.body).decode()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        data = dict(data)
        data["body"] = base64.b64decode(data["body"])
        return cls(**data)


def _wait_until(
    cond: threading.Condition, predicate: Callable[[], T], timeout: float, poll: float
) -> T:
    """Evaluate ``predicate`` until it is truthy; wake on every record change (and every ``poll``)."""
    deadline = time.monotonic() + timeout
    with cond:
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            cond.wait(min(remaining, poll))


class FaultState:
    """Queue, default scenario, records and attempt counter, shared by the test thread and the
    server's loop thread (hence the lock: pushes and reads come from the test thread)."""

    def __init__(self, default: Scenario) -> None:
        self.cond = threading.Condition()
        self.queue: deque[Scenario] = deque()
        self.default = default
        self._records: list[Record] = []
        self.attempts = 0

    def push(self, scenarios: Iterable[Scenario]) -> int:
        with self.cond:
            self.queue.extend(scenarios)
            self.cond.notify_all()
            return len(self.queue)

    def set_default(self, scenario: Scenario) -> None:
        with self.cond:
            self.default = scenario

    def reset(self) -> None:
        """Empty the queue, forget records and zero the counter; the default scenario stays."""
        with self.cond:
            self.queue.clear()
            self._records.clear()
            self.attempts = 0
            self.cond.notify_all()

    def begin(self, request: Request, conn: _Conn, request_at: float) -> tuple[Scenario, Record]:
        with self.cond:
            scenario = self.queue.popleft() if self.queue else self.default
            self.attempts += 1
            record = Record(
                attempt=self.attempts,
                scenario=scenario.kind,
                spec=scenario.to_json(),
                conn_id=conn.conn_id,
                request_on_conn=conn.requests,
                accepted_at=conn.accepted_at,
                request_at=request_at,
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                body=request.body,
            )
            self._records.append(record)
            self.cond.notify_all()
            return scenario, record

    def update(self, record: Record, **changes: Any) -> None:
        with self.cond:
            for key, value in changes.items():
                setattr(record, key, value)
            self.cond.notify_all()

    def add_bytes(self, record: Record, count: int, now: float) -> None:
        with self.cond:
            if record.first_byte_at is None:
                record.first_byte_at = now
            record.bytes_sent += count
            self.cond.notify_all()

    def client_closed(self, record: Record, kind: str, now: float) -> None:
        with self.cond:
            if record.client_closed_at is None:
                record.client_closed_at = now
                record.client_close = kind
                self.cond.notify_all()

    def records(self) -> list[Record]:
        """Copies, so the caller never sees a record change under its feet."""
        with self.cond:
            return [copy.copy(r) for r in self._records]

    def queued(self) -> int:
        with self.cond:
            return len(self.queue)

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        return _wait_until(self.cond, predicate, timeout, poll=0.05)


class RecordWaits:
    """``wait_record`` on top of ``records`` and ``wait_for`` (shared by the local and the remote
    fake, so a test reads the same either way)."""

    @property
    def records(self) -> list[Record]:
        raise NotImplementedError

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        raise NotImplementedError

    def wait_record(
        self,
        index: int = -1,
        until: Callable[[Record], object] = lambda r: r.finished_at is not None,
        timeout: float = 5.0,
    ) -> Record:
        """Record ``index`` once ``until(record)`` holds (default: the fake finished with it).
        E.g. ``fu.wait_record(0, lambda r: r.client_closed_at is not None)``."""

        def ready() -> Record | None:
            records = self.records
            if not records or not -len(records) <= index < len(records):
                return None
            record = records[index]
            return record if until(record) else None

        record = self.wait_for(ready, timeout)
        assert record is not None  # wait_for only returns a truthy value
        return record


# -- one connection -----------------------------------------------------------------------------


class _Conn:
    """A client connection: a read buffer shared by request parsing and the disconnect watcher."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn_id = conn_id
        self.accepted_at = time.monotonic()
        self.buf = bytearray()
        self.requests = 0
        self.dead = False  # reset, aborted or seen gone: never reuse
        # Pause writes until the kernel took every byte, so "sent" means "handed to the kernel"
        # and an RST right after a flush cannot discard bytes still queued in asyncio.
        writer.transport.set_write_buffer_limits(high=0)

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        if not data:
            return False
        self.buf += data
        return True

    async def read_request(self, max_body: int) -> Request | None:
        """The next request, or ``None`` on a clean EOF between requests."""
        while True:
            while self.buf[:2] == b"\r\n":  # stray CRLF between keep-alive requests
                del self.buf[:2]
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > MAX_HEAD:
                raise BadRequest(431, "request head too large")
            if not await self._fill():
                if self.buf:
                    raise BadRequest(400, "connection closed in the request head")
                return None
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        lines = head.split("\r\n")
        try:
            method, path, version = lines[0].split(" ")
        except ValueError:
            raise BadRequest(400, f"bad request line {lines[0]!r}") from None
        if not version.startswith("HTTP/1."):
            raise BadRequest(505, "HTTP/1.x only")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest(400, f"bad header line {line!r}")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if headers.get("expect", "").lower() == "100-continue":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(max_body)
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise BadRequest(400, "bad content-length") from None
            if length < 0:
                raise BadRequest(400, "bad content-length")
            if length > max_body:
                raise BadRequest(413, "body too large for the fake")
            body = await self._read_exact(length)
        self.requests += 1
        return Request(method.upper(), path, version, headers, body)

    async def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise BadRequest(400, "connection closed in the request body")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def _read_line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEAD or not await self._fill():
                raise BadRequest(400, "bad chunked body")
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    async def _read_chunked(self, max_body: int) -> bytes:
        body = bytearray()
        while True:
            size_text = (await self._read_line()).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadRequest(400, "bad chunk size") from None
            if size == 0:
                while await self._read_line():  # trailers up to the empty line
                    pass
                return bytes(body)
            if len(body) + size > max_body:
                raise BadRequest(413, "body too large for the fake")
            body += await self._read_exact(size)
            await self._read_exact(2)

    async def watch(self, exchange: Exchange) -> None:
        """Notice the client going away while a response is being produced.

        Bytes that arrive meanwhile are a pipelined next request and stay in the buffer.
        """
        while len(self.buf) < MAX_PIPELINED:
            try:
                more = await self._fill()
            except (ConnectionError, OSError):
                exchange.client_went("reset")
                return
            if not more:
                exchange.client_went("eof")
                return

    def abort(self, rst: bool) -> None:
        """Close now; with ``rst`` the kernel sends RST (SO_LINGER 0) instead of FIN."""
        self.dead = True
        if rst:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class Exchange:
    """What a scenario uses to answer one request: framed or raw writes, client-aware sleeps, RST.

    Every write and sleep raises :class:`ClientGone` once the client has closed or reset, so a
    scenario stops as soon as the proxy cancels — and the record keeps the moment it happened.
    A half-close (FIN right after the request) counts as going away too: HTTP clients such as
    httpx never half-close, they close the socket when they abandon a response.
    """

    def __init__(self, conn: _Conn, request: Request, record: Record, state: FaultState) -> None:
        self.conn = conn
        self.request = request
        self.record = record
        self.state = state
        self.framing: Framing | None = None
        self.ended = False
        self.reset_sent = False
        self.must_close = request.wants_close
        self._gone: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.body_json: dict[str, Any] = request.json_dict()  # {} when not a JSON object

    @property
    def wants_stream(self) -> bool:
        return self.body_json.get("stream") is True

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request after this one."""
        return self.ended and not self.must_close and not self.conn.dead and not self.is_gone

    def client_went(self, kind: str) -> None:
        self.state.client_closed(self.record, kind, time.monotonic())
        self.conn.dead = True
        if not self._gone.done():
            self._gone.set_result(kind)

    @property
    def is_gone(self) -> bool:
        """Whether the client closed or reset the connection during this exchange."""
        return self._gone.done()

    async def write(self, data: bytes) -> None:
        """Raw bytes on the socket, no framing; counted and timed in the record."""
        if self.is_gone:
            raise ClientGone
        if not data:
            return
        try:
            self.conn.writer.write(data)
            self.state.add_bytes(self.record, len(data), time.monotonic())
            await self.conn.writer.drain()
        except (ConnectionError, OSError) as exc:
            self.client_went("reset")
            raise ClientGone from exc
        if self.is_gone:
            raise ClientGone

    async def head(
        self,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        *,
        framing: Framing = "chunked",
        length: int | None = None,
        close: bool = False,
    ) -> None:
        """Status line and headers. ``framing``: ``length`` (content-length), ``chunked``, or
        ``close`` (no length: the body ends when the fake closes, HTTP/1.0 style)."""
        self.framing = framing
        self.must_close = self.must_close or close or framing == "close"
        try:
            reason = _REASONS.get(status) or http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {status} {reason}"]
        given = list(headers)
        names = {k.lower() for k, _ in given}
        if "request-id" not in names:
            lines.append(f"request-id: {wire.request_id()}")
        lines += [f"{k}: {v}" for k, v in given]
        if framing == "length":
            lines.append(f"content-length: {length or 0}")
        elif framing == "chunked":
            lines.append("transfer-encoding: chunked")
        lines.append("connection: close" if self.must_close else "connection: keep-alive")
        await self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def body(self, data: bytes) -> None:
        """Body bytes, framed as the head announced (one chunk per call when chunked)."""
        if not data:
            return
        if self.framing == "chunked":
            data = b"%x\r\n" % len(data) + data + b"\r\n"
        await self.write(data)

    async def end(self) -> None:
        """Finish the body properly (the terminating chunk when chunked)."""
        if self.framing == "chunked":
            await self.write(b"0\r\n\r\n")
        self.ended = True

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = wire.JSON_TYPE,
        headers: Iterable[tuple[str, str]] = (),
        *,
        close: bool = False,
    ) -> None:
        """A complete response with content-length."""
        await self.head(
            status,
            [("content-type", content_type), *headers],
            framing="length",
            length=len(body),
            close=close,
        )
        await self.write(body)
        self.ended = True

    async def sse_head(self, *, close: bool = False) -> None:
        await self.head(
            200,
            [("content-type", wire.SSE_TYPE), ("cache-control", "no-cache")],
            framing="chunked",
            close=close,
        )

    async def events(self, events: Iterable[bytes], interval: float = 0.0) -> None:
        """Send events, sleeping ``interval`` before each text delta (how tokens are paced)."""
        for raw in events:
            if interval > 0 and raw.startswith(b"event: content_block_delta"):
                await self.sleep(interval)
            await self.body(raw)

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake and raise :class:`ClientGone` the moment the client goes away."""
        if await wait_future(self._gone, seconds):
            raise ClientGone

    def reset(self) -> None:
        """Abort the connection with RST (SO_LINGER 0)."""
        self.reset_sent = True
        self.conn.abort(rst=True)

    def close(self) -> None:
        """Close with FIN, whatever state the body is in (a truncated stream)."""
        self.must_close = True
        self.conn.dead = True
        with contextlib.suppress(OSError):
            self.conn.writer.close()


# -- the server ---------------------------------------------------------------------------------


class FaultServer:
    """The asyncio server; one instance per loop. See :class:`FaultUpstream` for the thread."""

    def __init__(
        self,
        state: FaultState,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hard_limit_s: float = 60.0,
        idle_timeout_s: float = 30.0,
        max_body: int = 64 * 1024 * 1024,
    ) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.hard_limit_s = hard_limit_s
        self.idle_timeout_s = idle_timeout_s
        self.max_body = max_body
        self._conn_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> int:
        """Bind and listen; returns the port. Accepting is done by hand in a reader callback
        (not ``start_server``, not a ``sock_accept`` task) so that no accepted socket can be
        lost between the kernel and a task at shutdown: each is tracked the instant it exists."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(4096)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(listener.fileno(), self._on_readable)
        return self.port

    def _on_readable(self) -> None:
        assert self._listener is not None and self._loop is not None
        for _ in range(256):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and friends: pause accepting instead of spinning
                self._loop.remove_reader(self._listener.fileno())
                self._loop.call_later(0.05, self._resume_accepting)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks.add(sock)
            task = self._loop.create_task(self._serve_socket(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _resume_accepting(self) -> None:
        if self._listener is not None and self._listener.fileno() != -1 and self._loop:
            self._loop.add_reader(self._listener.fileno(), self._on_readable)

    async def stop(self) -> int:
        """Stop accepting, cancel every connection, close every socket, and return how many tasks
        were left behind (0 unless a handler ignores cancellation; the tests assert it)."""
        if self._listener is not None and self._loop is not None:
            if self._listener.fileno() != -1:
                self._loop.remove_reader(self._listener.fileno())
            self._listener.close()  # connections still in the backlog get a reset
        for _ in range(3):
            tasks = list(self._tasks)
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=5)
        for sock in list(self._socks):  # a task cancelled before it ever ran
            sock.close()
        self._socks.clear()
        await asyncio.sleep(0)  # let transports run connection_lost
        current = asyncio.current_task()
        return sum(1 for t in asyncio.all_tasks() if t is not current and not t.done())

    async def _serve_socket(self, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEAD)
        except (ConnectionError, OSError):
            self._socks.discard(sock)
            sock.close()
            return
        try:
            await self._serve(reader, writer)
        finally:
            self._socks.discard(sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(reader, writer, next(self._conn_ids))
        try:
            while not conn.dead:
                try:
                    request = await run_within(
                        conn.read_request(self.max_body), self.idle_timeout_s
                    )
                except BadRequest as exc:
                    await self._plain(conn, exc.status, str(exc), close=True)
                    break
                except (TimeoutError, ConnectionError, OSError):
                    break
                if request is None:
                    break
                if request.path.startswith(CONTROL_PREFIX):
                    keep = await self._control(conn, request)
                else:
                    keep = await self._exchange(conn, request, time.monotonic())
                if not keep:
                    break
        except asyncio.CancelledError:
            conn.abort(rst=False)
            raise
        finally:
            if not writer.transport.is_closing():
                writer.close()
            # Never linger on a peer that does not read: the fake's shutdown must be prompt.
            try:
                await run_within(writer.wait_closed(), 1.0)
            except (TimeoutError, ConnectionError, OSError):
                writer.transport.abort()

    async def _exchange(self, conn: _Conn, request: Request, request_at: float) -> bool:
        scenario, record = self.state.begin(request, conn, request_at)
        exchange = Exchange(conn, request, record, self.state)
        watcher = asyncio.get_running_loop().create_task(conn.watch(exchange))
        outcome, error = "complete", None
        budget = min(scenario.budget_s(), self.hard_limit_s)
        try:
            await run_within(scenario.run(exchange), budget)
        except ClientGone:
            outcome = "client_gone"
        except TimeoutError:
            outcome = "timeout"
            conn.abort(rst=False)
        except Exception:
            outcome, error = "error", traceback.format_exc()
            print(f"faults: scenario {scenario.kind} failed:\n{error}", file=sys.stderr)
            conn.abort(rst=False)
        finally:
            watcher.cancel()
            await asyncio.wait([watcher])  # unlike ``await watcher``, keeps our own cancellation
        if outcome == "complete" and not exchange.ended:
            outcome = "reset" if exchange.reset_sent else "closed"
        self.state.update(record, finished_at=time.monotonic(), outcome=outcome, error=error)
        if not exchange.reusable:
            if not conn.dead:
                exchange.close()
            return False
        return True

    async def _plain(self, conn: _Conn, status: int, message: str, *, close: bool) -> None:
        body = wire.error_body(wire.error_type_for(status), message)
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError, OSError):
            conn.writer.write(head.encode() + body)
            await run_within(conn.writer.drain(), 2.0)

    async def _control(self, conn: _Conn, request: Request) -> bool:
        """``/_faults/*``: the control endpoint (never recorded, never consumes a scenario)."""
        name = request.path[len(CONTROL_PREFIX) :].split("?")[0]
        status = 200
        payload: dict[str, Any] = {"ok": True}
        try:
            if name == "health" and request.method == "GET":
                payload = {"ok": True, "queued": self.state.queued()}
            elif name == "push" and request.method == "POST":
                specs = json.loads(request.body)
                items = specs if isinstance(specs, list) else [specs]
                payload = {"queued": self.state.push([scenario_from_json(s) for s in items])}
            elif name == "default" and request.method == "POST":
                self.state.set_default(scenario_from_json(json.loads(request.body)))
            elif name == "reset" and request.method == "POST":
                self.state.reset()
            elif name == "records" and request.method == "GET":
                payload = {
                    "attempts": self.state.attempts,
                    "queued": self.state.queued(),
                    "records": [r.to_json() for r in self.state.records()],
                }
            else:
                status, payload = 404, {"error": f"no control {request.method} {name!r}"}
        except (ValueError, TypeError, KeyError) as exc:
            status, payload = 400, {"error": f"{type(exc).__name__}: {exc}"}
        body = json.dumps(payload).encode()
        close = request.wants_close
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        try:
            conn.writer.write(head.encode() + body)
            await conn.writer.drain()
        except (ConnectionError, OSError):
            return False
        return not close


# -- in a thread --------------------------------------------------------------------------------


class FaultUpstream(RecordWaits):
    """The fake in a background thread with its own event loop, for in-process tests.

    Scenarios are consumed one per request, in push order; when the queue is empty the default
    scenario answers (``ok()`` unless set). ``/_faults/*`` control requests work here too.
    """

    def __init__(
        self,
        *,
        default: ScenarioLike | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        hard_limit_s: float = 60.0,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.state = FaultState(to_scenario(default) if default is not None else ok())
        self._server = FaultServer(
            self.state,
            host=host,
            port=port,
            hard_limit_s=hard_limit_s,
            idle_timeout_s=idle_timeout_s,
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.leftover_tasks = 0
        self.host = host
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultUpstream:
        self._thread = threading.Thread(target=self._run, name="fault-upstream", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError("fault upstream failed to start") from self._error
        if not self._ready.is_set():
            raise RuntimeError("fault upstream did not start in 10 s")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced to start() or stop()
            self._error = exc
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.port = await self._server.start()
        self._ready.set()
        await self._stop.wait()
        self.leftover_tasks = await self._server.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection, stop the loop and join the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("fault upstream thread did not stop")
        if self._error is not None:
            raise RuntimeError("fault upstream crashed") from self._error

    # -- test API --

    def push(self, *scenarios: ScenarioLike) -> None:
        """Queue scenarios, one per request in order (an int is ``status(int)``)."""
        self.state.push(to_scenario(s) for s in scenarios)

    def set_default(self, scenario: ScenarioLike) -> None:
        self.state.set_default(to_scenario(scenario))

    @property
    def records(self) -> list[Record]:
        """Snapshot copies of every request's record, in arrival order."""
        return self.state.records()

    @property
    def attempts(self) -> int:
        return self.state.attempts

    @property
    def queued(self) -> int:
        return self.state.queued()

    def reset(self) -> None:
        self.state.reset()

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every record change); return it or
        raise ``TimeoutError``. E.g. ``fu.wait_for(lambda: fu.records[0].client_closed_at)``."""
        return self.state.wait_for(predicate, timeout)


@contextlib.contextmanager
def fault_upstream(
    *,
    default: ScenarioLike | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    hard_limit_s: float = 60.0,
    idle_timeout_s: float = 30.0,
) -> Iterator[FaultUpstream]:
    """Run a :class:`FaultUpstream` for the duration of the block, then stop it cleanly."""
    upstream = FaultUpstream(
        default=default,
        host=host,
        port=port,
        hard_limit_s=hard_limit_s,
        idle_timeout_s=idle_timeout_s,
    ).start()
    try:
        yield upstream
    finally:
        upstream.stop()
