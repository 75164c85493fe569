"""``ferrule serve``: validate the config, check the port, then hand the app to Granian's ASGI
server with explicit connection and protocol limits (docs/reliability.md, "Connection and
protocol limits")."""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
from collections.abc import Mapping
from typing import Any

from .config import RESOLVED_ENV, Config, load

__all__ = [
    "FD_RESERVE",
    "HTTP2_LIMITS",
    "banner",
    "bind_error",
    "connection_limit",
    "granian_options",
    "raise_fd_limit",
    "serve",
]

# HTTP/2 (only when `http` is 2 or auto). Granian's defaults accept a 16 MiB header list per
# stream: with HPACK a client references one 4 KB header in the dynamic table for one byte, so
# ~350 KB on the wire held 800 MiB in a worker. With these limits one connection holds at most
# max_concurrent_streams x max_headers_size (~6 MiB) of headers, and the worker at most
# max_concurrent x max_headers_size (requests over max_concurrent are shed at once).
HTTP2_LIMITS: dict[str, Any] = {
    "max_headers_size": 64 * 1024,  # SETTINGS_MAX_HEADER_LIST_SIZE, decoded bytes per stream
    "max_concurrent_streams": 100,
    "max_frame_size": 16 * 1024,
    "initial_connection_window_size": 1024 * 1024,  # request body bytes buffered per connection
    "initial_stream_window_size": 256 * 1024,
    "max_send_buffer_size": 128 * 1024,  # response bytes queued per stream for a slow reader
    # No idle timeout exists for HTTP/2 in Granian: pings find dead peers instead.
    "keep_alive_interval": 60_000,  # ms between PINGs
    "keep_alive_timeout": 20,  # s to wait for the PING acknowledgement
}
_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Granian's Rust errors name the errno
# File descriptors a worker keeps for itself besides client connections and the upstream pool
# (Python, logs, ledger, SQLite, Redis).
FD_RESERVE = 256


def raise_fd_limit() -> int | None:
    """Raise this process's soft open-file limit to the hard limit (Granian's workers inherit
    it): the usual soft limit of 1,024 would cap client connections far below
    ``max_connections``. Returns the soft limit now in effect, None where unknown (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return None if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # e.g. a hard limit above the kernel's nr_open
        return soft
    return target


def connection_limit(cfg: Config, nofile: int | None) -> int:
    """Client connections one worker accepts at once (Granian's ``backpressure``): the setting,
    lowered so that connections + the upstream pool + a reserve fit the open-file limit. Over
    the file limit ``accept`` fails and Granian retries it in a busy loop; under this limit an
    extra connection waits in the listen backlog instead."""
    if nofile is None:
        return cfg.max_connections
    return max(1, min(cfg.max_connections, nofile - cfg.pool_size - FD_RESERVE))


def granian_options(cfg: Config, max_connections: int) -> dict[str, Any]:
    """Granian's protocol and connection settings for this config."""
    from granian.constants import HTTPModes
    from granian.http import HTTP1Settings, HTTP2Settings

    return {
        "http": HTTPModes(cfg.http),
        "backlog": cfg.backlog,
        "backpressure": max_connections,
        # header_read_timeout runs from the moment a connection is accepted, and again from the
        # end of each response until the next request's headers are complete: it is both the
        # slowloris bound and the keep-alive idle timeout. (In `auto` mode Granian runs no timer
        # until the protocol is known, so a silent connection is never closed: one more reason
        # HTTP/1.1 only is the default.)
        "http1_settings": HTTP1Settings(
            header_read_timeout=max(1, round(cfg.header_read_timeout * 1000)), keep_alive=True
        ),
        "http2_settings": HTTP2Settings(**HTTP2_LIMITS),
    }


def bind_error(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, as one line saying what to do; None when free.

    Bound like Granian binds it, with SO_REUSEADDR (a port whose old connections are in
    TIME_WAIT is free) but without SO_REUSEPORT: Granian sets that too, so without this check a
    second Ferrule on the same port would start and silently share the port with the first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as exc:
            return _bind_message(host, port, exc)
    return None


def _bind_message(host: str, port: int, exc: OSError) -> str:
    where = f"cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where}: port {port} is already in use (another Ferrule?); stop that program "
            f"or choose a free port with --port N or FERRULE_PORT=N"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {host} is not an address of this machine; choose one with --host"
    if exc.errno == errno.EACCES:
        return f"{where}: port {port} needs privileges; choose a port above 1023 with --port"
    return f"{where}: {exc.strerror or exc}; choose another port with --port or FERRULE_PORT"


def banner(cfg: Config, host: str) -> str:
    """What ``ferrule serve`` prints before it starts: where it listens, where it sends requests,
    which backend and data folder, who may call it, and where the dashboard and the access log
    are. Never a key: only whether one is set."""
    from . import __version__
    from .backend import BackendError
    from .backend import load as load_backend
    from .ledger import resolve_data_dir

    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{cfg.port}"
    backend: str
    try:
        backend = load_backend()[0]
    except BackendError as exc:  # the workers will fail with the same message
        backend = f"unavailable ({exc})"
    if cfg.access_log == "off":
        access = "off (FERRULE_ACCESS_LOG=compact|json|FILE)"
    elif cfg.access_log in ("compact", "json"):
        access = f"{cfg.access_log}, on stderr (FERRULE_ACCESS_LOG=compact|json|off|FILE)"
    else:
        access = f"JSON lines appended to {cfg.access_log}"
    rows = [
        ("listening", f"{base}  (OpenAI SDKs: {base}/v1)"),
        ("upstream", f"{cfg.upstream_url}  ({_engine(cfg, backend)} engine)"),
        ("backend", f"{backend}, {cfg.workers} worker{'s' if cfg.workers != 1 else ''}"),
        ("data", str(resolve_data_dir(cfg.data_dir or None))),
        ("auth", _auth_mode(cfg)),
        ("ui", f"{base}/ui"),
        ("access log", access),
    ]
    lines = [f"Ferrule {__version__}"] + [f"  {k:<11}{v}" for k, v in rows]
    return "\n".join(lines) + "\n"


def _engine(cfg: Config, backend: str) -> str:
    """The HTTP client ``upstream_native.open_upstream`` picks in the workers."""
    if cfg.upstream_engine == "auto":
        return "native" if backend == "rust" else "aiohttp"
    return cfg.upstream_engine


def _auth_mode(cfg: Config) -> str:
    # getattr: settings that exist only in some configurations of this tree (keys mode, a pool)
    auth: Any = getattr(cfg, "auth", "")
    pool: Any = getattr(cfg, "upstream_keys", None)
    held = bool(cfg.upstream_api_key or pool)
    if auth == "keys":
        return "virtual keys (ferrule keys); Ferrule holds the upstream key"
    if cfg.access_key_sha256:
        who = "Ferrule holds the upstream key" if held else "callers send their Anthropic key"
        return f"access key required; {who}"
    if held:
        return "no access key (loopback); Ferrule holds the upstream key"
    return "no access key (loopback); callers send their own Anthropic key"


def serve(cli: Mapping[str, Any], config_path: str | None) -> int:
    cfg = load(cli, config_path=config_path)  # raises ConfigError before anything binds
    # Granian takes IP literals only, without brackets
    host = "127.0.0.1" if cfg.host == "localhost" else cfg.host.strip("[]")
    problem = bind_error(host, cfg.port)
    if problem is not None:
        print(f"ferrule: {problem}", file=sys.stderr)
        return 1
    nofile = raise_fd_limit()
    max_connections = connection_limit(cfg, nofile)
    if max_connections < cfg.max_connections:
        print(
            f"ferrule: warning: max_connections lowered from {cfg.max_connections} to "
            f"{max_connections} per worker to fit the open-file limit ({nofile}); raise it "
            "with `ulimit -n`",
            file=sys.stderr,
        )
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    # Workers are separate processes: they read the validated config from the environment.
    os.environ[RESOLVED_ENV] = cfg.to_json().decode()
    try:
        import uvloop  # noqa: F401

        loop = Loops.uvloop
    except ImportError:  # pragma: no cover - uvloop is not on Windows
        loop = Loops.asyncio
    server = Server(
        "ferrule.app:create_app",
        factory=True,
        address=host,
        port=cfg.port,
        interface=Interfaces.ASGI,
        workers=cfg.workers,
        loop=loop,
        # Granian's own start/stop lines only at debug: the banner above says where it listens
        log_level=LogLevels(
            cfg.log_level if cfg.log_level in ("debug", "error", "critical") else "warning"
        ),
        websockets=False,
        # SIGTERM: Granian stops accepting and waits for in-flight requests (streams included)
        # up to this deadline; the lifespan shutdown then flushes the ledger.
        workers_kill_timeout=max(1, round(cfg.shutdown_timeout)),
        respawn_failed_workers=True,
        **granian_options(cfg, max_connections),
    )
    # Every worker writes a snapshot of its counts to this folder about once a second (in
    # prometheus_client's multiprocess file format) and /metrics on any worker sums them; a
    # fresh folder per run.
    from .metrics import cleanup_multiprocess_dir, prepare_multiprocess_dir

    metrics_dir = prepare_multiprocess_dir()
    sys.stderr.write(banner(cfg, host))
    sys.stderr.flush()
    try:
        server.serve()
    except RuntimeError as exc:
        # Another program took the port between the check above and Granian's bind: the same
        # one line, not Granian's traceback (nor a Rust backtrace under RUST_BACKTRACE).
        found = _OS_ERROR.search(str(exc))
        code = int(found.group(1)) if found else 0
        if code not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        msg = _bind_message(host, cfg.port, OSError(code, os.strerror(code)))
        print(f"ferrule: {msg}", file=sys.stderr)
        return 1
    finally:
        cleanup_multiprocess_dir(metrics_dir)
    return 0
