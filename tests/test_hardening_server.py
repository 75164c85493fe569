"""Server-level hardening (issue 11, items 1, 2, 14 and the /metrics, /v1/models exposure): HTTP/2
header-compression bombs, idle-connection floods, a port already in use, and what a public bind
exposes without the access key. Real ``ferrule serve`` processes, real sockets, HTTP/2 frames
built with the ``h2`` library; docs/reliability.md, "Connection and protocol limits"."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import httpx
import psutil
import pytest

from ferrule.config import ConfigError, load
from ferrule.procs import free_port
from ferrule.serve import FD_RESERVE, bind_error, connection_limit, granian_options
from servers import Proxy, start_proxy

ACCESS_KEY = "a-long-enough-access-key-0123456789"
UNUSED_UPSTREAM = "http://127.0.0.1:9"  # these tests never reach the upstream
MIB = 1024 * 1024
RSS_BOUND = 64 * MIB


def _port(p: Proxy) -> int:
    return int(p.url.rsplit(":", 1)[1])


@contextlib.contextmanager
def _proxy(env: dict[str, str] | None = None) -> Iterator[Proxy]:
    with start_proxy("python", UNUSED_UPSTREAM, os.devnull, env=env) as p:
        yield p


def _tree_rss(pid: int) -> int:
    """RSS of the Granian main process and its workers."""
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def _server_pid(p: Proxy) -> int:
    """The ``ferrule serve`` process of this proxy (Granian's workers are its children)."""
    port = str(_port(p))
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "ferrule.cli" in cmd and "serve" in cmd and port in cmd:
            return int(proc.pid)
    raise AssertionError(f"no ferrule serve on port {port}")


class PeakRss:
    """Samples the server's RSS in a thread: the peak, not only the value after the attack."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = _tree_rss(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, _tree_rss(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1.0)  # let the server finish decoding what it received
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_rss(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.before


def _h2_client() -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    return conn


def _read_events(
    sock: socket.socket, conn: h2.connection.H2Connection, seconds: float
) -> tuple[list[h2.events.Event], bytes]:
    """Everything the server sends within ``seconds`` (or until it closes), as h2 events."""
    sock.settimeout(seconds)
    raw = b""
    with contextlib.suppress(OSError):
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    events: list[h2.events.Event] = []
    with contextlib.suppress(h2.exceptions.ProtocolError):
        events = conn.receive_data(raw)
    return events, raw


BOMB_CONNECTIONS = 50
BOMB_REFS = 4000
BOMB_VALUE = b"A" * 4000  # fits the 4,096-byte HPACK dynamic table (entry = 6 + 4000 + 32)


def _send_hpack_bomb(port: int) -> tuple[int, list[h2.events.Event], bytes]:
    """The header-compression bomb: a header block adds one 4 KB header to the server's HPACK
    dynamic table, and every later reference to it costs one byte on the wire (16 MB of headers
    for ~7 KB). Each stream is a POST whose body never comes, so a server that accepts the
    headers holds them; one stream per connection, all connections open while the server's
    memory is sampled. Returns (bytes sent, the server's events, its raw bytes) for the first
    connection."""
    headers = [
        (b":method", b"POST"),
        (b":path", b"/v1/chat/completions"),
        (b":scheme", b"http"),
        (b":authority", b"127.0.0.1"),
        *[(b"x-bomb", BOMB_VALUE)] * BOMB_REFS,
    ]
    sent = 0
    with contextlib.ExitStack() as stack:
        opened = []
        for _ in range(BOMB_CONNECTIONS):
            conn = _h2_client()
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            opened.append((sock, conn))
            try:
                sock.sendall(conn.data_to_send())
                conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=False)
                data = conn.data_to_send()
                sock.sendall(data)
                sent += len(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server hung up on us: what a bounded server may do
        time.sleep(1.0)  # the server decodes (or refuses) while every connection stays open
        events, raw = _read_events(*opened[0], 1.0)
    return sent, events, raw


def _get_health_h1(port: int, timeout: float = 10.0) -> tuple[float, bytes]:
    """GET /health on a new HTTP/1.1 connection: (seconds to the status line, status line)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        first = sock.recv(4096)
    return time.monotonic() - started, first.split(b"\r\n", 1)[0]


# -- item 1: HTTP/2 header-compression bomb ---------------------------------------------------


def test_hpack_bomb_against_the_default_server_is_not_spoken_and_memory_stays_flat() -> None:
    """By default Ferrule speaks HTTP/1.1 only: the h2c preface is not HTTP/2 to it, no SETTINGS
    come back, and the bomb costs the server nothing."""
    with _proxy() as p:
        with PeakRss(_server_pid(p)) as rss:
            sent, events, raw = _send_hpack_bomb(_port(p))
        print(f"HTTP/1.1 only: {sent} bomb bytes sent, server grew {rss.growth / MIB:.1f} MiB")
        assert not any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events), raw[:80]
        assert rss.growth < RSS_BOUND, f"worker grew {rss.growth / MIB:.0f} MiB"
        assert _get_health_h1(_port(p))[1] == b"HTTP/1.1 200 OK"


def test_hpack_bomb_with_http2_enabled_is_bounded_by_the_header_list_limit() -> None:
    """With HTTP/2 on (http = auto), the server advertises tight limits, serves a normal h2
    request, and the bomb (~350 KB on the wire, 800 MiB held by Granian's defaults) stays under
    +64 MiB."""
    with _proxy({"FERRULE_HTTP": "auto"}) as p:
        port = _port(p)
        conn = _h2_client()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(conn.data_to_send())
            conn.send_headers(
                1,
                [
                    (b":method", b"GET"),
                    (b":path", b"/health"),
                    (b":scheme", b"http"),
                    (b":authority", b"127.0.0.1"),
                ],
                end_stream=True,
            )
            sock.sendall(conn.data_to_send())
            events, _ = _read_events(sock, conn, 1.0)
        settings = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged))
        limits = {k: v.new_value for k, v in settings.changed_settings.items()}
        assert limits[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 64 * 1024
        assert limits[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 100
        [response] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert dict(response.headers)[b":status"] == b"200"

        with PeakRss(_server_pid(p)) as rss:
            sent, events, _ = _send_hpack_bomb(port)
        print(f"HTTP/2 on: {sent} bomb bytes sent, server grew {rss.growth / MIB:.1f} MiB")
        # the server refused the oversized header lists (431 / RST_STREAM / GOAWAY)
        assert any(
            isinstance(e, h2.events.ConnectionTerminated | h2.events.StreamReset)
            or (isinstance(e, h2.events.ResponseReceived) and dict(e.headers)[b":status"] == b"431")
            for e in events
        ), events
        assert rss.growth < RSS_BOUND, f"worker grew {rss.growth / MIB:.0f} MiB for {sent} bytes"
        assert _get_health_h1(port)[1] == b"HTTP/1.1 200 OK"


# -- item 2: connection floods ----------------------------------------------------------------

IDLE_CONNECTIONS = 2000


def _raise_nofile(need: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the open-file hard limit ({hard}) is below {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _still_open(sock: socket.socket) -> bool:
    """True when the server has neither closed nor reset the connection."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def test_two_thousand_idle_connections_do_not_lock_out_a_new_client() -> None:
    """Idle connections count against Granian's per-worker connection limit (1,024 by default,
    so a 1,025th client waited ~30 s). With max_connections = 8,192 a new client is served at
    once while 2,000 idle connections are held open."""
    _raise_nofile(IDLE_CONNECTIONS + 512)
    with _proxy() as p:
        port = _port(p)
        idle: list[socket.socket] = []
        try:
            for _ in range(IDLE_CONNECTIONS):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(0.5)  # let the server accept what it will
            times = []
            for _ in range(5):
                elapsed, status = _get_health_h1(port)
                assert status == b"HTTP/1.1 200 OK"
                times.append(elapsed)
            open_now = sum(_still_open(s) for s in idle)
        finally:
            for s in idle:
                s.close()
        print(f"GET /health with {open_now} idle connections open: max {max(times) * 1000:.1f} ms")
        assert open_now >= IDLE_CONNECTIONS - 10  # the flood really was in place
        assert max(times) < 2.0, times


def test_idle_and_slow_connections_are_closed_after_the_header_read_timeout() -> None:
    """header_read_timeout bounds a silent connection, a slowloris header and an idle keep-alive
    connection alike (with HTTP/2 auto-detection Granian never closed a silent one)."""
    with _proxy({"FERRULE_HEADER_READ_TIMEOUT": "1"}) as p:
        port = _port(p)
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
        kept = socket.create_connection(("127.0.0.1", port), timeout=10)
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        closed_after = {}
        try:
            for name, sock in (("silent", silent), ("slow", slow), ("keep-alive", kept)):
                sock.settimeout(max(0.1, 6.0 - (time.monotonic() - started)))
                with contextlib.suppress(ConnectionResetError):
                    rest = b""
                    with contextlib.suppress(TimeoutError):
                        while chunk := sock.recv(4096):
                            rest += chunk
                    assert b"200 OK" not in rest
                closed_after[name] = time.monotonic() - started
        finally:
            for sock in (silent, slow, kept):
                sock.close()
        # closed by the server (recv saw the end) within the 6 s we waited, not at 30 s
        assert all(t < 5.0 for t in closed_after.values()), closed_after
        assert _get_health_h1(port)[1] == b"HTTP/1.1 200 OK"


def test_connection_limit_fits_the_open_file_limit() -> None:
    cfg = load({}, env={})
    assert cfg.max_connections == 8192 and cfg.http == "1" and cfg.header_read_timeout == 30
    assert connection_limit(cfg, None) == 8192
    assert connection_limit(cfg, 1 << 20) == 8192
    # a soft limit of 4,096: the upstream pool and the reserve come first
    assert connection_limit(cfg, 4096) == 4096 - cfg.pool_size - FD_RESERVE
    opts = granian_options(cfg, 8192)
    assert str(opts["http"]) == "1" and opts["backpressure"] == 8192
    assert opts["http1_settings"].header_read_timeout == 30_000
    assert opts["http2_settings"].max_headers_size == 64 * 1024


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FERRULE_HTTP": "3"}, "http must be 1"),
        ({"FERRULE_MAX_CONNECTIONS": "0"}, "max_connections"),
        ({"FERRULE_HEADER_READ_TIMEOUT": "0"}, "header_read_timeout"),
        ({"FERRULE_BACKLOG": "10"}, "backlog"),
        ({"FERRULE_HOST": "example.com", "FERRULE_ACCESS_KEY": ACCESS_KEY}, "IP address"),
    ],
)
def test_connection_settings_are_validated(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load({}, env=env)


# -- item 14: the port is taken ---------------------------------------------------------------


def _run_serve(port: int, timeout: float = 30.0) -> tuple[int | None, str]:
    """``ferrule serve --port``; a server that starts anyway is stopped (its whole process
    group) after ``timeout`` and reported as exit code None."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrule.cli", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "RUST_BACKTRACE": "1", "FERRULE_DATA_DIR": os.devnull + "-unused"},
    )
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return None, err


def _assert_one_line_port_error(code: int | None, err: str, port: int) -> None:
    assert code not in (None, 0), f"exit code {code}: {err[-500:]}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert f"port {port} is already in use" in lines[0]
    assert "--port" in lines[0] and "FERRULE_PORT" in lines[0]
    assert "Traceback" not in err and "backtrace" not in err.lower()


def test_port_in_use_is_one_line_without_traceback_or_backtrace() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        code, err = _run_serve(port)
    _assert_one_line_port_error(code, err, port)


def test_a_second_ferrule_on_the_same_port_is_refused() -> None:
    """Granian binds with SO_REUSEPORT: without Ferrule's own check a second server on the same
    port would start and silently share the traffic with the first."""
    with _proxy() as p:
        port = _port(p)
        assert bind_error("127.0.0.1", port) is not None
        assert bind_error("127.0.0.1", free_port()) is None
        code, err = _run_serve(port, timeout=8.0)
    _assert_one_line_port_error(code, err, port)


# -- Also: what a public bind exposes without the access key ----------------------------------


def _get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=10)


def test_models_and_metrics_need_the_access_key_when_one_is_configured() -> None:
    with _proxy({"FERRULE_ACCESS_KEY": ACCESS_KEY}) as p:
        r = _get(p.v1 + "/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "ferrule_access_key"
        r = _get(p.v1 + "/models", **{"anthropic-version": "2023-06-01"})
        assert r.status_code == 401 and r.json()["type"] == "error"  # Anthropic's shape
        r = _get(p.v1 + "/models", **{"x-ferrule-access-key": ACCESS_KEY})
        assert r.status_code == 200 and r.json()["data"]
        r = _get(p.url + "/metrics")
        assert r.status_code == 401 and "# HELP" not in r.text
        r = _get(p.url + "/metrics", **{"x-ferrule-access-key": "wrong-" + ACCESS_KEY})
        assert r.status_code == 401
        r = _get(p.url + "/metrics", **{"x-ferrule-access-key": ACCESS_KEY})
        assert r.status_code == 200 and "# HELP ferrule_" in r.text
        # Prometheus sends credentials as a Bearer token
        r = _get(p.url + "/metrics", authorization=f"Bearer {ACCESS_KEY}")
        assert r.status_code == 200
        # load balancers' probes stay open
        for path in ("/health", "/healthz", "/health/liveness", "/health/readiness"):
            assert _get(p.url + path).status_code == 200, path


def test_metrics_public_opens_metrics_only() -> None:
    env = {"FERRULE_ACCESS_KEY": ACCESS_KEY, "FERRULE_METRICS_PUBLIC": "1"}
    with _proxy(env) as p:
        r = _get(p.url + "/metrics")
        assert r.status_code == 200 and "# HELP ferrule_" in r.text
        assert _get(p.v1 + "/models").status_code == 401


def test_models_in_operator_mode_take_the_access_key_as_bearer() -> None:
    env = {"FERRULE_ACCESS_KEY": ACCESS_KEY, "FERRULE_UPSTREAM_API_KEY": "sk-ant-operator-key"}
    with _proxy(env) as p:
        assert _get(p.v1 + "/models", authorization=f"Bearer {ACCESS_KEY}").status_code == 200
        assert _get(p.v1 + "/models", authorization="Bearer sk-ant-other").status_code == 401
