"""The admin HTTP API for virtual keys, ``/admin/keys`` (JSON, OpenAI-style errors):

- ``GET /admin/keys``: every key (never the key itself: name, digest prefix, limits, status);
- ``POST /admin/keys``: create; the answer (201) holds the key, the only time it is shown;
- ``GET``/``PATCH``/``DELETE /admin/keys/{name}``: show, change limits, revoke;
- ``POST /admin/keys/{name}/rotate``: a new key; the old one works ``grace`` more (default 24 h).

Callers present ``Authorization: Bearer <FERRULE_ADMIN_KEY>``, compared by SHA-256 digest in
constant time. No other key opens it (not a virtual key, not the access key). Without an admin
key configured the API does not exist (404). A web page cannot use it: browsers send no
``Authorization`` header cross-site without a CORS preflight, which Ferrule never grants."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from ..asgi import Receive, Send, header, send_bytes
from ..errors import ProxyError
from .ops import announce, create_key, limits_from_json, parse_duration, rotate_key
from .store import DEFAULT_GRACE, KeyProblem, validate_name

if TYPE_CHECKING:
    from ..app import App
    from ..routes.common import RequestContext

__all__ = ["PREFIX", "handle"]

PREFIX = "/admin/keys"
_MAX_BODY = 64 * 1024


def _authorized(ctx: RequestContext, admin_sha256: str) -> bool:
    auth = header(ctx.scope, b"authorization")
    if auth is None:
        return False
    scheme, _, token = auth.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return False
    digest = hashlib.sha256(token.strip()).hexdigest()
    return hmac.compare_digest(digest, admin_sha256)


async def handle(app: App, ctx: RequestContext, receive: Receive, send: Send) -> None:
    scope = ctx.scope
    admin = app.cfg.admin_key_sha256
    if not admin:
        raise ProxyError(404, f"no route {scope['method']} {scope['path']}", type="not_found_error")
    if not _authorized(ctx, admin):
        raise ProxyError(
            401,
            "the admin API needs 'Authorization: Bearer <admin key>' (FERRULE_ADMIN_KEY)",
            type="authentication_error",
            code="invalid_admin_key",
        )
    method: str = scope["method"]
    rest = scope["path"][len(PREFIX) :].strip("/")
    parts = [unquote(p) for p in rest.split("/")] if rest else []
    if method in ("POST", "PATCH"):
        body = await _read_json(ctx, receive)
    else:
        body = {}
    status, out = await _dispatch(app, method, parts, body)
    await send_bytes(send, status, orjson.dumps(out), headers=ctx.response_headers())


async def _dispatch(
    app: App, method: str, parts: list[str], body: dict[str, Any]
) -> tuple[int, Any]:
    store = await app.vkeys.store()
    redis_url = app.cfg.redis_url
    try:
        if not parts:
            if method == "GET":
                infos = await asyncio.to_thread(store.list_keys)
                return 200, {"object": "list", "data": [i.as_json() for i in infos]}
            if method == "POST":
                kw = limits_from_json(body, creating=True)
                name = validate_name(body.get("name", ""))
                info, key = await asyncio.to_thread(_create, store, name, kw)
                await _changed(app, redis_url)
                return 201, {**info.as_json(), "key": key}
            raise _not_allowed(method, "GET, POST")
        name = validate_name(parts[0])
        if len(parts) == 1:
            if method == "GET":
                found = await asyncio.to_thread(store.get, name)
                if found is None:
                    raise KeyProblem(f"no key named {name!r}", 404)
                return 200, found.as_json()
            if method == "PATCH":
                changes = limits_from_json(body, creating=False)
                info = await asyncio.to_thread(store.update, name, changes)
                await _changed(app, redis_url)
                return 200, info.as_json()
            if method == "DELETE":
                info = await asyncio.to_thread(store.revoke, name)
                await _changed(app, redis_url)
                return 200, info.as_json()
            raise _not_allowed(method, "GET, PATCH, DELETE")
        if len(parts) == 2 and parts[1] == "rotate":
            if method != "POST":
                raise _not_allowed(method, "POST")
            grace = _grace(body)
            info, key = await asyncio.to_thread(rotate_key, store, name, grace)
            await _changed(app, redis_url)
            return 200, {**info.as_json(), "key": key}
        raise KeyProblem("no such admin route", 404)
    except KeyProblem as exc:
        code = "key_" + _CODES.get(exc.status, "error")
        raise ProxyError(exc.status, str(exc), code=code) from None


_CODES = {400: "invalid", 404: "not_found", 409: "conflict"}


def _create(store: Any, name: str, kw: dict[str, Any]) -> Any:
    return create_key(store, name, **kw)


def _grace(body: dict[str, Any]) -> float:
    unknown = set(body) - {"grace"}
    if unknown:
        raise KeyProblem(f"unknown field(s): {', '.join(sorted(unknown))}")
    value = body.get("grace")
    if value is None:
        return DEFAULT_GRACE
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise KeyProblem("grace must be seconds (0 or more) or a duration like 24h")
    return float(value)


async def _changed(app: App, redis_url: str) -> None:
    app.vkeys.changed()  # this worker at once; the others through Redis or the counter
    if redis_url:
        await asyncio.to_thread(announce, redis_url)


def _not_allowed(method: str, allowed: str) -> ProxyError:
    return ProxyError(
        405, f"{method} is not allowed here; use {allowed}", headers=[(b"allow", allowed.encode())]
    )


async def _read_json(ctx: RequestContext, receive: Receive) -> dict[str, Any]:
    from ..asgi import BodyTooLarge, read_body

    try:
        raw = await asyncio.wait_for(read_body(ctx.scope, receive, _MAX_BODY), ctx.body_timeout)
    except asyncio.TimeoutError:
        raise ProxyError(408, "the request body did not arrive in time") from None
    except BodyTooLarge:
        raise ProxyError(413, f"request body larger than {_MAX_BODY} bytes") from None
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProxyError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ProxyError(400, "the request body must be a JSON object")
    return body
