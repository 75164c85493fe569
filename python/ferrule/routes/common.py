"""What every proxied route needs: the caller's key, the request id, bounded JSON bodies, the
upstream headers, and upstream errors turned into ``ProxyError``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import uuid
from typing import Any, Literal

import orjson

from ..asgi import BodyTooLarge, Receive, Scope, header, read_body
from ..errors import ProxyError
from ..upstream import UpstreamError, UpstreamResponse, UpstreamTimeout

__all__ = [
    "PASSED_BACK",
    "SSE_HEADERS",
    "RequestContext",
    "parse_json",
    "read_all",
    "upstream_error",
    "upstream_headers",
]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
# Upstream response headers a client may act on (back-off, quotas, support tickets).
PASSED_BACK = re.compile(rb"^(retry-after|anthropic-ratelimit-[a-z0-9-]+|x-should-retry)$")
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_MAX_ERROR_BODY = 64 * 1024

Route = Literal["openai", "anthropic"]


def parse_json(raw: bytes, what: str, *, status: int = 400) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProxyError(
            status,
            f"{what} is not valid JSON: {exc}",
            type="invalid_request_error" if status == 400 else "api_error",
        ) from None


class RequestContext:
    """Per-request facts. The API key is held only here and in the upstream header list."""

    __slots__ = (
        "api_key",
        "attempts",
        "body_timeout",
        "extra_headers",
        "max_body",
        "outcome",
        "raw_body",
        "request_id",
        "route",
        "scope",
        "upstream_request_id",
        "x_cache",
    )

    def __init__(self, scope: Scope, route: Route, max_body: int, body_timeout: float) -> None:
        self.scope = scope
        self.body_timeout = body_timeout
        self.attempts = 0
        self.outcome = "complete"
        self.route = route
        self.max_body = max_body
        given = header(scope, b"x-request-id")
        self.request_id = (
            given.decode() if given and _SANE_ID.match(given) else "req_" + uuid.uuid4().hex
        )
        self.upstream_request_id: str | None = None
        self.x_cache: str | None = None  # HIT, MISS or BYPASS once the cache policy ran
        self.extra_headers: list[tuple[bytes, bytes]] = []  # e.g. the compression figures
        self.raw_body = b""
        self.api_key = _api_key(scope)

    def authorize(
        self, access_key_sha256: str, upstream_api_key: str, *, bearer_ok: bool = False
    ) -> None:
        """Check the proxy's access key (when one is configured) and settle which key goes
        upstream. The access key is compared by digest in constant time and never forwarded.
        ``bearer_ok``: the Bearer token may be the access key even without an operator key (a
        route that never calls upstream, e.g. /metrics for a Prometheus scraper)."""
        if access_key_sha256:
            given = header(self.scope, b"x-ferrule-access-key")
            bearer = _bearer(self.scope)
            ok = given is not None and _same_key(given, access_key_sha256)
            if not ok and (upstream_api_key or bearer_ok) and bearer is not None:
                # operator mode: the Bearer token is the access key, the operator's key goes up
                ok = _same_key(bearer.encode("latin-1"), access_key_sha256)
                if ok:
                    self.api_key = None
            if not ok:
                raise ProxyError(
                    401,
                    "missing or wrong Ferrule access key (send it as x-ferrule-access-key)",
                    type="authentication_error",
                    code="ferrule_access_key",
                )
        if not self.api_key and upstream_api_key:
            self.api_key = upstream_api_key

    def require_key(self) -> str:
        if not self.api_key:
            raise ProxyError(
                401,
                "no API key: send your Anthropic key as 'Authorization: Bearer <key>' or 'x-api-key'",
                type="authentication_error",
            )
        return self.api_key

    async def read_json(self, receive: Receive) -> Any:
        try:
            raw = await asyncio.wait_for(
                read_body(self.scope, receive, self.max_body), self.body_timeout
            )
        except asyncio.TimeoutError:
            raise ProxyError(
                408, f"the request body did not arrive within {self.body_timeout:.0f} s"
            ) from None
        except BodyTooLarge:
            raise ProxyError(413, f"request body larger than {self.max_body} bytes") from None
        if not raw:
            raise ProxyError(400, "the request body is empty: a JSON object is required")
        self.raw_body = raw
        return parse_json(raw, "the request body")

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-request-id", self.request_id.encode())]
        if self.attempts:
            headers.append((b"x-ferrule-attempts", str(self.attempts).encode()))
        if self.x_cache:
            headers.append((b"x-cache", self.x_cache.encode()))
        headers.extend(self.extra_headers)
        if self.upstream_request_id:
            headers.append((b"x-upstream-request-id", self.upstream_request_id.encode()))
        return headers


def _same_key(presented: bytes, sha256_hex: str) -> bool:
    digest = hashlib.sha256(presented.strip()).hexdigest()
    return hmac.compare_digest(digest, sha256_hex)


def _bearer(scope: Scope) -> str | None:
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip().decode("latin-1")
    return None


def _api_key(scope: Scope) -> str | None:
    bearer = _bearer(scope)
    if bearer is not None:
        return bearer
    key = header(scope, b"x-api-key")
    if key is not None and key.strip():
        return key.strip().decode("latin-1")
    return None


def upstream_headers(scope: Scope, api_key: str, version: str) -> list[tuple[str, str]]:
    """Headers for Anthropic: the caller's key, our API version, and the client's betas."""
    headers = [
        ("x-api-key", api_key),
        ("anthropic-version", version),
        ("content-type", "application/json"),
        ("accept", "application/json"),
        # We read (and translate) the body ourselves: never let it arrive compressed.
        ("accept-encoding", "identity"),
    ]
    beta = header(scope, b"anthropic-beta")
    if beta is not None:
        headers.append(("anthropic-beta", beta.decode("latin-1")))
    return headers


async def read_all(resp: UpstreamResponse) -> bytes:
    """A whole non-streamed upstream body; a failure while reading is a 502/504."""
    try:
        return await resp.aread()
    except UpstreamTimeout:
        raise ProxyError(
            504, "the upstream (Anthropic) stopped answering", type="timeout_error"
        ) from None
    except UpstreamError as exc:
        raise ProxyError(502, f"the upstream answer was cut off ({type(exc).__name__})") from None


async def upstream_error(resp: UpstreamResponse, *, openai: bool = True) -> ProxyError:
    """An upstream non-200 as a ProxyError keeping status (529 -> 503 for OpenAI clients),
    message and the headers the client needs to back off. A body that is not Anthropic's JSON
    (an intermediary's HTML page) is never passed on."""
    raw = b""
    try:
        async for chunk in resp.aiter_raw():
            raw += chunk
            if len(raw) > _MAX_ERROR_BODY:
                break
    except UpstreamError:
        pass  # keep what arrived; the status alone still says what happened
    etype: str | None = None
    message = f"upstream returned HTTP {resp.status_code}"
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        if isinstance(err.get("message"), str):
            message = err["message"]
        if isinstance(err.get("type"), str):
            etype = err["type"]
    status = resp.status_code
    if status == 529 and openai:
        status = 503  # OpenAI clients know 503 as "overloaded, retry"
    elif status < 400 or status > 599:
        status = 502
    passed = [(k.lower(), v) for k, v in resp.raw_headers if PASSED_BACK.match(k.lower())]
    return ProxyError(status, message, type=etype, headers=passed)
