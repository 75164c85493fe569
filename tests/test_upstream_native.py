"""The upstream engines' own surface, the native one (hyper in the extension) held to the aiohttp
one: the same bytes, headers, failures and their words, timeouts, cancellation, and the native
engine's bounded read-ahead. Every route runs on both engines elsewhere in the suite (the native
backend uses the native engine); this module pins the edges a route test rarely reaches."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from conftest import NATIVE
from ferrule.config import Config, ConfigError
from ferrule.config import load as load_config
from ferrule.errors import ProxyError
from ferrule.procs import free_port
from ferrule.routes.common import read_all
from ferrule.upstream import Upstream, UpstreamClient, UpstreamError, UpstreamTimeout
from ferrule.upstream_native import STREAM_BUFFER, NativeUpstream, open_upstream

pytestmark = pytest.mark.skipif(NATIVE is None, reason="the native extension is not built")

ENGINES = ["aiohttp", "native"]
HEADERS = [("x-api-key", "sk-ant-test-key-0123456789"), ("content-type", "application/json")]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def make(engine: str, url: str, **cfg: Any) -> UpstreamClient:
    c = Config(upstream_url=url, **cfg)
    return NativeUpstream(c) if engine == "native" else Upstream(c)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The head and body of one HTTP/1.1 request with a content-length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def answer(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def run(scenario: Callable[[str], Coroutine[Any, Any, Any]], handler: Handler) -> Any:
    """Run ``scenario(url)`` against a raw server answering each connection with ``handler``."""

    async def main() -> Any:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await asyncio.wait_for(scenario(f"http://127.0.0.1:{port}"), 30)
        finally:
            server.close()

    return asyncio.run(main())


# -- bytes and headers -------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_json_answer_its_status_and_every_header(engine: str) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        extra = b"request-id: req_1\r\nx-dup: a\r\nx-dup: b\r\nretry-after: 3\r\n"
        writer.write(answer(b'{"type":"error"}', "429 Too Many Requests", extra))
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> tuple[int, str | None, list[bytes], bytes]:
        up = make(engine, url + "/base/")
        try:
            resp = await up.send("/v1/messages", b'{"x":1}', HEADERS)
            body = await resp.aread()
            dups = [v for k, v in resp.raw_headers if k.lower() == b"x-dup"]
            await resp.aclose()
            h = resp.headers
            assert h["REQUEST-ID"] == "req_1" and "x-dup" in h and h.get("absent") is None
            assert h["x-dup"] == "a"  # the first of repeated ones, as aiohttp's .get gives
            return resp.status_code, h.get("Retry-After"), dups, body
        finally:
            await up.aclose()

    status, retry, dups, body = run(scenario, handler)
    assert (status, retry, dups, body) == (429, "3", [b"a", b"b"], b'{"type":"error"}')
    assert seen, "the server saw no request"
    head, sent = seen[0]
    assert head.startswith(b"POST /base/v1/messages HTTP/1.1\r\n")
    assert b"x-api-key: sk-ant-test-key-0123456789\r\n" in head.lower()
    assert sent == b'{"x":1}'


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stream_arrives_whole_in_order(engine: str) -> None:
    events = [b'event: e%d\ndata: {"n":%d}\n\n' % (i, i) for i in range(200)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        for i, ev in enumerate(events):
            writer.write(chunk(ev))
            if i % 17 == 0:
                await writer.drain()
                await asyncio.sleep(0.001)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> bytes:
        up = make(engine, url)
        try:
            resp = await up.send("/v1/messages", b"{}", HEADERS)
            got = b"".join([c async for c in resp.aiter_raw()])
            await resp.aclose()
            assert up.in_use == 0
            return got
        finally:
            await up.aclose()

    assert run(scenario, handler) == b"".join(events)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_large_request_body_goes_out_whole(engine: str) -> None:
    body = bytes(range(256)) * (40 * 1024)  # 10 MiB
    got: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append((await read_request(reader))[1])
        writer.write(answer(b"{}"))
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> int:
        up = make(engine, url)
        try:
            resp = await up.send("/v1/messages", body, HEADERS)
            await resp.aread()
            await resp.aclose()
            return resp.status_code
        finally:
            await up.aclose()

    assert run(scenario, handler) == 200
    assert got == [body]


@pytest.mark.parametrize("engine", ENGINES)
def test_an_answer_over_the_limit_is_refused(engine: str) -> None:
    big = b"x" * (3 * 1024 * 1024)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        # no content-length: the size shows only while reading
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
        for at in range(0, len(big), 65536):
            writer.write(chunk(big[at : at + 65536]))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> ProxyError:
        up = make(engine, url, max_response_bytes=1024 * 1024)
        try:
            resp = await up.send("/v1/messages", b"{}", HEADERS)
            with pytest.raises(ProxyError) as caught:
                await read_all(resp, 1024 * 1024)
            await resp.aclose()
            return caught.value
        finally:
            await up.aclose()

    err = run(scenario, handler)
    assert err.status == 502 and "max_response_bytes" in err.message


# -- failures: the same words and codes ------------------------------------------------------


async def _fail(up: UpstreamClient) -> ProxyError:
    try:
        with pytest.raises(ProxyError) as caught:
            await up.send("/v1/messages", b"{}", HEADERS)
        return caught.value
    finally:
        await up.aclose()


@pytest.mark.parametrize("engine", ENGINES)
def test_refused_and_unresolvable(engine: str) -> None:
    port = free_port()
    err = asyncio.run(_fail(make(engine, f"http://127.0.0.1:{port}")))
    assert (err.status, err.code) == (502, "upstream_connection_refused")
    assert err.message == f"cannot connect to the upstream 127.0.0.1:{port}: connection refused"
    err = asyncio.run(_fail(make(engine, "http://nonexistent.invalid:8080")))
    assert (err.status, err.code) == (502, "upstream_dns_error")
    assert err.message.startswith(
        "cannot connect to the upstream nonexistent.invalid:8080: DNS resolution failed ("
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_tls_to_a_plain_http_port_says_tls(engine: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the ClientHello
        writer.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> ProxyError:
        return await _fail(make(engine, url.replace("http://", "https://")))

    err = run(scenario, handler)
    assert (err.status, err.code) == (502, "upstream_tls_error"), err.message
    assert err.message.startswith("cannot connect to the upstream 127.0.0.1:")
    assert ": TLS handshake failed (" in err.message


def _self_signed(tmp: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


@pytest.mark.parametrize("engine", ENGINES)
def test_an_untrusted_certificate_is_not_accepted(engine: str, tmp_path: Path) -> None:
    ctx = _self_signed(tmp_path)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ssl.SSLError, ConnectionError):  # it refused our certificate
            await reader.read(1)
        writer.close()

    async def main() -> ProxyError:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            return await _fail(make(engine, f"https://127.0.0.1:{port}"))
        finally:
            server.close()

    err = asyncio.run(main())
    assert (err.status, err.code) == (502, "upstream_tls_error"), err.message
    assert ": TLS " in err.message and "certif" in err.message.lower(), err.message


@pytest.mark.parametrize("engine", ENGINES)
def test_closed_before_answering(engine: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    err = run(lambda url: _fail(make(engine, url)), handler)
    assert (err.status, err.code) == (502, "upstream_connection_error")
    assert err.message == (
        f"the upstream {err.message.split()[2]} closed the connection before answering"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_silence_before_the_head_is_a_timeout(engine: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    async def scenario(url: str) -> ProxyError:
        return await _fail(make(engine, url, connect_timeout=0.2, read_timeout=0.3))

    err = run(scenario, handler)
    assert err.status == 504 and err.code == "upstream_timeout", err.message


@pytest.mark.parametrize("engine", ENGINES)
def test_the_callers_first_byte_timeout(engine: str) -> None:
    """``send(..., timeout)``: no head within it is ``asyncio.TimeoutError`` (the resilience
    layer's 504), and the request is dropped: the upstream sees the connection close."""
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # until the client drops the connection
        closed.set()
        writer.close()

    async def scenario(url: str) -> float:
        up = make(engine, url)
        try:
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(asyncio.TimeoutError):
                await up.send("/v1/messages", b"{}", HEADERS, 0.3)
            waited = asyncio.get_running_loop().time() - t0
            await asyncio.wait_for(closed.wait(), 5)
            return waited
        finally:
            await up.aclose()

    assert 0.25 <= run(scenario, handler) < 5


@pytest.mark.parametrize("engine", ENGINES)
def test_silence_and_a_cut_within_the_body(engine: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        if b"/cut" in head.split(b"\r\n")[0]:
            writer.transport.abort()  # a reset, mid-body
            return
        await asyncio.sleep(5)
        writer.close()

    async def scenario(url: str) -> list[tuple[bytes, type[BaseException]]]:
        up = make(engine, url, read_timeout=0.3)
        out: list[tuple[bytes, type[BaseException]]] = []
        try:
            for path in ("/silent", "/cut"):
                resp = await up.send(path, b"{}", HEADERS)
                got = b""
                with pytest.raises(UpstreamError) as caught:
                    async for c in resp.aiter_raw():
                        got += c
                await resp.aclose()
                out.append((got, caught.type))
            return out
        finally:
            await up.aclose()

    silent, cut = run(scenario, handler)
    assert silent == (b"data: 1\n\n", UpstreamTimeout)
    assert cut[0] == b"data: 1\n\n" and cut[1] is UpstreamError


@pytest.mark.parametrize("engine", ENGINES)
def test_no_free_connection_within_the_pool_timeout(engine: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await asyncio.sleep(5)
        writer.close()

    async def scenario(url: str) -> tuple[int, ProxyError]:
        up = make(engine, url, pool_size=1, pool_timeout=0.3, connect_timeout=0.2)
        first = await up.send("/v1/messages", b"{}", HEADERS)
        in_use = up.in_use
        try:
            with pytest.raises(ProxyError) as caught:
                await up.send("/v1/messages", b"{}", HEADERS)
            return in_use, caught.value
        finally:
            await first.aclose()
            await up.aclose()

    in_use, err = run(scenario, handler)
    assert in_use == 1
    assert (err.status, err.code) == (504, "upstream_connect_timeout"), err.message


# -- cancellation and backpressure (native) ---------------------------------------------------


def test_closing_a_stream_early_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await reader.read()  # EOF: the client dropped the connection
        closed.set()
        writer.close()

    async def scenario(url: str) -> int:
        up = NativeUpstream(Config(upstream_url=url))
        try:
            resp = await up.send("/v1/messages", b"{}", HEADERS)
            async for _ in resp.aiter_raw():
                break
            await resp.aclose()
            await asyncio.wait_for(closed.wait(), 5)
            await asyncio.sleep(0.05)
            return up.in_use
        finally:
            await up.aclose()

    assert run(scenario, handler) == 0


def test_a_cancelled_send_drops_its_request() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # the client gave up before the head
        closed.set()
        writer.close()

    async def scenario(url: str) -> None:
        up = NativeUpstream(Config(upstream_url=url))
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(up.send("/v1/messages", b"{}", HEADERS), 0.3)
            await asyncio.wait_for(closed.wait(), 5)
        finally:
            await up.aclose()

    run(scenario, handler)


def test_a_slow_reader_stops_the_engine_reading() -> None:
    """The engine reads at most STREAM_BUFFER ahead of the client: the upstream's writes stall
    (TCP backpressure) instead of the worker's memory growing."""
    total = 64 * 1024 * 1024
    sent = [0]
    piece = b"data: " + b"x" * 65530 + b"\n\n"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        try:
            while sent[0] < total:
                writer.write(chunk(piece))
                await writer.drain()
                sent[0] += len(piece)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def scenario(url: str) -> tuple[int, int]:
        up = NativeUpstream(Config(upstream_url=url))
        try:
            resp = await up.send("/v1/messages", b"{}", HEADERS)
            await asyncio.sleep(1.0)  # the client reads nothing for a second
            stalled = sent[0]
            got = 0
            async for c in resp.aiter_raw():
                got += len(c)
                assert len(c) <= STREAM_BUFFER + len(piece) + 16
            await resp.aclose()
            return stalled, got
        finally:
            await up.aclose()

    stalled, got = run(scenario, handler)
    # the engine's buffer plus the kernel's socket buffers, far below the 64 MiB on offer
    assert stalled < 24 * 1024 * 1024, stalled
    assert got > total  # then all of it arrived (payload plus the SSE framing)


def test_engine_choice() -> None:
    assert isinstance(open_upstream(Config(upstream_engine="aiohttp")), Upstream)
    assert isinstance(open_upstream(Config(upstream_engine="native")), NativeUpstream)
    assert isinstance(open_upstream(Config()), NativeUpstream)  # auto, with the extension
    with pytest.raises(ConfigError, match="upstream_engine must be auto, native or aiohttp"):
        load_config(env={"FERRULE_UPSTREAM_ENGINE": "curl"})


# -- a client that left while its request waited -----------------------------------------------


def test_client_gone_gives_a_busy_worker_the_turns_to_see_it() -> None:
    """The pipeline asks ``await ctx.client_gone()`` just before the upstream call. A request
    that waited over BUSY_S yields the two loop turns a disconnect the server has already
    reported needs to reach the watcher; a fresh one costs nothing (no turn)."""
    from ferrule.app import _disconnected
    from ferrule.routes.common import BUSY_S, RequestContext

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}

    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        seen = []
        for waited in (0.0, BUSY_S * 2):
            ctx = RequestContext(scope, "openai", 1 << 20, 5.0)
            ctx.arrived -= waited
            pending: asyncio.Future[dict[str, Any]] = loop.create_future()
            # the app's watch: a done-callback on the server's future (as Granian's)
            pending.add_done_callback(
                lambda w, gone=ctx.gone: gone.__setitem__(0, _disconnected(w))
            )
            seen.append(await ctx.client_gone())  # nothing reported
            # the server reports the close (its callback is queued, the watcher not yet run)
            loop.call_soon(pending.set_result, {"type": "http.disconnect"})
            seen.append(await ctx.client_gone())
        return seen

    # fresh: not seen yet (no turn taken); after BUSY_S: seen before the upstream call
    assert asyncio.run(scenario()) == [False, False, False, True]


def test_a_request_whose_client_left_is_accounted_as_cancelled() -> None:
    """``ClientGone`` raised in the pipeline (the check before the upstream call) ends the
    request like a cancellation: 499, ``client_cancelled``, never a 500."""
    from ferrule.asgi import ClientGone
    from ferrule.exchange import Exchange

    class Probe(Exchange):
        calls: list[str]

        def cancelled(self) -> None:
            self.calls.append("cancelled")

        def crashed(self) -> None:
            self.calls.append("crashed")

        def close(self) -> None:
            self.calls.append("closed")

    ex = Probe.__new__(Probe)
    ex.calls = []
    ex.__exit__(ClientGone, ClientGone(), None)
    assert ex.calls == ["cancelled", "closed"]


# -- pump: each piece to a step, from the engine's wake-up ---------------------------------------


def _paced_stream(pieces: list[bytes], gap: float, *, end: bool = True) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        for p in pieces:
            writer.write(chunk(p))
            await writer.drain()
            await asyncio.sleep(gap)
        if end:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            writer.close()
        else:
            writer.transport.abort()  # a reset, mid-body

    return handler


@pytest.mark.parametrize("engine", ENGINES)
def test_pump_gives_every_piece_in_order_and_awaits_what_a_step_hands_back(engine: str) -> None:
    pieces = [f"data: {n}\n\n".encode() for n in range(30)]

    async def scenario(url: str) -> tuple[bytes, int, int]:
        up = make(engine, url)
        got: list[bytes] = []
        waits = [0, 0]  # steps that handed back an awaitable; asks with no bytes after one

        async def later() -> None:
            await asyncio.sleep(0.03)  # a send that has to wait: more pieces arrive meanwhile

        def step(piece: bytes) -> Awaitable[None] | None:
            if not piece:
                waits[1] += 1
                return None
            got.append(piece)
            if len(got) % 7 == 0:
                waits[0] += 1
                return later()
            return None

        try:
            resp = await up.send("/v1/messages", b"{}", HEADERS)
            await resp.pump(step)
            await resp.aclose()
            return b"".join(got), waits[0], waits[1]
        finally:
            await up.aclose()

    body, handed, asked = run(scenario, _paced_stream(pieces, 0.005))
    assert body == b"".join(pieces)
    assert handed >= 1 and asked == handed


@pytest.mark.parametrize("engine", ENGINES)
def test_pump_stops_when_the_step_says_so_and_closing_drops_the_rest(engine: str) -> None:
    pieces = [f"data: {n}\n\n".encode() for n in range(20)]

    async def scenario(url: str) -> int:
        up = make(engine, url)
        got: list[bytes] = []

        def step(piece: bytes) -> bool | None:
            got.append(piece)
            return True if len(got) == 3 else None

        try:
            resp = await up.send("/v1/messages", b"{}", HEADERS)
            await resp.pump(step)  # type: ignore[arg-type]  # True, or None
            await resp.aclose()
            return len(got)
        finally:
            await up.aclose()

    assert run(scenario, _paced_stream(pieces, 0.01)) == 3


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("wait_on_last", [False, True])
def test_pump_raises_when_the_upstream_breaks_mid_stream(engine: str, wait_on_last: bool) -> None:
    """Also when the piece before the break was handed back to be awaited."""
    pieces = [b"data: 1\n\n", b"data: 2\n\n"]

    async def scenario(url: str) -> list[bytes]:
        up = make(engine, url)
        got: list[bytes] = []

        def step(piece: bytes) -> Awaitable[None] | None:
            if piece:
                got.append(piece)
            return asyncio.sleep(0.05) if wait_on_last and piece else None

        try:
            resp = await up.send("/v1/messages", b"{}", HEADERS)
            with pytest.raises(UpstreamError):
                await resp.pump(step)
            await resp.aclose()
            return got
        finally:
            await up.aclose()

    got = b"".join(run(scenario, _paced_stream(pieces, 0.02, end=False)))
    # the native engine keeps what it read before the reset; aiohttp may drop its buffer
    assert got == b"".join(pieces) if engine == "native" else b"".join(pieces).startswith(got)
