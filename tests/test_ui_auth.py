"""The dashboard's access rules over plain HTTP (issue 17): sign-in with the admin key, the
session cookie's attributes, CSRF on every write, session expiry, and what ``/ui`` is without an
admin key on loopback and non-loopback binds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferrule.app import App
from ferrule.config import load
from ferrule.procs import free_port, running_server
from ferrule.seal import Sealer
from servers import MockUpstream, Proxy, start_proxy

pytestmark = pytest.mark.e2e

ADMIN = "admin-key-for-ui-tests-0123"
TTL = 600  # the shared server's sessions; the expiry test runs its own with a short one
SHORT_TTL = 3


@pytest.fixture(scope="module")
def ui(mock_server: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    log = str(tmp_path_factory.mktemp("ui-auth") / "ferrule.log")
    env = {"FERRULE_ADMIN_KEY": ADMIN, "FERRULE_UI_SESSION_TTL": str(TTL)}
    with start_proxy("python", mock_server.url, log, env=env) as p:
        yield p


def client(p: Proxy) -> httpx.Client:
    return httpx.Client(base_url=p.url, timeout=10, follow_redirects=False)


def sign_in(c: httpx.Client) -> str:
    """Signs ``c`` in; the session's CSRF token."""
    r = c.post("/ui/login", data={"key": ADMIN})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui"
    csrf: str = c.get("/ui/api/session").json()["csrf"]
    return csrf


def test_nothing_without_a_session(ui: Proxy) -> None:
    with client(ui) as c:
        for page in ("/ui", "/ui/models", "/ui/live", "/ui/key/alice"):
            r = c.get(page)
            assert r.status_code == 303 and r.headers["location"] == "/ui/login", page
        for path in ("/ui/api/overview", "/ui/api/live", "/ui/api/session", "/ui/static/app.js"):
            assert c.get(path).status_code == 401, path
        assert c.post("/ui/logout").status_code == 401
        # the sign-in page and its stylesheet are all there is
        assert c.get("/ui/login").status_code == 200
        assert c.get("/ui/static/style.css").status_code == 200


def test_wrong_key_gets_no_session(ui: Proxy) -> None:
    with client(ui) as c:
        r = c.post("/ui/login", data={"key": ADMIN + "x"})
        assert r.status_code == 401
        assert "set-cookie" not in r.headers
        assert "not the admin key" in r.text
        assert ADMIN not in r.text
        assert c.get("/ui/api/session").status_code == 401


def test_session_cookie_attributes(ui: Proxy) -> None:
    with client(ui) as c:
        r = c.post("/ui/login", data={"key": ADMIN})
        assert r.status_code == 303
        raw = r.headers["set-cookie"]
        morsel = SimpleCookie(raw)["ferrule_ui"]
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "Strict"
        assert morsel["path"] == "/ui"
        assert int(morsel["max-age"]) == TTL
        assert ADMIN not in raw  # sealed: not the key, nothing readable
        r = c.get("/ui/api/overview?period=1h")
        assert r.status_code == 200
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
        assert r.json()["totals"]["requests"] >= 0


def test_changed_cookie_is_refused(ui: Proxy) -> None:
    with client(ui) as c:
        sign_in(c)
        value = c.cookies["ferrule_ui"]
        flipped = value[:-3] + ("A" if value[-3] != "A" else "B") + value[-2:]
        c.cookies.clear()
        c.cookies.set("ferrule_ui", flipped, domain="127.0.0.1", path="/ui")
        assert c.get("/ui/api/session").status_code == 401


def test_csrf_on_writes(ui: Proxy) -> None:
    with client(ui) as a, client(ui) as b:
        token_a = sign_in(a)
        token_b = sign_in(b)
        assert token_a != token_b
        assert a.post("/ui/logout").status_code == 403  # no token
        assert a.post("/ui/logout", headers={"x-csrf-token": "x" * 32}).status_code == 403
        # another session's token is not this one's
        assert a.post("/ui/logout", headers={"x-csrf-token": token_b}).status_code == 403
        # the right token from another site's page
        cross = {"x-csrf-token": token_a, "origin": "http://evil.example"}
        assert a.post("/ui/logout", headers=cross).status_code == 403
        site = {"x-csrf-token": token_a, "sec-fetch-site": "cross-site"}
        assert a.post("/ui/logout", headers=site).status_code == 403
        # and a sign-in posted by another site's page
        r = b.post("/ui/login", data={"key": ADMIN}, headers={"origin": "http://evil.example"})
        assert r.status_code == 403
        r = a.post("/ui/logout", headers={"x-csrf-token": token_a, "origin": ui.url})
        assert r.status_code == 200
        assert "Max-Age=0" in r.headers["set-cookie"]


def test_session_expires(mock_server: MockUpstream, tmp_path: Path) -> None:
    env = {"FERRULE_ADMIN_KEY": ADMIN, "FERRULE_UI_SESSION_TTL": str(SHORT_TTL)}
    with (
        start_proxy("python", mock_server.url, str(tmp_path / "f.log"), env=env) as p,
        client(p) as c,
    ):
        r = c.post("/ui/login", data={"key": ADMIN})
        signed_in = time.monotonic()
        assert f"Max-Age={SHORT_TTL};" in r.headers["set-cookie"]
        assert c.get("/ui/api/session").status_code == 200
        time.sleep(max(0.0, SHORT_TTL + 0.5 - (time.monotonic() - signed_in)))
        # the browser would have dropped it (Max-Age); a client that kept it is refused
        assert c.get("/ui/api/session").status_code == 401
        assert c.get("/ui").headers["location"] == "/ui/login"


def test_loopback_without_admin_key_says_how(mock_server: MockUpstream, tmp_path: Path) -> None:
    with start_proxy("python", mock_server.url, str(tmp_path / "f.log")) as p, client(p) as c:
        r = c.get("/ui")
        assert r.status_code == 200
        assert "FERRULE_ADMIN_KEY" in r.text
        assert c.get("/ui/api/overview").status_code == 404
        assert c.post("/ui/login", data={"key": "anything-at-all-123"}).status_code == 404


# -- non-loopback binds: driven in-process, so that no test listens beyond loopback ----------


def _call(app: App, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = dict(message["headers"])
        else:
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"203.0.113.5:8766"), *headers],
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return out


def test_non_loopback_without_admin_key_is_404(tmp_path: Path) -> None:
    env = {"FERRULE_HOST": "0.0.0.0", "FERRULE_ACCESS_KEY": "access-key-0123456789abc"}
    app = App(load(env=env))
    for path in ("/ui", "/ui/login", "/ui/static/style.css", "/ui/api/overview"):
        r = _call(app, "GET", path, [])
        assert r["status"] == 404, path
        assert b"FERRULE_ADMIN_KEY" not in r["body"]
    # indistinguishable from a path that does not exist
    assert (
        _call(app, "GET", "/nothing", [])["body"].replace(b"/nothing", b"/ui")
        == _call(app, "GET", "/ui", [])["body"]
    )


def test_non_loopback_with_admin_key_needs_a_session(tmp_path: Path) -> None:
    env = {
        "FERRULE_HOST": "0.0.0.0",
        "FERRULE_ACCESS_KEY": "access-key-0123456789abc",
        "FERRULE_ADMIN_KEY": ADMIN,
    }
    app = App(load(env=env))
    app.sealer = Sealer(["test-secret"])  # what the lifespan sets up
    assert _call(app, "GET", "/ui", [])["status"] == 303
    assert _call(app, "GET", "/ui/api/overview", [])["status"] == 401
    assert _call(app, "GET", "/ui/static/app.js", [])["status"] == 401
    # the proxy's own access key is not a way in
    bearer = [(b"authorization", b"Bearer access-key-0123456789abc")]
    assert _call(app, "GET", "/ui/api/overview", bearer)["status"] == 401


def test_an_open_live_page_does_not_hold_a_shutdown(
    mock_server: MockUpstream, tmp_path: Path
) -> None:
    """Granian stops a worker only once its requests are done: a live stream that never ended
    held every shutdown for the whole kill timeout (~30 s here). Streams now end every few
    seconds and the page reconnects."""
    port = free_port()
    env = {"FERRULE_ADMIN_KEY": ADMIN, "FERRULE_DATA_DIR": str(tmp_path / "data")}
    argv = ["serve", "--port", str(port), "--upstream-url", mock_server.url]
    with running_server(argv, port, env=env, log_path=str(tmp_path / "f.log")) as proc:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as c:
            sign_in(c)
            events: list[str] = []

            def watch() -> None:
                with contextlib.suppress(httpx.HTTPError), c.stream("GET", "/ui/api/live") as r:
                    for line in r.iter_lines():
                        events.append(line)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            deadline = time.monotonic() + 10
            while "event: snapshot" not in events and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "event: snapshot" in events
            assert events[0] == "retry: 250"  # the page reconnects at once
            stopped = time.monotonic()
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=25)
            assert time.monotonic() - stopped < 12  # the stream's 5 s, and a generous margin
            watcher.join(5)
