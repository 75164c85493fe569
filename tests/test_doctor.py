"""``ferrule doctor`` on a good setup and on a broken one, with local stand-ins for the upstream
and Redis (no network, no paid call)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ferrule import doctor
from ferrule.procs import free_port


class _Upstream(BaseHTTPRequestHandler):
    """Anthropic without a key: 401 on /v1/models; a Ferrule-looking /health."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.path == "/health":
            self._send(200, {"status": "ok", "backend": "rust", "version": "9.9"})
        elif self.path == "/v1/models":
            self._send(401, {"type": "error", "error": {"type": "authentication_error"}})
        else:
            self._send(404, {})

    def _send(self, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


class _Redis(socketserver.StreamRequestHandler):
    """Just enough RESP: AUTH (password "pw"), SELECT, PING."""

    def handle(self) -> None:
        authed = False
        while True:
            head = self.rfile.readline()
            if not head:
                return
            words = []
            for _ in range(int(head[1:])):
                n = int(self.rfile.readline()[1:])
                words.append(self.rfile.read(n + 2)[:-2].decode())
            cmd = words[0].upper()
            if cmd == "AUTH":
                authed = words[-1] == "pw"
                self.wfile.write(b"+OK\r\n" if authed else b"-WRONGPASS invalid password\r\n")
            elif not authed:
                self.wfile.write(b"-NOAUTH Authentication required.\r\n")
            elif cmd == "SELECT":
                self.wfile.write(b"+OK\r\n")
            elif cmd == "PING":
                self.wfile.write(b"+PONG\r\n")


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]  # type: ignore[misc]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def upstream() -> Iterator[str]:
    _Upstream.seen = []
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def redis_port() -> Iterator[int]:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Redis)) as port:
        yield port


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FERRULE_CONFIG", "FERRULE_REDIS_URL", "FERRULE_DATA_DIR", "FERRULE_PORT",
                "TOKENPAK_PORT", "FERRULE_HOST", "FERRULE_UPSTREAM_URL"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


def run(*argv: str, timeout: float = 2) -> tuple[int, str, dict[str, dict[str, str]]]:
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    args = parser.parse_args([*argv, "--timeout", str(timeout)])
    results = doctor.run_checks(args)
    out = io.StringIO()
    code = doctor.report(results, out)
    return code, out.getvalue(), {c.name.split()[0]: c.__dict__ for c in results}


def test_good_setup(
    tmp_path: Path, upstream: str, redis_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRULE_REDIS_URL", f"redis://:pw@127.0.0.1:{redis_port}/2")
    code, out, checks = run(
        "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--upstream-url", upstream
    )
    assert code == 0, out
    assert {name: c["status"] for name, c in checks.items()} == {
        "config": "ok",
        "port": "ok",
        "data": "ok",
        "ledger": "ok",
        "prices": "ok",
        "redis": "ok",
        "upstream": "ok",
    }
    assert "401 without a key" in checks["upstream"]["detail"]
    assert "All checks passed." in out
    assert "pw" not in out  # the Redis password is never shown
    # the upstream was asked without a key: nothing can be billed
    assert _Upstream.seen and all(
        "x-api-key" not in h and "authorization" not in h for h in _Upstream.seen
    )
    assert (tmp_path / "data" / "ledger.sqlite3").exists()


def test_port_already_served_by_ferrule(tmp_path: Path, upstream: str) -> None:
    port = upstream.rsplit(":", 1)[1]  # our stand-in answers /health like Ferrule
    code, out, checks = run("--data-dir", str(tmp_path), "--port", port, "--offline")
    assert code == 0, out
    assert (
        checks["port"]["status"] == "ok" and "already served by Ferrule" in checks["port"]["detail"]
    )
    assert checks["upstream"]["status"] == "skip"


def test_bad_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = free_port()  # nothing listens here
    monkeypatch.setenv("FERRULE_REDIS_URL", f"redis://127.0.0.1:{closed}")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with socket.socket() as squatter:  # some other program holds the port
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        code, out, checks = run(
            "--data-dir",
            str(not_a_dir / "data"),
            "--port",
            str(port),
            "--upstream-url",
            f"http://127.0.0.1:{closed}",
            timeout=0.5,  # the squatter never answers our /health probe
        )
    assert code == 1
    status = {name: c["status"] for name, c in checks.items()}
    assert status == {
        "config": "ok",
        "port": "fail",
        "data": "fail",
        "ledger": "skip",
        "prices": "ok",
        "redis": "fail",
        "upstream": "fail",
    }
    assert "in use by another program" in checks["port"]["detail"]
    assert "4 problem(s) found." in out
    # every failure says what to fix
    assert out.count("fix: ") == 4
    assert "FERRULE_DATA_DIR" in checks["data"]["fix"]
    assert "FERRULE_REDIS_URL" in checks["redis"]["fix"]


def test_bad_config_and_wrong_redis_password(
    tmp_path: Path, redis_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "ferrule.toml"
    bad.write_text("port = 'eighty'\n")
    monkeypatch.setenv("FERRULE_REDIS_URL", f"redis://:s3cr3t-xyz@127.0.0.1:{redis_port}")
    code, out, checks = run("--config", str(bad), "--data-dir", str(tmp_path))
    assert code == 1
    assert (
        checks["config"]["status"] == "fail"
        and "port must be an integer" in checks["config"]["detail"]
    )
    assert "port" not in checks and "upstream" not in checks  # nothing to check them against
    assert checks["ledger"]["status"] == "ok"
    assert (
        checks["redis"]["status"] == "fail"
        and "authentication refused" in checks["redis"]["detail"]
    )
    assert "s3cr3t-xyz" not in out
    # no password at all on a server that wants one
    monkeypatch.setenv("FERRULE_REDIS_URL", f"redis://127.0.0.1:{redis_port}")
    assert "requires a password" in doctor.check_redis(f"redis://127.0.0.1:{redis_port}", 2).detail


def test_ledger_from_a_newer_ferrule(tmp_path: Path) -> None:
    from ferrule.ledger import SCHEMA_VERSION, ledger_path, open_db

    conn = open_db(ledger_path(tmp_path))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    check = doctor.check_ledger(ledger_path(tmp_path))
    assert check.status == "fail" and "upgrade Ferrule" in check.detail


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    args = parser.parse_args(
        ["--data-dir", str(tmp_path), "--offline", "--json", "--port", str(free_port())]
    )
    assert doctor.run(args) == 0
    checks = json.loads(capsys.readouterr().out)
    assert [c["name"].split()[0] for c in checks] == [
        "config",
        "port",
        "data",
        "ledger",
        "prices",
        "redis",
        "upstream",
    ]
    assert {c["status"] for c in checks} <= {"ok", "skip"}


def test_stale_price_table_is_a_warning() -> None:
    import datetime as dt

    assert doctor.check_prices(dt.date(2026, 12, 1)).status == "ok"
    stale = doctor.check_prices(dt.date(2028, 1, 1))
    assert stale.status == "warn" and "stale" in stale.fix
