"""The Keys page's server side: virtual keys (``ferrule.keys``) for a signed-in session, through
the admin API's own operations (``ferrule.keys.admin``), so the page and ``/admin/keys`` create,
change, revoke and rotate exactly alike. The page's session stands in for the admin key's
Bearer token (the browser never holds the admin key after signing in). Off (404) unless keys
mode is on (``FERRULE_AUTH=keys``)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from ..asgi import BodyTooLarge, ClientGone, Receive, Scope, Send, read_body
from ..errors import ProxyError
from . import queries

if TYPE_CHECKING:
    from ..app import App

__all__ = ["describe", "handle", "keys_mode"]

PREFIX = "/ui/api/keys"
_MAX_BODY = 64 * 1024


def keys_mode(app: App) -> bool:
    return str(getattr(app.cfg, "auth", "")) == "keys"


def _off() -> ProxyError:
    return ProxyError(
        404,
        "virtual keys are off: start Ferrule with FERRULE_AUTH=keys to manage keys here",
        type="not_found_error",
    )


async def handle(
    app: App, scope: Scope, receive: Receive, send: Send, method: str, path: str
) -> None:
    if not keys_mode(app):
        raise _off()
    from ..keys import admin

    rest = path[len(PREFIX) :].strip("/")
    parts = [unquote(p) for p in rest.split("/")] if rest else []
    body: dict[str, Any] = {}
    if method in ("POST", "PATCH"):
        try:
            raw = await read_body(scope, receive, _MAX_BODY)
        except BodyTooLarge:
            raise ProxyError(413, f"request body larger than {_MAX_BODY} bytes") from None
        except ClientGone:
            return
        if raw.strip():
            try:
                loaded = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ProxyError(400, "the request body is not valid JSON") from None
            if not isinstance(loaded, dict):
                raise ProxyError(400, "the request body must be a JSON object")
            body = loaded
    status, out = await admin._dispatch(app, method, parts, body)
    from .server import send_json

    await send_json(send, status, orjson.dumps(out))


async def describe(app: App, name: str) -> dict[str, Any] | None:
    """A key's limits and what it used of them, for its page; None without keys mode or key.
    Budget spent: the quota store's figure for the current budget period. Rate limits: the
    ledger's requests and tokens of the last 60 s (this host's ledger, a few seconds behind)."""
    if not keys_mode(app):
        return None
    store = await app.vkeys.store()
    info = await asyncio.to_thread(store.get, name)
    if info is None:
        return None
    out: dict[str, Any] = info.as_json()
    key = info.key
    if key.budget_usd is not None:
        try:
            from ..quota.limiter import period_bounds

            pid, ends = period_bounds(key.budget_period, time.time())
            out["spent_usd"] = await app.quota.store.spent(name, pid) / 1e9
            out["budget_period_ends"] = ends
        except Exception:  # the page still shows the limits without the figure
            out["spent_usd"] = None
    from .server import ledger_of

    used = await asyncio.to_thread(queries.last_minute, ledger_of(app), name)
    limits: dict[str, dict[str, int]] = {}
    if key.rpm is not None:
        limits["requests per minute"] = {"used": used[0], "limit": key.rpm}
    if key.tpm is not None:
        limits["tokens per minute"] = {"used": used[1], "limit": key.tpm}
    out["limits"] = limits or None
    return out
