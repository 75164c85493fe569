"""What every proxied route needs: the caller's key, the request id, bounded JSON bodies, the
upstream headers, and upstream errors turned into ``ProxyError``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import itertools
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ..asgi import BodyNow, BodyTooLarge, Receive, Scope, header, read_body
from ..errors import ProxyError
from ..largebody import LargeBodies, Ticket, parse_large
from ..upstream import UpstreamError, UpstreamResponse, UpstreamTimeout

if TYPE_CHECKING:
    from ..config import Config
    from ..keys.model import VirtualKey

__all__ = [
    "PASSED_BACK",
    "REDACTED",
    "SSE_HEADERS",
    "Admission",
    "RequestContext",
    "held_secrets",
    "parse_json",
    "read_all",
    "redact",
    "redact_bytes",
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
# Request ids: "req_" and 32 hex digits, as before, but a random prefix per process and a
# counter instead of uuid4's getrandom call per request. Unique across workers and restarts
# (80 random bits); they only name a request, nothing is protected by guessing them.
_ID_PREFIX = os.urandom(10).hex()
_ID_SEQ = itertools.count()


def _new_request_id() -> str:
    return f"req_{_ID_PREFIX}{next(_ID_SEQ) & 0xFFFFFFFFFFFF:012x}"


def _reseed_request_ids() -> None:
    """A forked worker must not repeat its parent's (or a sibling's) ids."""
    global _ID_PREFIX, _ID_SEQ
    _ID_PREFIX = os.urandom(10).hex()
    _ID_SEQ = itertools.count()


os.register_at_fork(after_in_child=_reseed_request_ids)
_MAX_ERROR_BODY = 64 * 1024

Route = Literal["openai", "anthropic"]


class _Unparsed:
    """The body of a request not parsed yet (``RequestContext.read_json(parse=False)``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNPARSED"


UNPARSED: Any = _Unparsed()


def parse_json(raw: bytes, what: str, *, status: int = 400) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProxyError(
            status,
            f"{what} is not valid JSON: {exc}",
            type="invalid_request_error" if status == 400 else "api_error",
        ) from None


# Seconds a request may have waited in the worker before the check for a client that left
# yields loop turns (ctx.client_gone): beyond it the worker is busy, and under it the check costs
# nothing.
BUSY_S = 0.05


class RequestContext:
    """Per-request facts. The API key is held only here and in the upstream header list."""

    __slots__ = (
        "api_key",
        "arrived",
        "attempts",
        "body_now",
        "body_timeout",
        "extra_headers",
        "gone",
        "large",
        "max_body",
        "operator",
        "outcome",
        "raw_body",
        "request_id",
        "route",
        "scope",
        "ticket",
        "upstream_request_id",
        "vkey",
        "warnings",
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
        self.request_id = given.decode() if given and _SANE_ID.match(given) else _new_request_id()
        self.upstream_request_id: str | None = None
        self.x_cache: str | None = None  # HIT, MISS or BYPASS once the cache policy ran
        self.extra_headers: list[tuple[bytes, bytes]] = []  # e.g. the compression figures
        self.warnings: list[str] = []  # what Ferrule dropped or changed: x-ferrule-warning
        self.raw_body = b""
        self.api_key = _api_key(scope)
        self.operator = False  # the operator's key goes upstream (a pool may pick another)
        # a large body (ferrule.largebody): prepared in a thread, within the worker's budget
        self.large = False
        self.ticket: Ticket | None = None
        # the caller's virtual key (keys mode), set by admission
        self.vkey: VirtualKey | None = None
        # [True] once the server reported the client gone (App._until_disconnect's watcher)
        self.gone = [False]
        self.arrived = time.monotonic()
        # how a stream's relay sends a middle piece of the body (App._http: the server's own
        # send, past the app's bookkeeping); None: through the route's send
        self.body_now: BodyNow | None = None

    async def client_gone(self) -> bool:
        """Whether the client has left, asked just before the upstream call. A request that
        waited over ``BUSY_S`` sits in a busy worker, where a disconnect the server has seen
        takes a loop turn or two to reach the watcher: it yields those turns first (the native
        engine sends within the same loop turn, so the watcher's cancellation would come after
        the upstream already has the request)."""
        if not self.gone[0] and time.monotonic() - self.arrived > BUSY_S:
            await asyncio.sleep(0)  # the server's callback: the watcher is woken
            await asyncio.sleep(0)  # the watcher runs
        return self.gone[0]

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
            self.operator = True

    def tenant_source(self) -> str | None:
        """What the caller's tenant id (``ferrule.tenant``) is derived from: in keys mode the
        virtual key's name, so every key has its own response cache and kept thinking,
        unchanged by a rotation (names are never reused); else the key sent upstream."""
        if self.vkey is not None:
            return "ferrule-virtual-key\x00" + self.vkey.name
        return self.api_key

    def require_key(self) -> str:
        if not self.api_key:
            raise ProxyError(
                401,
                "no API key: send your Anthropic key as 'Authorization: Bearer <key>' or 'x-api-key'",
                type="authentication_error",
            )
        return self.api_key

    async def read_json(
        self, receive: Receive, large: LargeBodies | None = None, *, parse: bool = True
    ) -> Any:
        """The body, parsed. A large one (``large.threshold`` bytes or more) takes its share of
        the worker's budget first (before a byte of it is read, when its Content-Length gives
        its size), and is parsed in a thread, in bounded steps. ``parse=False``: a body that is
        not large is only read (``raw_body``) and :data:`UNPARSED` comes back; the route parses
        it (``parsed``) if it needs the objects."""
        declared = _declared_length(self.scope)
        if large is not None and declared >= large.threshold:
            self.ticket = await large.enter(declared)
        try:
            if sys.version_info >= (3, 11):
                # a timer on this task: wait_for would run the read in a task of its own
                # (paired A/B, ns-2k-c32: -1.0% CPU per request, within noise)
                async with asyncio.timeout(self.body_timeout):
                    raw = await read_body(self.scope, receive, self.max_body)
            else:
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
        if large is not None and len(raw) >= large.threshold:
            self.large = True
            if self.ticket is None:
                self.ticket = await large.enter(len(raw))
            body = await asyncio.to_thread(parse_large, raw)
            self.keep(body)
            return body
        if not parse:
            return UNPARSED
        return parse_json(raw, "the request body")

    def parsed(self, body: Any) -> Any:
        """``body`` from ``read_json``, parsed now if it was not then."""
        return parse_json(self.raw_body, "the request body") if body is UNPARSED else body

    def keep(self, value: Any) -> None:
        """A large request's big object, emptied in a thread when the request is over."""
        if self.ticket is not None:
            self.ticket.kept.append(value)

    def prepared(self) -> None:
        """The upstream payload is built (ferrule.largebody: the request's objects are set
        aside from garbage collection)."""
        if self.ticket is not None:
            self.ticket.prepared()

    def finish(self) -> list[Any]:
        """Give the budget back; what ``keep`` was given, for ``jsonbody.dismantle``."""
        if self.ticket is None:
            return []
        kept, self.ticket.kept = self.ticket.kept, []
        self.ticket.close()
        self.ticket = None
        return kept

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-request-id", self.request_id.encode())]
        if self.attempts:
            headers.append((b"x-ferrule-attempts", str(self.attempts).encode()))
        if self.x_cache:
            headers.append((b"x-cache", self.x_cache.encode()))
        headers.extend(self.extra_headers)
        if self.warnings:
            # one header; ASCII only (values name fields and model ids)
            text = "; ".join(self.warnings).encode("ascii", "replace")
            headers.append((b"x-ferrule-warning", text))
        if self.upstream_request_id:
            headers.append((b"x-upstream-request-id", self.upstream_request_id.encode()))
        return headers


def _declared_length(scope: Scope) -> int:
    value = header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else 0


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


async def read_all(resp: UpstreamResponse, limit: int = 0) -> bytes:
    """A whole non-streamed upstream body; a failure while reading is a 502/504, and so is a body
    over ``limit`` bytes (0: no limit), refused from its content-length when it gives one."""

    def too_large() -> ProxyError:
        return ProxyError(
            502,
            f"the upstream answer is larger than Ferrule's limit of {limit} bytes "
            "(max_response_bytes)",
            type="api_error",
        )

    declared = resp.headers.get("content-length", "")
    if limit and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large()
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in resp.aiter_raw():
            size += len(chunk)
            if limit and size > limit:
                raise too_large()
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    except UpstreamTimeout:
        raise ProxyError(
            504, "the upstream (Anthropic) stopped answering", type="timeout_error"
        ) from None
    except UpstreamError as exc:
        raise ProxyError(502, f"the upstream answer was cut off ({type(exc).__name__})") from None


async def upstream_error(
    resp: UpstreamResponse, *, openai: bool = True, secrets: Iterable[str] = ()
) -> ProxyError:
    """An upstream non-200 as a ProxyError keeping status (529 -> 503 for OpenAI clients),
    message and the headers the client needs to back off. A body that is not Anthropic's JSON
    (an intermediary's HTML page) is never passed on, and no key in ``secrets`` (see
    ``held_secrets``) is: an upstream that quotes the key it was given has it redacted."""
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
    secrets = tuple(secrets)
    message = redact(message, secrets)
    if etype is not None and redact(etype, secrets) != etype:
        etype = None
    status = resp.status_code
    if status == 529 and openai:
        status = 503  # OpenAI clients know 503 as "overloaded, retry"
    elif status < 400 or status > 599:
        status = 502
    passed = [
        (k.lower(), v)
        for k, v in resp.raw_headers
        if PASSED_BACK.match(k.lower()) and redact_bytes(v, secrets) == v
    ]
    return ProxyError(status, message, type=etype, headers=passed)


# -- keys never leave in an answer ------------------------------------------------------------

REDACTED = "[redacted]"
# Shorter "keys" are placeholders (a local test upstream's "k"), and replacing them everywhere
# would garble messages without protecting anything.
_MIN_SECRET = 8


def held_secrets(ctx: RequestContext, operator_key: str = "") -> tuple[str, ...]:
    """Every credential this request put in Ferrule's hands: the key sent upstream, what the
    caller presented (Bearer token, ``x-api-key``, ``x-ferrule-access-key``) and the operator's
    key; longest first, so that a key containing another is replaced whole. Only built on error
    paths."""
    found = {operator_key, ctx.api_key or "", _bearer(ctx.scope) or ""}
    for name in (b"x-api-key", b"x-ferrule-access-key"):
        value = header(ctx.scope, name)
        if value is not None:
            found.add(value.strip().decode("latin-1"))
    return tuple(sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret replaced by ``[redacted]``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    """``redact`` on raw bytes (an SSE event as the upstream sent it). The replacement holds no
    quote or backslash, so a JSON string stays valid."""
    for secret in secrets:
        raw = secret.encode("utf-8", "replace")
        if raw in data:
            data = data.replace(raw, REDACTED.encode())
    return data


# -- who may call the proxied routes -----------------------------------------------------------

# application/json or any +json type, with or without parameters (charset=utf-8). The media
# types a web page may POST without a CORS preflight (text/plain, form encodings) never match.
_JSON_TYPE = re.compile(rb"^[ \t]*application/(?:[a-z0-9.!#$&^_-]+\+)?json[ \t]*(?:;|$)", re.I)
_KNOWN_HOSTS_MAX = 64  # accepted Host values remembered per worker, so the check is one lookup


def _split(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


def _host_name(value: str) -> str | None:
    """The name in a Host value: port dropped, brackets of an IPv6 literal dropped, lower case,
    one trailing dot dropped; None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :]
        if end == -1 or (rest and not (rest[:1] == ":" and _is_port(rest[1:]))):
            return None
        return value[1:end] or None
    if value.count(":") > 1:
        return value  # a bare IPv6 literal: not valid in Host, but unambiguous
    name, sep, port = value.partition(":")
    if sep and not _is_port(port):
        return None
    name = name.removesuffix(".")
    return name or None


def _is_port(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 5


def _is_loopback_name(name: str) -> bool:
    """localhost, its subdomains (RFC 6761: never resolved through DNS by browsers) and loopback
    addresses (127/8, ::1, and ::ffff:127.x mapped)."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


class Admission:
    """Which requests the proxied routes take, decided from their headers before anything else
    (docs/reliability.md, D9-D11). A web page must never spend a key Ferrule holds:

    - a body declared as anything but JSON is a 415 (the types a page may POST without a CORS
      preflight are text/plain and the form encodings); with no content type at all the body is
      read as JSON unless Ferrule holds the operator's key, which then insists on it;
    - a request carrying an ``Origin`` (browsers send one on every POST) or ``sec-fetch-site:
      cross-site``/``same-site`` is a 403 unless the origin is in ``allowed_origins``;
    - when Ferrule holds the operator's key on a loopback bind (or ``allowed_hosts`` is set), a
      Host that is not a loopback name, the bind address or an allowed name is a 421: that is
      what a DNS-rebinding page sends. ``allowed_hosts = "*"`` turns the check off.

    Server-to-server clients send neither Origin nor a foreign Host, so none of this touches them.
    """

    __slots__ = (
        "_any_origin",
        "_check_host",
        "_domains",
        "_hosts",
        "_known",
        "_origins",
        "_require_type",
    )

    def __init__(self, cfg: Config) -> None:
        hosts = _split(cfg.allowed_hosts)
        holds_key = bool(cfg.upstream_api_key)
        bind = _host_name(cfg.host) or ""
        self._check_host = "*" not in hosts and (
            bool(hosts) or (holds_key and _is_loopback_name(bind))
        )
        names = {_host_name(h.removeprefix("*")) for h in hosts if h != "*"}
        if bind not in ("0.0.0.0", "::"):
            names.add(bind)
        # ".corp.example" (or "*.corp.example") allows the domain and its subdomains
        self._domains = tuple(n for n in names if n and n.startswith("."))
        self._hosts = frozenset(n for n in names if n and not n.startswith("."))
        self._known: set[bytes] = set()
        origins = _split(cfg.allowed_origins)
        self._any_origin = "*" in origins
        self._origins = frozenset(o.rstrip("/") for o in origins)
        self._require_type = holds_key

    def check(self, scope: Scope) -> None:
        host = origin = ctype = site = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"content-type":
                ctype = value
            elif name == b"sec-fetch-site":
                site = value
        if self._check_host and host is not None and (host := bytes(host)) not in self._known:
            self._check_host_value(host)
        if origin is not None or site in (b"cross-site", b"same-site"):
            self._check_origin(origin)
        if ctype is None:
            if self._require_type:
                raise _unsupported("none given")
        elif not _JSON_TYPE.match(ctype):
            raise _unsupported(f"got {_shown(ctype)!r}")

    def _check_host_value(self, host: bytes) -> None:
        name = _host_name(host.decode("latin-1"))
        ok = name is not None and (
            name in self._hosts
            or _is_loopback_name(name)
            or any(name == d[1:] or name.endswith(d) for d in self._domains)
        )
        if not ok:
            raise ProxyError(
                421,
                f"Host {_shown(host)!r} is not a name this Ferrule answers to (a web page that "
                "reached it through DNS rebinding sends such a Host); if your clients really "
                "call it so, add the name to allowed_hosts (FERRULE_ALLOWED_HOSTS)",
                code="host_not_allowed",
            )
        if len(self._known) < _KNOWN_HOSTS_MAX:
            self._known.add(host)

    def _check_origin(self, origin: bytes | None) -> None:
        if self._any_origin:
            return
        if origin is not None and origin.decode("latin-1").strip().lower() in self._origins:
            return
        shown = f"origin {_shown(origin)!r}" if origin is not None else "a cross-site request"
        raise ProxyError(
            403,
            f"requests from web pages are refused ({shown}): a page must never spend a key "
            "Ferrule holds; to let one through, add its origin to allowed_origins "
            "(FERRULE_ALLOWED_ORIGINS)",
            type="permission_error",
            code="origin_not_allowed",
        )


def _shown(value: bytes) -> str:
    """A header value for an error message: decoded, and short."""
    text = value.decode("latin-1")
    return text if len(text) <= 100 else text[:100] + "..."


def _unsupported(given: str) -> ProxyError:
    return ProxyError(
        415,
        f"the request body must be sent as content-type: application/json ({given})",
        code="unsupported_media_type",
    )
