"""``ferrule doctor``: check what ``ferrule serve`` needs, and say what to fix.

Checks, in order: the config, the port (free, or already served by a Ferrule), the data folder
(writable), the ledger (opens, schema known, writable; with database_url, the database:
connects, schema version), the price table (loads, not stale), Redis (a PING, when FERRULE_REDIS_URL is
set) and the upstream (reachable, WITHOUT a paid call: ``GET /v1/models`` with no key, where
Anthropic's 401 proves the host, TLS and HTTP path work). Exit code 1 when any check failed."""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import os
import socket
import sqlite3
import ssl
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import unquote, urlsplit

import httpx
import orjson

from . import __version__, pricing
from .config import Config, ConfigError, load
from .ledger import SCHEMA_VERSION, LedgerError, ledger_path, open_db, resolve_data_dir

__all__ = [
    "Check",
    "add_arguments",
    "check_data_dir",
    "check_database",
    "check_ledger",
    "check_port",
    "check_prices",
    "check_redis",
    "check_spool",
    "check_upstream",
    "report",
    "run",
    "run_checks",
]

REDIS_ENV = "FERRULE_REDIS_URL"

Status = Literal["ok", "warn", "fail", "skip"]
_MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "skip"}


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (also FERRULE_CONFIG)")
    p.add_argument("--host", help="address ferrule serve will bind")
    p.add_argument("--port", type=int, help="port ferrule serve will bind")
    p.add_argument("--upstream-url", help="Anthropic base URL to check")
    p.add_argument("--data-dir", help="Ferrule's data folder (FERRULE_DATA_DIR)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per network check")
    p.add_argument(
        "--offline", action="store_true", help="skip the upstream check (no network access)"
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    return report(run_checks(args), out, as_json=getattr(args, "json", False))


def report(checks: list[Check], out: IO[str] | None = None, *, as_json: bool = False) -> int:
    """Print the checks (text or JSON); the exit code: 1 when any failed."""
    stream = out or sys.stdout
    if as_json:
        body = [c.__dict__ for c in checks]
        stream.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for c in checks:
            stream.write(f"[{_MARK[c.status]}] {c.name}: {c.detail}\n")
            if c.fix:
                stream.write(f"       fix: {c.fix}\n")
        failed = sum(c.status == "fail" for c in checks)
        stream.write(f"\n{failed} problem(s) found.\n" if failed else "\nAll checks passed.\n")
    return 1 if any(c.status == "fail" for c in checks) else 0


def run_checks(args: argparse.Namespace) -> list[Check]:
    checks: list[Check] = []
    cli = {"host": args.host, "port": args.port, "upstream_url": args.upstream_url}
    try:
        cfg = load(cli, config_path=args.config)
    except ConfigError as exc:
        checks.append(
            Check(
                "config", "fail", str(exc), "correct the setting (flag, FERRULE_* variable or TOML)"
            )
        )
        cfg = None
    else:
        source = args.config or os.environ.get("FERRULE_CONFIG") or "defaults and environment"
        checks.append(Check("config", "ok", f"valid ({source})"))
    timeout = float(args.timeout)
    if cfg is not None:
        checks.append(check_port(cfg.host, cfg.port, timeout))
    data_dir: Path | None
    try:
        data_dir = resolve_data_dir(args.data_dir, args.config)
    except ConfigError:
        data_dir = None  # already reported
    if data_dir is not None:
        folder = check_data_dir(data_dir)
        checks.append(folder)
        if cfg is not None and cfg.database_url:
            checks.append(Check("ledger", "skip", "the ledger is in the database (database_url)"))
        elif folder.status == "ok":
            checks.append(check_ledger(ledger_path(data_dir)))
        else:
            checks.append(Check("ledger", "skip", "the data folder is not usable"))
    if cfg is not None and cfg.database_url:
        checks.append(check_database(cfg.database_url, timeout))
        if data_dir is not None:
            checks.append(check_spool(data_dir))
    checks.append(check_prices())
    redis_url = (cfg.redis_url if cfg is not None else "") or os.environ.get(REDIS_ENV)
    if redis_url:
        checks.append(check_redis(redis_url, timeout))
    else:
        checks.append(Check("redis", "skip", f"{REDIS_ENV} is not set (no shared cache)"))
    if cfg is None:
        pass
    elif args.offline:
        checks.append(Check("upstream", "skip", "--offline"))
    else:
        checks.append(check_upstream(cfg, timeout))
    return checks


# -- the checks -------------------------------------------------------------------------------


def check_port(host: str, port: int, timeout: float) -> Check:
    name = f"port {host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as servers set it: a port in TIME_WAIT is not "taken".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return _port_taken(name, host, port, timeout)
            if exc.errno == errno.EADDRNOTAVAIL:
                return Check(
                    name,
                    "fail",
                    f"{host} is not an address of this machine",
                    "set host to 127.0.0.1, 0.0.0.0 or one of this machine's addresses",
                )
            if exc.errno == errno.EACCES:
                return Check(
                    name,
                    "fail",
                    f"binding port {port} needs privileges",
                    "use a port above 1023 (--port, FERRULE_PORT)",
                )
            return Check(name, "fail", f"cannot bind: {exc.strerror}", "pick another host or port")
    return Check(name, "ok", "free")


def _port_taken(name: str, host: str, port: int, timeout: float) -> Check:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    url = f"http://{_host_in_url(target)}:{port}/health"
    try:
        resp = httpx.get(url, timeout=timeout, trust_env=False)
        body = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        body = None
    if isinstance(body, dict) and "backend" in body and "version" in body:
        return Check(
            name, "ok", f"already served by Ferrule {body['version']} (backend {body['backend']})"
        )
    return Check(
        name,
        "fail",
        "in use by another program",
        f"stop that program or choose another port (--port, FERRULE_PORT); "
        f"`ss -ltnp 'sport = :{port}'` shows who holds it",
    )


def check_data_dir(path: Path) -> Check:
    name = f"data folder {path}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        # Really write: permission bits do not tell the truth for root or read-only mounts.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-", delete=True) as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return Check(
            name,
            "fail",
            f"not writable: {exc.strerror or exc}",
            "set FERRULE_DATA_DIR (or --data-dir) to a writable folder, or fix its "
            "permissions / free disk space",
        )
    return Check(name, "ok", "writable")


def check_ledger(path: Path) -> Check:
    name = f"ledger {path.name}"
    conn = None
    try:
        conn = open_db(path, timeout=2.0)  # creates it (and its schema) if missing
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock: proves we can write
        rows = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        conn.execute("ROLLBACK")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    except LedgerError as exc:
        return Check(name, "fail", str(exc))
    except (sqlite3.Error, OSError) as exc:
        return Check(
            name,
            "fail",
            f"cannot open or write: {exc}",
            f"check {path} is a Ferrule ledger on a local, writable disk with free "
            "space; move it away to start a new one",
        )
    finally:
        if conn is not None:
            conn.close()
    if mode != "wal":
        return Check(
            name,
            "warn",
            f"{rows} rows, journal mode {mode} (not WAL)",
            "put the data folder on a local disk: WAL needs shared memory",
        )
    return Check(name, "ok", f"{rows} rows, schema v{SCHEMA_VERSION}, WAL")


def check_database(url: str, timeout: float) -> Check:
    """database_url: connects, and reads the ledger's schema version (ferrule_schema). Never
    shows the user or password."""
    import psycopg

    from .ledger import postgres

    shown = postgres.redact(url)
    name = "database"
    try:
        with postgres.connect(url, timeout=timeout, application="ferrule-doctor") as conn:
            version = postgres.schema_version(conn)
            server = conn.info.server_version
    except psycopg.Error as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check(
            name,
            "fail",
            f"{shown}: cannot connect ({text})",
            "start PostgreSQL, or fix FERRULE_DATABASE_URL (host, port, database, user, "
            "password; sslmode=require for TLS)",
        )
    major = f"PostgreSQL {server // 10000}"
    if version > SCHEMA_VERSION:
        return Check(
            name,
            "fail",
            f"{shown} ({major}): ledger schema v{version}, newer than this Ferrule's "
            f"v{SCHEMA_VERSION}",
            "upgrade Ferrule on every replica (or point database_url at another database)",
        )
    if version < SCHEMA_VERSION:
        now = f"v{version}" if version else "not created yet"
        return Check(
            name,
            "warn",
            f"{shown} ({major}): ledger schema {now}; Ferrule {__version__} migrates it to "
            f"v{SCHEMA_VERSION} when it starts",
            "start ferrule serve once with a role that may create tables in this database",
        )
    return Check(name, "ok", f"{shown} ({major}): ledger schema v{SCHEMA_VERSION}")


def check_spool(data_dir: Path) -> Check:
    """Ledger rows waiting in the data folder's spool for the database (ledger.spool)."""
    from .ledger.postgres import spool_root
    from .ledger.spool import read_segment

    root = spool_root(data_dir)
    rows = 0
    folders = 0
    try:
        for folder in root.iterdir() if root.is_dir() else ():
            segments = sorted(folder.glob("*.jsonl"))
            folders += bool(segments)
            rows += sum(1 for seg in segments for _ in read_segment(seg))
    except OSError as exc:
        return Check("ledger spool", "warn", f"{root}: cannot read ({exc.strerror or exc})")
    if rows == 0:
        return Check("ledger spool", "ok", "empty (every ledger row reached the database)")
    return Check(
        "ledger spool",
        "warn",
        f"{rows} ledger rows wait in {root} ({folders} writer folders)",
        "they are replayed, in order, once ferrule serve reaches the database: start it, or "
        "fix the database check above",
    )


def check_prices(today: dt.date | None = None) -> Check:
    """The packaged price table loads; warn when it was last checked long ago."""
    try:
        table = pricing.default_table()
    except (OSError, ValueError) as exc:
        return Check(
            "prices",
            "fail",
            f"the price table cannot be read: {exc}",
            "reinstall Ferrule (ferrule/data/models.toml is part of the package)",
        )
    detail = f"{len(table.models)} models priced ({', '.join(table.models)})"
    today = today or dt.date.today()
    if table.checked is None or (today - table.checked).days > 180:
        return Check(
            "prices",
            "warn",
            f"{detail}; checked {table.checked or 'never'}",
            "prices may be stale: compare ferrule/data/models.toml with Anthropic's pricing page",
        )
    return Check("prices", "ok", f"{detail}; checked {table.checked}")


def check_redis(url: str, timeout: float) -> Check:
    """PING over a raw socket (RESP), with AUTH and SELECT from the URL; the password is never
    shown."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return Check(
            "redis",
            "fail",
            f"{REDIS_ENV} is not a redis:// or rediss:// URL",
            "use redis://[user:password@]host:port/db",
        )
    try:
        with _redis_connect(
            parts.hostname, parts.port or 6379, parts.scheme == "rediss", timeout
        ) as conn:
            rfile = conn.makefile("rb")
            if parts.password is not None:
                auth = [unquote(parts.password)]
                if parts.username:
                    auth.insert(0, unquote(parts.username))
                reply = _redis_call(conn, rfile, "AUTH", *auth)
                if not reply.startswith(b"+OK"):
                    return Check(
                        "redis",
                        "fail",
                        f"{shown}: authentication refused",
                        f"check the user and password in {REDIS_ENV}",
                    )
            db = parts.path.strip("/")
            if db:
                reply = _redis_call(conn, rfile, "SELECT", db)
                if not reply.startswith(b"+OK"):
                    return Check(
                        "redis",
                        "fail",
                        f"{shown}: database {db} refused",
                        f"fix the database number in {REDIS_ENV}",
                    )
            reply = _redis_call(conn, rfile, "PING")
    except (OSError, ssl.SSLError) as exc:
        return Check(
            "redis", "fail", f"{shown}: cannot connect ({exc})", f"start Redis or fix {REDIS_ENV}"
        )
    if reply.startswith(b"+PONG"):
        return Check("redis", "ok", f"{shown} answers PING")
    if reply.startswith(b"-NOAUTH"):
        return Check(
            "redis",
            "fail",
            f"{shown} requires a password",
            f"put it in {REDIS_ENV}: redis://:password@host:port",
        )
    return Check(
        "redis",
        "fail",
        f"{shown}: unexpected answer {reply[:60]!r}",
        "check that this address is a Redis server",
    )


def _redis_connect(host: str, port: int, tls: bool, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls:
        return ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    return sock


def _redis_call(conn: socket.socket, rfile: Any, *words: str) -> bytes:
    msg = f"*{len(words)}\r\n".encode()
    for w in words:
        b = w.encode()
        msg += b"$%d\r\n%s\r\n" % (len(b), b)
    conn.sendall(msg)
    line: bytes = rfile.readline(512)
    if not line:
        raise ConnectionError("connection closed")
    return line


def check_upstream(cfg: Config, timeout: float) -> Check:
    base = cfg.upstream_url.rstrip("/")
    url = base + "/v1/models"
    name = f"upstream {base}"
    # No key: Anthropic answers 401 and bills nothing.
    headers = {"anthropic-version": cfg.anthropic_version}
    try:
        with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
            resp = client.get(url, headers=headers)
    except httpx.ConnectTimeout:
        return Check(
            name,
            "fail",
            "connection timed out",
            "check network access to the upstream (firewall, proxy) or upstream_url",
        )
    except httpx.ConnectError as exc:
        text = str(exc)
        if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
            return Check(
                name,
                "fail",
                f"TLS failed: {text}",
                "install the CA certificates (ca-certificates) or fix upstream_url",
            )
        return Check(
            name,
            "fail",
            f"cannot connect: {text}",
            "check DNS and network access, or set upstream_url (FERRULE_UPSTREAM_URL)",
        )
    except httpx.HTTPError as exc:
        return Check(name, "fail", f"{type(exc).__name__}: {exc}", "check upstream_url")
    code = resp.status_code
    if code in (200, 401, 403):
        why = {
            200: "answered",
            401: "answered 401 without a key, as expected",
            403: "answered 403 without a key",
        }[code]
        return Check(name, "ok", f"reachable ({why})")
    if code == 404:
        return Check(
            name,
            "warn",
            "reachable, but GET /v1/models is 404",
            "check upstream_url points at the Anthropic API root",
        )
    if code in (301, 302, 307, 308):
        return Check(
            name,
            "fail",
            f"redirects to {resp.headers.get('location')}",
            "set upstream_url to the final address (Ferrule never follows redirects)",
        )
    return Check(name, "warn", f"reachable, HTTP {code}", "the upstream may be degraded")


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
