"""Native (Rust) kernels. The contract: every name here has a pure-Python twin in
``ferrule._pure`` with the same signature and byte-identical output. Import via ``ferrule.backend``.
"""

from collections.abc import Callable, Mapping
from typing import Any, final

from typing_extensions import disjoint_base

from ferrule._pure.chat_request import Facts, FileTools, Prepared
from ferrule.translate.responses_request import ResponsesTranslated
from ferrule.translate.responses_response import Seals

__all__ = [
    "AllowanceMeter",
    "ChatRequests",
    "Compressor",
    "ResponsesStreamEncoder",
    "SseDecoder",
    "SseError",
    "StreamTranslator",
    "UpstreamEngine",
    "answer_to_openai",
    "answer_usage",
    "rate_headers",
]

@disjoint_base
class Compressor:
    """Compress the content blocks of one request, in order; see ``ferrule._pure.compress``.

    ``mode``: ``"off"``, ``"lossless"`` or ``"aggressive"``; ``cut_at`` (aggressive mode): the
    size in characters above which a tool output is cut to a head and a tail (at least 1000).
    ``compress(text, kind, ref)``: ``kind`` is ``"tool_result"``, ``"file"`` or ``"text"``;
    ``ref`` names this block in the pointer that a later identical block becomes. Returns the
    same object when nothing changed. Bad modes, kinds and ``cut_at`` raise ``ValueError``.
    NOTE: a ``text`` with lone surrogates raises ``UnicodeEncodeError`` here (not in the twin);
    request bodies parsed by orjson never contain them.
    """

    def __new__(cls, mode: str, *, cut_at: int = 24000) -> Compressor: ...
    def compress(self, text: str, kind: str, ref: str) -> str: ...

class SseError(ValueError):
    """An SSE stream broke a configured size limit.

    ``events`` holds the ``(event, data, id)`` events the chunk completed before the breach.
    """

    events: list[tuple[str, str, str]]

@disjoint_base
class SseDecoder:
    """Incremental WHATWG SSE decoder: ``feed(bytes)`` returns complete ``(event, data, id)``."""

    retry: int | None
    def __new__(cls, *, max_line_bytes: int = 0, max_event_bytes: int = 0) -> SseDecoder: ...
    def feed(self, chunk: bytes) -> list[tuple[str, str, str]]: ...

@disjoint_base
class StreamTranslator:
    """Anthropic SSE bytes in, OpenAI chat.completion.chunk SSE bytes out."""

    def __new__(
        cls,
        model: str,
        created: int,
        *,
        include_usage: bool = False,
        max_event_bytes: int = 0,
        json_tool: str | None = None,
    ) -> StreamTranslator: ...
    @property
    def started(self) -> bool: ...
    @property
    def done(self) -> bool: ...
    @property
    def outcome(self) -> str: ...
    @property
    def error(self) -> tuple[str, str] | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def usage(self) -> tuple[int, int, int, int, int, int]: ...
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...

@disjoint_base
class ResponsesStreamEncoder:
    """Anthropic SSE bytes in, OpenAI Responses SSE (``event:`` + ``data:``) bytes out.

    The rules are ``ferrule._pure.responses_stream``'s. ``sealer.seal`` is called during
    ``feed`` (an error it raises comes out of ``feed``); ``tr``'s ``model``, ``summary``,
    ``compact``, ``json_tool``, ``tools`` and ``echo`` are read once, here.
    """

    def __new__(
        cls,
        tr: ResponsesTranslated,
        *,
        response_id: str,
        created_at: int,
        sealer: Seals,
        tenant: str,
        max_event_bytes: int = 0,
    ) -> ResponsesStreamEncoder: ...
    @property
    def started(self) -> bool: ...
    @property
    def done(self) -> bool: ...
    @property
    def outcome(self) -> str: ...
    @property
    def error(self) -> tuple[str, str] | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def usage(self) -> tuple[int, int, int, int, int, int]: ...
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...
    def fail(self, message: str, etype: str = "api_error") -> bytes: ...

@final
class AllowanceMeter:
    """A worker's allowance, per request: admit from the grant (with the answer's rate-limit
    headers), settle into it. The rules are ``ferrule._pure.meter``'s."""

    def __new__(
        cls,
        requests: int | None,
        tokens: int | None,
        slots: int | None,
        budget_nano: int | None,
        rpm: tuple[int, int, float] | None,
        tpm: tuple[int, int, float] | None,
        taken_s: float,
        until: float,
    ) -> AllowanceMeter: ...
    @property
    def requests(self) -> int: ...
    @property
    def tokens_in_flight(self) -> int: ...
    @property
    def tokens_used(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def reserved_in_flight(self) -> int: ...
    @property
    def spent(self) -> int: ...
    exhausted: bool
    returned: bool
    def take(self, tokens: int, reserve_nano: int, now_mono: float) -> bool: ...
    def view(self, now_s: float) -> tuple[int, float, int, float]: ...
    def admit(
        self, tokens: int, reserve_nano: int, now_mono: float, now_s: float, anthropic: bool
    ) -> list[tuple[bytes, bytes]] | None: ...
    def settle(self, reserved_nano: int, tokens: int, used: int, cost_nano: int) -> bool: ...
    def unused(self) -> tuple[int, int, int, int]: ...

@final
class ChatRequests:
    """The request path of ``/v1/chat/completions`` in one call: the client's body to the bytes
    that go upstream (translated, compressed, with breakpoints) and the pipeline's facts, or
    None when the stages must do it; see ``ferrule._pure.chat_request``."""

    def __new__(
        cls,
        facts: Callable[[str], Facts],
        *,
        aliases: Mapping[str, str],
        version: str,
        strict: bool,
        ttl: str | None,
        file_tools: FileTools,
    ) -> ChatRequests: ...
    def prepare(self, raw: bytes, mode: str) -> Prepared | None: ...

def rate_headers(
    anthropic: bool,
    rpm_limit: int | None,
    tpm_limit: int | None,
    now_s: float,
    rpm_left: int,
    rpm_reset_us: float,
    tpm_left: int,
    tpm_reset_us: float,
) -> list[tuple[bytes, bytes]]:
    """A key's rate-limit headers from their numbers (``ferrule._pure.meter.rate_headers``)."""

def answer_to_openai(
    raw: bytes, model: str, created: int, json_tool: str | None = None
) -> tuple[bytes, tuple[int, int, int, int, int, int]] | None:
    """An Anthropic answer (JSON bytes) as an OpenAI ``chat.completion`` (JSON bytes) and its
    usage counts; None when ``raw`` is not a JSON object or a usage sum exceeds 64 bits. The rules
    are ``ferrule._pure.answer``'s. Runs without the GIL."""

def answer_usage(raw: bytes) -> tuple[int, int, int, int, int, int] | None:
    """The usage counts of an Anthropic answer relayed as it is; None when ``raw`` is not a JSON
    object. Runs without the GIL."""

@final
class UpstreamEngine:
    """The native backend's upstream HTTP engine: hyper's pooled HTTP/1.1 client (TLS by rustls)
    on a tokio thread of its own. Not a kernel: its twin is the aiohttp engine
    (``ferrule.upstream.Upstream``), behind the same surface (``ferrule.upstream_native``, which
    also documents the protocol). ``drain()`` returns ``(id, kind, status, a, b)``: kind 0, the
    head (``a`` the headers, ``b`` the whole body or None); 1, a stream to ``take``; 2, failed
    before the head (``a`` the cause, ``b`` the reason). ``take`` returns the bytes since the
    last take, the state (0 open, 1 ended, 2 timed out, 3 broken) and why it broke."""

    def __new__(
        cls,
        base_url: str,
        *,
        pool_size: int,
        connect_timeout: float,
        read_timeout: float,
        pool_timeout: float,
        whole_limit: int,
        stream_buffer: int,
    ) -> UpstreamEngine: ...
    @property
    def in_use(self) -> int: ...
    def fileno(self) -> int: ...
    def send(
        self,
        id: int,
        path: str,
        body: bytes,
        headers: list[tuple[str, str]],
        first_byte: float | None = None,
    ) -> None: ...
    def kick(self) -> None: ...
    def cancel(self, id: int) -> None: ...
    def take(self, id: int) -> tuple[bytes, int, str | None]: ...
    def drain(
        self,
    ) -> list[tuple[int, int, int, Any, Any]]: ...
    def close(self) -> None: ...
