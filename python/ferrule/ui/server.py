"""``/ui``: the dashboard's pages, its JSON reads and its live feed, behind the admin sign-in.

Rules (docs/ui.md): with no admin key configured the dashboard is off: on a loopback bind every
``/ui`` page says how to turn it on, on any other bind ``/ui`` answers 404 like an unknown path.
With an admin key, only the sign-in page (and its stylesheet) answer without a session; a page
asked for without one redirects to the sign-in, a read answers 401. Every write (sign-out, key
changes) needs the session's CSRF token, and a browser request from another site is refused
whatever it carries. Nothing here runs for a proxied request: ``ferrule.app`` routes ``/ui``
paths here only after the proxy routes."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from ..asgi import BodyTooLarge, ClientGone, Receive, Scope, Send, header, read_body
from ..errors import ProxyError
from ..ledger import LedgerError, ledger_path
from . import keys, queries
from .auth import COOKIE, Session, admin_key_matches, csrf_ok, new_session, open_session
from .live import Live

if TYPE_CHECKING:
    from ..app import App

__all__ = ["handle"]

STATIC = Path(__file__).parent / "static"
_PAGES: Final = frozenset(
    ("/ui", "/ui/", "/ui/models", "/ui/by-key", "/ui/upstream-keys", "/ui/live", "/ui/keys")
)
_PUBLIC_STATIC: Final = frozenset(("style.css",))
_STATIC_TYPES: Final = {
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".html": b"text/html; charset=utf-8",
    ".svg": b"image/svg+xml",
}
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY = [
    (b"content-security-policy", _CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make form posts say Origin: null
    (b"cache-control", b"no-store"),
]
_MAX_FORM = 16 * 1024
_LIVE_TICK = 0.5  # seconds between checks of the live feed
_LIVE_STREAM = 5.0  # seconds one live stream lasts before the page reconnects (see _live)
_LIVE_LINGER = 2.0  # seconds in-flight requests stay tracked after a stream ends
_NAME = re.compile(r"^[\x20-\x7e]{1,200}$")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# The package's files, read once: a request names one of these or gets a 404 (no path from a
# request ever reaches the filesystem).
_FILES: Final[dict[str, bytes]] = {
    p.name: p.read_bytes() for p in STATIC.iterdir() if p.is_file() and p.suffix in _STATIC_TYPES
}


def _static(name: str) -> bytes | None:
    return _FILES.get(name)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    ctype: bytes = b"application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", ctype),
        (b"content-length", str(len(body)).encode()),
        *_SECURITY,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, body: bytes) -> None:
    await _send(send, status, body)


async def _redirect(send: Send, to: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send(send, 303, b"", b"text/plain", [(b"location", to.encode()), *(extra or [])])


def _json_error(status: int, message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "status": status}})


def _cookie(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key != b"cookie":
            continue
        for part in bytes(value).decode("latin-1").split(";"):
            name, _, val = part.strip().partition("=")
            if name == COOKIE:
                return val
    return None


def _set_cookie(value: str, max_age: int) -> tuple[bytes, bytes]:
    # Path=/ui: the proxy routes never see it. No Secure flag: Ferrule itself serves plain
    # HTTP; behind a TLS proxy the browser still sends it only to this origin (SameSite).
    return (
        b"set-cookie",
        f"{COOKIE}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict".encode(),
    )


def _cross_site(scope: Scope) -> bool:
    """A browser request made by another site's page (a form post, a fetch)."""
    site = header(scope, b"sec-fetch-site")
    if site is not None and site not in (b"same-origin", b"none"):
        return True
    origin = header(scope, b"origin")
    if origin is None:
        return False
    host = header(scope, b"host")
    return host is None or urlsplit(origin.decode("latin-1")).netloc.encode() != host


def _query(scope: Scope) -> dict[str, str]:
    raw = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {k: v[-1] for k, v in raw.items()}


def _period(q: dict[str, str]) -> str:
    period = q.get("period", "24h")
    if period not in queries.PERIODS:
        raise ProxyError(400, f"period must be one of {', '.join(queries.PERIODS)}")
    return period


async def handle(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    cfg = app.cfg
    path: str = scope["path"]
    method: str = scope["method"]
    if not cfg.admin_key_sha256:
        if not _is_loopback(cfg.host):
            raise ProxyError(404, f"no route {method} {path}", type="not_found_error")
        if method != "GET":
            raise ProxyError(404, f"no route {method} {path}", type="not_found_error")
        if path == "/ui/static/style.css":
            await _send(send, 200, _static("style.css") or b"", _STATIC_TYPES[".css"])
            return
        if path in _PAGES or path == "/ui/login" or path.startswith("/ui/key/"):
            await _send(send, 200, _static("setup.html") or b"", _STATIC_TYPES[".html"])
            return
        raise ProxyError(404, f"no route {method} {path}", type="not_found_error")
    if app.sealer is None:  # the lifespan has not run (yet): no server key to seal with
        raise ProxyError(503, "the dashboard is starting; retry shortly")
    if path == "/ui/login":
        await _login(app, scope, receive, send)
        return
    if path.startswith("/ui/static/") and method == "GET":
        name = path[len("/ui/static/") :]
        if name in _PUBLIC_STATIC:
            await _serve_static(send, name)
            return
    session = open_session(app.sealer, _cookie(scope) or "", cfg.admin_key_sha256)
    if session is None:
        if method == "GET" and (path in _PAGES or path.startswith("/ui/key/")):
            await _redirect(send, "/ui/login")
        else:
            await _send(send, 401, _json_error(401, "sign in at /ui/login first"))
        return
    if method == "GET":
        await _get(app, scope, receive, send, session, path)
        return
    # Every write: same-site, and the session's CSRF token.
    if _cross_site(scope):
        await _send(send, 403, _json_error(403, "cross-site request refused"))
        return
    given = header(scope, b"x-csrf-token")
    if not csrf_ok(session, given.decode("latin-1") if given is not None else None):
        await _send(send, 403, _json_error(403, "missing or wrong CSRF token"))
        return
    if method == "POST" and path == "/ui/logout":
        await _send(send, 200, b'{"signed_out":true}', extra=[_set_cookie("", 0)])
        return
    if path == keys.PREFIX or path.startswith(keys.PREFIX + "/"):
        await keys.handle(app, scope, receive, send, method, path)
        return
    raise ProxyError(404, f"no route {method} {path}", type="not_found_error")


async def _serve_static(send: Send, name: str) -> None:
    body = _static(name)
    kind = _STATIC_TYPES.get(os.path.splitext(name)[1])
    if body is None or kind is None:
        raise ProxyError(404, f"no file {name}", type="not_found_error")
    await _send(send, 200, body, kind)


async def _login(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    method = scope["method"]
    page = _static("login.html") or b""
    if method == "GET":
        await _send(send, 200, page.replace(b"<!--error-->", b""), _STATIC_TYPES[".html"])
        return
    if method != "POST":
        raise ProxyError(405, f"{method} is not allowed on /ui/login; use GET or POST")
    if _cross_site(scope):
        await _send(send, 403, _json_error(403, "cross-site request refused"))
        return
    try:
        raw = await read_body(scope, receive, _MAX_FORM)
    except BodyTooLarge:
        raise ProxyError(413, "the sign-in form is too large") from None
    except ClientGone:
        return
    form = parse_qs(raw.decode("utf-8", "replace"))
    given = (form.get("key") or [""])[-1]
    assert app.sealer is not None
    if not admin_key_matches(given, app.cfg.admin_key_sha256):
        await asyncio.sleep(0.25)  # a guesser gets a few tries a second per connection
        message = b'<p class="error" role="alert">That is not the admin key.</p>'
        await _send(send, 401, page.replace(b"<!--error-->", message), _STATIC_TYPES[".html"])
        return
    token, _ = new_session(app.sealer, app.cfg.admin_key_sha256, app.cfg.ui_session_ttl)
    await _redirect(send, "/ui", [_set_cookie(token, int(app.cfg.ui_session_ttl))])


async def _get(
    app: App, scope: Scope, receive: Receive, send: Send, session: Session, path: str
) -> None:
    if path in _PAGES or path.startswith("/ui/key/"):
        await _send(send, 200, _static("app.html") or b"", _STATIC_TYPES[".html"])
        return
    if path.startswith("/ui/static/"):
        await _serve_static(send, path[len("/ui/static/") :])
        return
    if path == "/ui/api/live":
        await _live(app, receive, send, session)
        return
    q = _query(scope)
    db = ledger_of(app)
    if path == "/ui/api/session":
        data: dict[str, Any] = {
            "csrf": session.csrf,
            "expires": session.expires,
            "keys_mode": keys.keys_mode(app),
            "workers": app.cfg.workers,
        }
    elif path == "/ui/api/overview":
        data = await _read(queries.overview, db, _period(q))
    elif path == "/ui/api/table":
        by = q.get("by", "model")
        if by not in queries.TABLES:
            raise ProxyError(400, f"by must be one of {', '.join(queries.TABLES)}")
        data = await _read(queries.table, db, by, _period(q))
    elif path == "/ui/api/key":
        name = unquote(q.get("name", ""))
        if not _NAME.match(name):
            raise ProxyError(400, "name must be a key's name (printable ASCII, 1-200 characters)")
        data = await _read(queries.key_page, db, name, _period(q))
        data["key"] = await keys.describe(app, name)
    elif path == keys.PREFIX or path.startswith(keys.PREFIX + "/"):
        await keys.handle(app, scope, receive, send, "GET", path)
        return
    else:
        raise ProxyError(404, f"no route GET {path}", type="not_found_error")
    await _send(send, 200, orjson.dumps(data))


def ledger_of(app: App) -> str | Path:
    """The ledger the dashboard reads: the shared database when there is one, else the file."""
    url: str = getattr(app.cfg, "database_url", "") or ""
    return url or ledger_path(app.data_dir)


async def _read(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(fn, *args)
    except (sqlite3.Error, LedgerError) as exc:
        raise ProxyError(503, f"the ledger cannot be read: {type(exc).__name__}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):  # the shared database is down
            raise ProxyError(503, "the ledger database is unreachable; try again later") from None
        raise


async def _live(app: App, receive: Receive, send: Send, session: Session) -> None:
    """Server-sent events: a snapshot of this worker's feed whenever it changed (checked twice
    a second), for at most ``_LIVE_STREAM`` seconds; the page's EventSource then reconnects at
    once (``retry``). Short streams because Granian lets a worker stop only once its requests
    are done and tells the app nothing before: an endless stream would hold every shutdown
    (and restart) for the whole kill timeout. They also end when the session does."""
    live = app.live
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"x-accel-buffering", b"no"),
                *_SECURITY,
            ],
        }
    )
    gone = asyncio.ensure_future(_disconnected(receive))
    live.watchers += 1
    seen = -1
    ends = time.monotonic() + _LIVE_STREAM
    try:
        await send({"type": "http.response.body", "body": b"retry: 250\n\n", "more_body": True})
        while not gone.done() and time.monotonic() < ends and session.expires > time.time():
            if live.version != seen:
                seen = live.version
                snap = live.snapshot(app.in_flight)
                snap["pid"] = os.getpid()
                chunk = b"event: snapshot\ndata: " + orjson.dumps(snap) + b"\n\n"
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.wait((gone,), timeout=_LIVE_TICK)
        if not gone.done():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except Exception:  # the connection went away mid-write: nothing to answer
        pass
    finally:
        gone.cancel()
        # Still "watched" a moment: requests starting while the page reconnects are listed.
        asyncio.get_running_loop().call_later(_LIVE_LINGER, _unwatch, live)


def _unwatch(live: Live) -> None:
    live.watchers -= 1


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
