"""The one module that owns the HTTP client to Anthropic, so the engine can be swapped.

Engine: aiohttp, chosen by measurement (benches/RESULTS.md, "Upstream HTTP client"): on one
core, a Granian byte pipe served 4,106 req/s and 2,572 streams/s through aiohttp against 1,417
and 1,228 through httpx's API on the aiohttp transport and 309 and 184 through plain httpx,
at 0.22 ms of CPU per request against 0.70 and 3.2 ms. httpx's client layer alone costs more
than the whole aiohttp call, so the design's "httpx API" is kept only as this module's small
surface (``status_code``, ``headers``, ``aiter_raw``, ``aread``, ``aclose``), not as a dependency.

One session per worker, an explicit pool limit, HTTP/1.1 only (an abandoned HTTP/2 stream is
never cancelled upstream; closing an HTTP/1.1 connection is), no cookie jar (a shared client
must never replay one caller's cookies to another), redirects never followed, no decompression,
and every response closed by the caller (``aclose``) on every path, which closes the connection
when its body was not read to the end."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDictProxy

from .config import Config
from .errors import ProxyError

__all__ = [
    "Step",
    "Upstream",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "describe_cause",
    "describe_failure",
    "pump_chunks",
]

log = logging.getLogger("ferrule.upstream")

# A failure cause is logged at most once per this many seconds (an outage is one line a minute
# per worker and cause, not one per request).
LOG_EVERY_S = 60.0


_PIECE_BYTES = 256 * 1024


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for at in range(0, len(body), _PIECE_BYTES):
        yield bytes(view[at : at + _PIECE_BYTES])


class UpstreamError(Exception):
    """The upstream connection failed while a response body was being read."""


class UpstreamTimeout(UpstreamError):
    """The upstream went silent for longer than the idle (read) timeout."""


# What a stream's relay does with each piece of the body (``UpstreamResponse.pump``): True to
# stop reading, an awaitable to await before the next piece (a send that has to wait), or None.
# After an awaitable the step is called once with no bytes, to ask whether to stop.
Step = Callable[[bytes], "Literal[True] | Awaitable[None] | None"]


async def pump_chunks(chunks: AsyncIterator[bytes], step: Step) -> None:
    """``UpstreamResponse.pump`` over ``aiter_raw``: each piece to ``step`` in the task."""
    async for chunk in chunks:
        then = step(chunk)
        if then is True:
            return
        if then is not None:
            await then
            if step(b"") is True:
                return


class UpstreamResponse(Protocol):
    """A started upstream response: status and headers read, body not yet (both engines)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive lookup of the response headers (the first of repeated ones)."""
        ...

    @property
    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]: ...
    def aiter_raw(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; ``UpstreamTimeout`` or ``UpstreamError`` if it breaks."""
        ...

    async def pump(self, step: Step) -> None:
        """Give each piece of the body to ``step`` (see ``Step``) until it ends or ``step``
        says stop; raises what ``aiter_raw`` raises."""
        ...

    async def aread(self) -> bytes: ...
    async def aclose(self) -> None:
        """Release the connection; one whose body was not read to the end is closed (the
        upstream sees the caller go)."""
        ...


class UpstreamClient(Protocol):
    """The HTTP client to Anthropic: ``Upstream`` (aiohttp) or ``upstream_native.NativeUpstream``
    (hyper in the extension); ``upstream_native.open_upstream`` chooses."""

    host: str  # host[:port] of the upstream, for messages (never its credentials)

    @property
    def in_use(self) -> int: ...
    async def send(
        self,
        path: str,
        body: bytes,
        headers: list[tuple[str, str]],
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Start a request; return once its status and headers arrived (body not read).
        ``timeout``: seconds for those to arrive, else ``asyncio.TimeoutError``."""
        ...

    async def aclose(self) -> None: ...


class AiohttpResponse:
    """``UpstreamResponse`` of the aiohttp engine."""

    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status_code(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._resp.headers

    @property
    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return self._resp.raw_headers

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (whatever the network delivers, no re-chunking)."""
        content = self._resp.content
        while True:
            try:
                chunk = await content.readany()
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise UpstreamTimeout("no bytes from the upstream within the idle timeout") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamError(type(exc).__name__) from exc
            if not chunk:
                return
            yield chunk

    async def pump(self, step: Step) -> None:
        await pump_chunks(self.aiter_raw(), step)

    async def aread(self) -> bytes:
        parts = [chunk async for chunk in self.aiter_raw()]
        return b"".join(parts)

    async def aclose(self) -> None:
        # release() returns a fully read connection to the pool and closes one whose body was
        # not read to the end, which is what tells the upstream the caller went away.
        self._resp.release()


def describe_cause(
    cause: str, reason: str, host: str, connect_timeout: float
) -> tuple[int, str, str]:
    """(status, message, code) for a failure before the response headers arrived, from its
    cause (``dns``, ``refused``, ``connect_timeout``, ``timeout``, ``tls_cert``, ``tls``,
    ``connect``, ``disconnected``, ``connection``) and the OS's or library's reason: words a user
    can act on, and the upstream host. Both engines name their failures this way."""
    connect = f"cannot connect to the upstream {host}: "
    reason = reason.strip()[:200] or "unknown reason"
    if cause == "connect_timeout":
        return 504, connect + f"timed out after {connect_timeout:g} s", "upstream_connect_timeout"
    if cause == "timeout":
        return 504, f"the upstream {host} did not answer in time", "upstream_timeout"
    if cause == "dns":
        return 502, connect + f"DNS resolution failed ({reason})", "upstream_dns_error"
    if cause == "tls_cert":
        return 502, connect + f"TLS certificate not accepted ({reason})", "upstream_tls_error"
    if cause == "tls":
        return 502, connect + f"TLS handshake failed ({reason})", "upstream_tls_error"
    if cause == "refused":
        return 502, connect + "connection refused", "upstream_connection_refused"
    if cause == "connect":
        return 502, connect + reason, "upstream_connect_error"
    if cause == "disconnected":
        message = f"the upstream {host} closed the connection before answering"
        return 502, message, "upstream_connection_error"
    message = f"the connection to the upstream {host} failed ({reason})"
    return 502, message, "upstream_connection_error"


def describe_failure(exc: BaseException, host: str, connect_timeout: float) -> tuple[int, str, str]:
    """(status, message, code) for an aiohttp exception raised before the response headers
    arrived (see ``describe_cause``). Never a key: these come from the socket layer, which sees
    no header."""
    return describe_cause(*_cause(exc), host, connect_timeout)


def _cause(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect_timeout", ""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout", ""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns", _reason(exc.os_error)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "tls_cert", _reason(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return "tls", _reason(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        if isinstance(err, ssl.SSLError):
            return "tls", _reason(err)
        if isinstance(err, ConnectionRefusedError):
            return "refused", ""
        if isinstance(err, socket.gaierror):
            return "dns", _reason(err)
        if isinstance(err, TimeoutError):
            return "connect_timeout", ""
        return "connect", _reason(err)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected", ""
    return "connection", _reason(exc)


def log_failure(logged: dict[str, float], code: str, message: str) -> None:
    """A warning per cause, at most once per ``LOG_EVERY_S`` (the answer carries it too);
    ``logged``: cause code -> when it was last logged, one per client."""
    now = time.monotonic()
    last = logged.get(code)
    if last is None or now - last >= LOG_EVERY_S:
        logged[code] = now  # a fixed set of codes: the dict stays small
        log.warning("%s (logged at most every %g s)", message, LOG_EVERY_S)


def upstream_host(base: str) -> str:
    """host[:port] of an upstream URL, for messages: a URL's user:password part is never shown."""
    url = urlsplit(base)
    return (url.hostname or "?") + (f":{url.port}" if url.port else "")


def _reason(err: BaseException | None) -> str:
    """The OS's or library's reason without the repetition aiohttp adds around it."""
    if err is None:
        return "unknown reason"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    if isinstance(err, ssl.SSLError) and err.reason:
        return str(err.reason)
    text = str(err).strip()
    return text[:200] if text else type(err).__name__


class Upstream:
    """The aiohttp engine (``UpstreamClient``); the pure-Python backend's, and the twin of the
    native one."""

    def __init__(self, cfg: Config) -> None:
        self.base = cfg.upstream_url.rstrip("/")
        self.host = upstream_host(self.base)
        self._logged: dict[str, float] = {}  # cause code -> when it was last logged
        self._cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        # connect covers waiting for a free pool slot plus connecting: the pool timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=cfg.pool_timeout + cfg.connect_timeout,
            sock_connect=cfg.connect_timeout,
            sock_read=cfg.read_timeout,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created lazily inside the running loop: aiohttp binds to the loop it starts on.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._cfg.pool_size, limit_per_host=0, keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=self._timeout,
            )
        return self._session

    @property
    def in_use(self) -> int:
        """Connections currently lent out by the pool (for the metrics gauge)."""
        if self._session is None:
            return 0
        connector = self._session.connector
        acquired = getattr(connector, "_acquired", None)
        return len(acquired) if acquired is not None else 0

    async def send(
        self,
        path: str,
        body: bytes,
        headers: list[tuple[str, str]],
        timeout: float | None = None,
    ) -> AiohttpResponse:
        """Start a request and return once the status and headers arrived (body not read);
        ``asyncio.TimeoutError`` if they did not within ``timeout`` seconds.

        Connection problems become ProxyError 502 (could not connect or the connection broke)
        or 504 (timed out). The caller must ``aclose()`` the response."""
        if timeout is not None:
            return await asyncio.wait_for(self._send(path, body, headers), timeout)
        return await self._send(path, body, headers)

    async def _send(
        self, path: str, body: bytes, headers: list[tuple[str, str]]
    ) -> AiohttpResponse:
        data: Any = body
        if len(body) >= _PIECE_BYTES * 4:
            # A large body goes out in pieces: aiohttp would otherwise join it to the request
            # head in one copy on the event loop (~65 ms at 30 MiB). Its length is given, so
            # the upstream still gets a Content-Length body, not a chunked one.
            data = _pieces(body)
            headers = [*headers, ("content-length", str(len(body)))]
        try:
            resp = await self.session.post(
                self.base + path,
                data=data,
                headers=headers,
                allow_redirects=False,
                compress=False,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            status, message, code = describe_failure(exc, self.host, self._cfg.connect_timeout)
            self._log_once(code, message)
            raise ProxyError(
                status,
                message,
                type="timeout_error" if status == 504 else "api_error",
                code=code,
            ) from None
        return AiohttpResponse(resp)

    def _log_once(self, code: str, message: str) -> None:
        log_failure(self._logged, code, message)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
