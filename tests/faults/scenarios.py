"""Scenarios: how the fake answers one request. Each is a small frozen dataclass with a ``run``
coroutine; the lower-case constructors (``ok()``, ``status(429, ...)``, ``reset_after(3)``…) are the
public API, and ``to_json``/``scenario_from_json`` carry them over the control endpoint.

Counting convention: ``k`` in ``reset_after(k)``, ``stall_after(k, s)``, ``truncated_eof(k)`` and
``sse_error(after=k)`` is a number of events of the ``ok`` stream (``message_start`` is event 1,
``content_block_start`` 2, ``ping`` 3, then one ``content_block_delta`` per word), so a test knows
exactly what the proxy received before the fault.

Every scenario is bounded: ``budget_s()`` is the most it may take (the server enforces it, capped by
its ``hard_limit_s``), and the open-ended ones (``drip``, ``infinite``, ``huge_event``,
``ping_only``) stop on their own ``total_s``/``max_s``/``seconds``.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import dataclasses
import itertools
import json as jsonlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from . import wire
from .aio import MAX_WAIT, run_within

if TYPE_CHECKING:
    from .server import Exchange

__all__ = [
    "Scenario",
    "ScenarioLike",
    "api_error",
    "drip",
    "echo",
    "garbage",
    "html_502",
    "huge_event",
    "infinite",
    "ok",
    "overloaded",
    "ping_only",
    "rate_limited",
    "reset_after",
    "reset_before_headers",
    "scenario_from_json",
    "sse_error",
    "stall_after",
    "stall_before_headers",
    "status",
    "to_scenario",
    "truncated_eof",
    "unknown_event",
]

MiB = 1024 * 1024
_SLACK = 30.0  # room for a slow reader on top of a scenario's own pacing


class Scenario(abc.ABC):
    """One way of answering a request; ``kind`` names it in records and over JSON."""

    kind: ClassVar[str]
    registry: ClassVar[dict[str, type[Scenario]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Scenario.registry[cls.kind] = cls

    @abc.abstractmethod
    async def run(self, ex: Exchange) -> None:
        """Answer ``ex.request`` through ``ex``; raising ``ClientGone`` is how it is interrupted."""

    def budget_s(self) -> float:
        """The longest this scenario may run before the server cuts it (``timeout`` outcome)."""
        return _SLACK

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = (
                {"$b64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value
            )
        return out


ScenarioLike = Scenario | int | str | dict[str, Any]


def scenario_from_json(spec: Any) -> Scenario:
    """A scenario from its JSON form: ``{"kind": "status", "code": 429, ...}``; an int is
    ``status(code)`` and a bare string is that kind with its defaults (``"reset_before_headers"``)."""
    if isinstance(spec, bool):
        raise TypeError("a scenario is an object, an int status or a kind name")
    if isinstance(spec, int):
        return status(spec)
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict) or "kind" not in spec:
        raise TypeError(f"not a scenario spec: {spec!r}")
    cls = Scenario.registry.get(spec["kind"])
    if cls is None:
        raise KeyError(f"unknown scenario kind {spec['kind']!r}")
    kwargs = {
        k: base64.b64decode(v["$b64"]) if isinstance(v, dict) and set(v) == {"$b64"} else v
        for k, v in spec.items()
        if k != "kind"
    }
    body: Any = kwargs.get("body")
    if cls is Status and isinstance(body, str):  # hand-written JSON may give the body as text
        kwargs["body"] = body.encode()
    return cls(**kwargs)


def to_scenario(value: ScenarioLike) -> Scenario:
    return value if isinstance(value, Scenario) else scenario_from_json(value)


def _events_for(ex: Exchange, k: int) -> list[bytes]:
    """The first ``k`` events of an ``ok`` stream long enough to have them."""
    return wire.ok_events(ex.body_json, max(5, k))[:k]


def _endless(body: dict[str, Any]) -> Iterator[bytes]:
    """A valid stream that never finishes: the head of ``ok``, then text deltas forever."""
    yield from wire.ok_events(body, 0)[:3]
    for word in itertools.cycle(wire.words(20)[1:]):
        yield wire.delta_event(0, word)


# -- success ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ok(Scenario):
    kind: ClassVar[str] = "ok"
    n: int = 5
    interval: float = 0.0
    usage: dict[str, Any] | None = None
    as_json: bool | None = None
    stop_reason: str = "end_turn"

    async def run(self, ex: Exchange) -> None:
        stream = ex.wants_stream if self.as_json is None else not self.as_json
        if stream:
            await ex.sse_head()
            events = wire.ok_events(ex.body_json, self.n, self.usage, stop_reason=self.stop_reason)
            await ex.events(events, self.interval)
            await ex.end()
            return
        await ex.sleep(self.n * self.interval)  # the model "thinks" as long as the stream would
        message = wire.message_json(ex.body_json, self.n, self.usage, self.stop_reason)
        await ex.respond(200, jsonlib.dumps(message).encode())

    def budget_s(self) -> float:
        return self.n * self.interval + _SLACK


def ok(
    n: int = 5,
    interval: float = 0.0,
    usage: dict[str, Any] | None = None,
    json: bool | None = None,
    stop_reason: str = "end_turn",
) -> Ok:
    """A valid answer of ``n`` words: SSE when the body says ``"stream": true``, else a JSON
    message (``json=True``/``False`` forces one). ``interval`` paces each delta (for JSON, the
    whole wait happens before the body). ``usage`` overrides the final usage fields."""
    return Ok(n, interval, usage, json, stop_reason)


@dataclass(frozen=True)
class Echo(Scenario):
    kind: ClassVar[str] = "echo"

    async def run(self, ex: Exchange) -> None:
        req = ex.request
        payload = {
            "method": req.method,
            "path": req.path,
            "headers": req.headers,
            "body": req.body.decode("utf-8", "replace"),
            "body_b64": base64.b64encode(req.body).decode(),
            "json": req.json(),
        }
        await ex.respond(200, jsonlib.dumps(payload).encode())


def echo() -> Echo:
    """200 JSON describing the request as received (method, path, headers, body, parsed json),
    to check what the proxy forwards (headers stripped, bytes unchanged)."""
    return Echo()


@dataclass(frozen=True)
class UnknownEvent(Scenario):
    kind: ClassVar[str] = "unknown_event"
    n: int = 3
    name: str = "future_thing"

    async def run(self, ex: Exchange) -> None:
        extra = wire.event(self.name, {"type": self.name, "detail": {"added": "later"}})
        await ex.sse_head()
        await ex.events(wire.ok_events(ex.body_json, self.n, extra={"content_block_start": extra}))
        await ex.end()


def unknown_event(n: int = 3, name: str = "future_thing") -> UnknownEvent:
    """A valid ``ok`` stream with ``event: <name>`` after ``content_block_start`` (new event types
    must be tolerated, per Anthropic's versioning policy)."""
    return UnknownEvent(n, name)


# -- error statuses -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Status(Scenario):
    kind: ClassVar[str] = "status"
    code: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str | None = None
    error_type: str | None = None
    message: str | None = None

    async def run(self, ex: Exchange) -> None:
        rid = wire.request_id()
        html = self.content_type is not None and "html" in self.content_type
        if self.body is not None:
            body = self.body
        elif html or (self.content_type is None and self.code in (502, 503)):
            body, html = wire.html_page(self.code), True
        else:
            body = wire.error_body(
                self.error_type or wire.error_type_for(self.code), self.message, rid
            )
        ctype = self.content_type or ("text/html" if html else wire.JSON_TYPE)
        headers = list(self.headers.items())
        if "request-id" not in {k.lower() for k in self.headers}:
            headers.insert(0, ("request-id", rid))
        await ex.respond(self.code, body, ctype, headers)


def status(
    code: int,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    content_type: str | None = None,
    *,
    error_type: str | None = None,
    message: str | None = None,
) -> Status:
    """A complete non-200 answer. By default the body is Anthropic's error envelope with the type
    for ``code`` (429 rate_limit_error, 529 overloaded_error, 500 api_error…); 502/503 (or any
    ``content_type`` with "html") get the HTML page an intermediary sends instead."""
    return Status(code, dict(headers or {}), body, content_type, error_type, message)


def rate_limited(retry_after: float | str = 2, **headers: str) -> Status:
    """429 ``rate_limit_error`` with ``retry-after`` (and any extra headers)."""
    return status(429, {"retry-after": str(retry_after), **headers})


def overloaded() -> Status:
    """529 ``overloaded_error``."""
    return status(529)


def api_error() -> Status:
    """500 ``api_error``."""
    return status(500)


def html_502() -> Status:
    """502 with an HTML page (what Cloudflare sends), never JSON."""
    return status(502)


# -- connection faults --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetBeforeHeaders(Scenario):
    kind: ClassVar[str] = "reset_before_headers"

    async def run(self, ex: Exchange) -> None:
        ex.reset()

    def budget_s(self) -> float:
        return 5.0


def reset_before_headers() -> ResetBeforeHeaders:
    """Read the whole request, then RST (SO_LINGER 0): the request reached the upstream, no
    response byte came back."""
    return ResetBeforeHeaders()


@dataclass(frozen=True)
class ResetAfter(Scenario):
    kind: ClassVar[str] = "reset_after"
    k: int = 3
    interval: float = 0.0
    grace: float = 0.05

    async def run(self, ex: Exchange) -> None:
        await ex.sse_head()
        await ex.events(_events_for(ex, self.k), self.interval)
        await ex.sleep(self.grace)  # let the k events reach the client before the RST
        ex.reset()

    def budget_s(self) -> float:
        return self.k * self.interval + self.grace + _SLACK


def reset_after(k: int, interval: float = 0.0, grace: float = 0.05) -> ResetAfter:
    """200, the first ``k`` events of an ``ok`` stream, then RST after ``grace`` seconds."""
    return ResetAfter(k, interval, grace)


@dataclass(frozen=True)
class StallBeforeHeaders(Scenario):
    kind: ClassVar[str] = "stall_before_headers"
    seconds: float = 5.0
    then_ok: bool = False

    async def run(self, ex: Exchange) -> None:
        await ex.sleep(min(self.seconds, MAX_WAIT))
        if self.then_ok:
            await Ok().run(ex)
        else:
            ex.close()

    def budget_s(self) -> float:
        return self.seconds + (_SLACK if self.then_ok else 1.0)


def stall_before_headers(seconds: float, then_ok: bool = False) -> StallBeforeHeaders:
    """Read the request and say nothing for ``seconds`` (``math.inf`` = until the hard limit),
    then close (FIN), or answer ``ok()`` with ``then_ok``."""
    return StallBeforeHeaders(seconds, then_ok)


@dataclass(frozen=True)
class StallAfter(Scenario):
    kind: ClassVar[str] = "stall_after"
    k: int = 3
    seconds: float = 5.0
    resume: bool = False

    async def run(self, ex: Exchange) -> None:
        events = wire.ok_events(ex.body_json, max(5, self.k))
        await ex.sse_head()
        await ex.events(events[: self.k])
        await ex.sleep(min(self.seconds, MAX_WAIT))
        if self.resume:
            await ex.events(events[self.k :])
            await ex.end()
        else:
            ex.close()

    def budget_s(self) -> float:
        return self.seconds + _SLACK


def stall_after(k: int, seconds: float, resume: bool = False) -> StallAfter:
    """200 and ``k`` events, then silence for ``seconds``; then FIN mid-body, or the rest of the
    stream with ``resume``."""
    return StallAfter(k, seconds, resume)


@dataclass(frozen=True)
class TruncatedEof(Scenario):
    kind: ClassVar[str] = "truncated_eof"
    k: int = 5
    framing: Literal["chunked", "eof", "cut"] = "chunked"

    async def run(self, ex: Exchange) -> None:
        if self.framing == "eof":
            await ex.head(
                200,
                [("content-type", wire.SSE_TYPE), ("cache-control", "no-cache")],
                framing="close",
            )
        else:
            await ex.sse_head(close=True)
        await ex.events(_events_for(ex, self.k))
        if self.framing == "chunked":
            await ex.end()
        ex.close()

    def budget_s(self) -> float:
        return _SLACK


def truncated_eof(
    k: int = 5, framing: Literal["chunked", "eof", "cut"] = "chunked"
) -> TruncatedEof:
    """200, ``k`` events, then a clean FIN with no ``message_stop``. ``framing``: ``chunked`` ends
    the chunked body properly (HTTP sees a complete response: only the SSE is truncated);
    ``eof`` sends no length and ends the body by closing; ``cut`` closes mid chunked body."""
    return TruncatedEof(k, framing)


# -- stream content faults ----------------------------------------------------------------------


@dataclass(frozen=True)
class SseError(Scenario):
    kind: ClassVar[str] = "sse_error"
    error_type: str = "overloaded_error"
    after: int = 2
    message: str | None = None

    async def run(self, ex: Exchange) -> None:
        await ex.sse_head()
        await ex.events(_events_for(ex, self.after))
        await ex.body(wire.error_event(self.error_type, self.message))
        await ex.end()


def sse_error(
    type: str = "overloaded_error", after: int = 2, message: str | None = None
) -> SseError:
    """200, ``after`` events, then ``event: error`` with that error type, then the end of the body
    (what the API does when it fails after the headers went out)."""
    return SseError(type, after, message)


@dataclass(frozen=True)
class Garbage(Scenario):
    kind: ClassVar[str] = "garbage"

    async def run(self, ex: Exchange) -> None:
        body = ex.body_json
        head = wire.ok_events(body, 1)
        pieces = [
            head[0],
            b"\xff\xfe\xfd not utf-8 \xc3\x28 at all\n\n",
            # broken JSON in a data line
            b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "del\n\n',
            b"data: this is not json\n\n",
            # two events with no blank line between them
            wire.delta_event(0, "glued").rstrip(b"\n") + b"\n" + wire.delta_event(0, "together"),
            b"event: \x80\x81\ndata: \xc0\xaf\xed\xa0\x80\n\n",
            b'data: {"type": "message_delta", "usage": {"output_tokens": "many"}}\n\n',
        ]
        await ex.sse_head(close=True)
        for piece in pieces:
            await ex.body(piece)
        await ex.end()


def garbage() -> Garbage:
    """200 SSE that goes bad after ``message_start``: non-UTF-8 bytes, ``data:`` lines with broken
    JSON, two events without the blank line between them, no ``message_stop``; then close."""
    return Garbage()


@dataclass(frozen=True)
class HugeEvent(Scenario):
    kind: ClassVar[str] = "huge_event"
    mb: float = 64.0
    chunk_kib: int = 64
    max_s: float = 10.0

    async def run(self, ex: Exchange) -> None:
        await ex.sse_head(close=True)
        try:
            await run_within(self._pump(ex), self.max_s)
            await ex.end()  # all of it went out: HTTP framing is fine, the SSE line never ends
        except TimeoutError:
            pass  # a client that stops reading blocks the writes: give up and close
        ex.close()

    async def _pump(self, ex: Exchange) -> None:
        await ex.events(wire.ok_events(ex.body_json, 1)[:2])
        await ex.body(
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"'
        )
        left = int(self.mb * MiB)
        chunk = b"a" * (self.chunk_kib * 1024)
        while left > 0:
            piece = chunk[: min(left, len(chunk))]
            await ex.body(piece)
            left -= len(piece)

    def budget_s(self) -> float:
        return self.max_s + 2.0


def huge_event(mb: float = 64.0, chunk_kib: int = 64, max_s: float = 10.0) -> HugeEvent:
    """200 SSE, then one ``data:`` line of ``mb`` MiB that never ends (no newline), written in
    ``chunk_kib`` chunks; stops after the size or ``max_s`` (a client that stops reading blocks
    the writes), then closes."""
    return HugeEvent(mb, chunk_kib, max_s)


@dataclass(frozen=True)
class Infinite(Scenario):
    kind: ClassVar[str] = "infinite"
    interval: float = 0.01
    max_s: float = 10.0

    async def run(self, ex: Exchange) -> None:
        await ex.sse_head()
        with contextlib.suppress(TimeoutError):
            await run_within(self._pump(ex), self.max_s)
        ex.close()

    async def _pump(self, ex: Exchange) -> None:
        for raw in _endless(ex.body_json):
            if raw.startswith(b"event: content_block_delta"):
                await ex.sleep(self.interval)
            await ex.body(raw)

    def budget_s(self) -> float:
        return self.max_s + 2.0


def infinite(interval: float = 0.01, max_s: float = 10.0) -> Infinite:
    """Valid text deltas every ``interval`` seconds that never reach ``message_stop``; after
    ``max_s`` the fake closes mid-body, so no test can hang on it."""
    return Infinite(interval, max_s)


@dataclass(frozen=True)
class Drip(Scenario):
    kind: ClassVar[str] = "drip"
    bytes_per_s: float = 1.0
    total_s: float = 5.0
    n: int | None = None

    async def run(self, ex: Exchange) -> None:
        await ex.sse_head()
        source = (
            iter(wire.ok_events(ex.body_json, self.n))
            if self.n is not None
            else _endless(ex.body_json)
        )
        start = time.monotonic()
        sent = 0
        for raw in source:
            for byte in raw:
                due = start + sent / self.bytes_per_s
                if due - start >= self.total_s:
                    ex.close()
                    return
                await ex.sleep(due - time.monotonic())
                await ex.body(bytes([byte]))
                sent += 1
        await ex.end()

    def budget_s(self) -> float:
        return self.total_s + 2.0


def drip(bytes_per_s: float = 1.0, total_s: float = 5.0, n: int | None = None) -> Drip:
    """A valid stream dribbled one byte per chunk at ``bytes_per_s`` (never idle, never done):
    endless deltas by default, or a complete ``ok(n)`` stream; closes after ``total_s``."""
    return Drip(bytes_per_s, total_s, n)


@dataclass(frozen=True)
class PingOnly(Scenario):
    kind: ClassVar[str] = "ping_only"
    seconds: float = 3.0
    interval: float = 0.5
    finish: bool = True

    async def run(self, ex: Exchange) -> None:
        events = wire.ok_events(ex.body_json, 3)
        await ex.sse_head()
        await ex.body(events[0])
        end = time.monotonic() + self.seconds
        while (left := end - time.monotonic()) > 0:
            await ex.sleep(min(self.interval, left))
            await ex.body(wire.event("ping", {"type": "ping"}))
        if self.finish:
            await ex.events(events[1:])
            await ex.end()
        else:
            ex.close()

    def budget_s(self) -> float:
        return self.seconds + _SLACK


def ping_only(seconds: float = 3.0, interval: float = 0.5, finish: bool = True) -> PingOnly:
    """``message_start``, then only ``event: ping`` every ``interval`` for ``seconds`` (a live but
    silent model: an idle timeout must not fire); then the rest of a 3-word answer, or FIN mid-body
    when ``finish`` is false."""
    return PingOnly(seconds, interval, finish)
