"""Native (Rust) kernels. The contract: every name here has a pure-Python twin in
``ferrule._pure`` with the same signature and byte-identical output. Import via ``ferrule.backend``.
"""

class SseError(ValueError):
    """An SSE stream broke a configured size limit."""

class SseDecoder:
    """Incremental WHATWG SSE decoder: ``feed(bytes)`` returns complete ``(event, data, id)``."""

    retry: int | None
    def __init__(self, *, max_line_bytes: int = 0, max_event_bytes: int = 0) -> None: ...
    def feed(self, chunk: bytes) -> list[tuple[str, str, str]]: ...

class StreamTranslator:
    """Anthropic SSE bytes in, OpenAI chat.completion.chunk SSE bytes out."""

    started: bool
    done: bool
    outcome: str
    error: tuple[str, str] | None
    message_id: str | None
    stop_reason: str | None
    def __init__(
        self,
        model: str,
        created: int,
        *,
        include_usage: bool = False,
        max_event_bytes: int = 0,
    ) -> None: ...
    @property
    def usage(self) -> tuple[int, int, int, int, int, int]: ...
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...
