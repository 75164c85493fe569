"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic dialect of the pipeline.

Byte-faithful: the client's body goes upstream unchanged (unless Ferrule compresses it or adds
prompt-cache breakpoints on purpose) and Anthropic's answer (JSON or SSE) comes back unchanged,
with ``request-id``, ``anthropic-ratelimit-*`` and ``retry-after``. Upstream errors keep their
status (529 stays 529 for Anthropic clients) in Anthropic's envelope; errors Ferrule itself raises
use the same envelope (rendered by ``ferrule.app``). A stream that fails after its first byte ends
with an Anthropic ``event: error``, the way the API itself reports one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .. import backend
from ..asgi import Send
from ..cache import message_to_sse
from ..errors import ProxyError
from ..exchange import Exchange
from ..largebody import prepare
from ..limits import check_anthropic_body
from ..pipeline import Prepared, anthropic_version_of, run
from ..upstream import UpstreamResponse
from .common import PASSED_BACK, RequestContext, held_secrets, redact_bytes

if TYPE_CHECKING:
    from ..services import Services

__all__ = ["COUNT_TOKENS", "MESSAGES", "count_tokens", "messages"]

# Response headers from Anthropic that an Anthropic client reads.
_KEEP = (b"content-type", b"request-id")


def _upstream_headers(
    raw: Sequence[tuple[bytes, bytes]], own: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The upstream's headers an Anthropic client reads, but none Ferrule sets itself: a
    virtual key's own ``anthropic-ratelimit-*`` replace the operator account's."""
    mine = {k for k, _ in own}
    out = []
    for k, v in raw:
        name = k.lower()
        if (name in _KEEP or PASSED_BACK.match(name)) and name not in mine:
            out.append((name, v))
    return out


def _error_event(message: str, etype: str = "api_error") -> bytes:
    data = orjson.dumps({"type": "error", "error": {"type": etype, "message": message}})
    return b"event: error\ndata: " + data + b"\n\n"


class _MessagesRelay:
    """Relay an Anthropic stream byte for byte, in whole events, and end it honestly.

    The usage tap (a StreamTranslator whose OpenAI output is discarded) reads usage and the end
    state, and enforces the per-event limit as on the OpenAI route. Bytes go out only up to the
    end of the last whole event: an event still arriving is held back, so that when the stream
    fails (cut off, an event over the limit, the deadline) the client never gets half an event
    glued to the ``event: error`` that ends it. Every way the stream can fail ends with exactly
    one error event: Anthropic's own, or Ferrule's."""

    __slots__ = ("_held", "_max", "_secrets", "_tail", "_tap", "complete", "lazy_start", "stop")

    def __init__(self, svc: Services, ctx: RequestContext) -> None:
        self._max = svc.cfg.max_event_bytes
        self._tap = backend.StreamTranslator("", 0, max_event_bytes=self._max)
        self._held = _Held()
        self._secrets = held_secrets(ctx, svc.cfg.upstream_api_key)
        self._tail: bytes | None = None  # an end Ferrule decided while feeding
        # The response starts at once, as the upstream's did (a client sees its 200 even when
        # the events are slow to come); so its compression headers go out before the prompt's
        # size is known: the saved figure alone.
        self.lazy_start = False
        self.stop = False
        self.complete = False

    @property
    def usage(self) -> tuple[int, int, int, int, int, int]:
        return self._tap.usage

    def headers(self) -> list[tuple[bytes, bytes]]:
        return []  # the upstream's own content type and ids (answer_headers)

    def feed(self, chunk: bytes) -> bytes:
        tap, held = self._tap, self._held
        if tap.done:
            # message_stop went out: pass on whatever follows (after what was held back) and
            # read to the end, so the upstream connection goes back to the pool
            if held.parts:
                chunk = b"".join((*held.parts, chunk))
                held.parts, held.size = [], 0
            return chunk
        tap.feed(chunk)
        if tap.done and tap.outcome != "complete":
            self.stop = True
            if tap.outcome == "upstream_error":
                # Anthropic's own error event: it goes out (whole, no key in it), and ends the
                # stream; nothing after it is read.
                return redact_bytes(held.take(chunk), self._secrets)
            return b""  # a stream the tap cannot read: this chunk is not relayed
        if tap.done:
            self.complete = True
        # Fast path: Anthropic's chunks usually end on an event boundary.
        out = chunk if not held.parts and chunk.endswith(b"\n\n") else held.take(chunk)
        if held.size > self._max:
            # an "event" of comment or field lines only, which the tap does not count
            self.stop = True
            self._tail = _error_event(f"SSE event larger than {self._max} bytes")
            return b""
        return out

    def early_error(self) -> ProxyError | None:
        return None  # the response started at once: errors are events

    def finish(self) -> bytes:
        tap = self._tap
        tap.finish()  # no-op once done: otherwise the stream ended before message_stop
        self.complete = tap.outcome == "complete"
        if self._tail is not None:
            return self._tail
        if self.complete:
            return b"".join(self._held.parts)  # byte-faithful to the end
        if tap.outcome == "upstream_error":
            return b""  # Anthropic's error event already went out
        # cut off before message_stop, or unreadable (an event over the limit): the client must
        # not take it for a finished answer (the OpenAI route does the same)
        etype, message = tap.error or ("api_error", "")
        if tap.outcome == "truncated":
            # NOTE: worded without the literal event name, so that a client searching the body
            # for "message_stop" (to tell a finished stream) is not misled
            message = "the upstream stream ended before the message was finished (truncated)"
        return _error_event(message, etype)

    def fail(self, message: str, etype: str) -> bytes:
        self._tap.finish()
        self.complete = False
        return _error_event(message, etype)

    def outcome(self) -> str | None:
        if self._tail is not None:
            return "upstream_error"
        if self._tap.outcome == "complete":
            return None
        return "truncated" if self._tap.outcome == "truncated" else "upstream_error"


class MessagesDialect:
    """``/v1/messages`` (``count_tokens=False``) and ``/v1/messages/count_tokens``."""

    def __init__(self, path: str, *, count_tokens: bool = False) -> None:
        self.route = path
        self._count_tokens = count_tokens

    async def prepare(self, svc: Services, ctx: RequestContext, body: Any) -> Prepared:
        if not isinstance(body, dict):
            raise ProxyError(400, "the request body must be a JSON object")
        await prepare(ctx.large, check_anthropic_body, body, ctx.raw_body)  # model, ids, depth
        model = body.get("model")
        stream = body.get("stream") is True and not self._count_tokens
        return Prepared(
            body=body,
            model=model if isinstance(model, str) else "",
            stream=stream,
            path=self.route,
            faithful=ctx.raw_body,
            cacheable=not self._count_tokens,
            openai_errors=False,
            anthropic_version=anthropic_version_of(ctx),
        )

    async def restore(self, svc: Services, ctx: RequestContext, ex: Exchange, p: Prepared) -> None:
        return None  # Anthropic clients send their thinking blocks back themselves

    def hit(
        self, p: Prepared, message: dict[str, Any], ctx: RequestContext
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        headers = [*ctx.response_headers(), (b"request-id", ctx.request_id.encode())]
        if p.stream:
            return message_to_sse(message), b"text/event-stream", headers
        return orjson.dumps(message), b"application/json", headers

    def answer(self, p: Prepared, raw: bytes, message: dict[str, Any] | None) -> bytes:
        return raw  # byte for byte

    def translate_answer(
        self, svc: Services, ex: Exchange, p: Prepared, raw: bytes
    ) -> tuple[bytes, tuple[int, int, int, int, int, int]] | None:
        counts = backend.answer_usage(raw)  # relayed byte for byte: only its usage is read
        return (raw, counts) if counts is not None else None

    def relay(self, svc: Services, ctx: RequestContext, p: Prepared) -> _MessagesRelay:
        return _MessagesRelay(svc, ctx)

    def answer_headers(
        self, p: Prepared, resp: UpstreamResponse, ctx: RequestContext
    ) -> list[tuple[bytes, bytes]]:
        own = ctx.response_headers()
        out = _upstream_headers(resp.raw_headers, own)
        out.extend(own)
        return out

    async def finished(self, svc: Services, ex: Exchange, p: Prepared, message: Any) -> None:
        return None


MESSAGES = MessagesDialect("/v1/messages")
COUNT_TOKENS = MessagesDialect("/v1/messages/count_tokens", count_tokens=True)


async def messages(svc: Services, ctx: RequestContext, body: Any, send: Send) -> None:
    await run(svc, ctx, MESSAGES, body, send)


async def count_tokens(svc: Services, ctx: RequestContext, body: Any, send: Send) -> None:
    await run(svc, ctx, COUNT_TOKENS, body, send)


class _Held:
    """The start of an event whose end has not arrived yet (bounded by the tap's event limit)."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def take(self, chunk: bytes) -> bytes:
        """The held bytes and ``chunk`` up to the end of the last whole event in them; the rest
        is held. An event ends with a blank line: two line ends in a row, which in any mix of
        CR, LF and CRLF always shows "\\n\\n", "\\r\\r" or "\\n\\r"."""
        cut = max(chunk.rfind(b"\n\n"), chunk.rfind(b"\r\r"), chunk.rfind(b"\n\r")) + 2
        if cut < 2:
            cut = 1 if self.parts and _straddles(self.parts[-1], chunk) else 0
        if not cut:
            self.parts.append(chunk)
            self.size += len(chunk)
            return b""
        out = b"".join((*self.parts, chunk[:cut])) if self.parts else chunk[:cut]
        rest = chunk[cut:]
        self.parts = [rest] if rest else []
        self.size = len(rest)
        return out


def _straddles(before: bytes, chunk: bytes) -> bool:
    """Whether a blank line spans the two chunks (one line end at each side; CR then LF is one
    line end, not two)."""
    last, first = before[-1:], chunk[:1]
    return last in (b"\n", b"\r") and first in (b"\n", b"\r") and (last, first) != (b"\r", b"\n")
