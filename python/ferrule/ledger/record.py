"""One client request as the ledger, the metrics and the access log see it.

Built from facts the proxy already has; it never holds a key or a body. ``tenant`` is a hash of
the caller's key, computed by the caller."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

from ..pricing import Usage

__all__ = ["CACHE_STATUSES", "OUTCOMES", "RequestRecord"]

# How a request ended. "truncated": the upstream stream ended without its final event;
# "upstream_error": Anthropic answered with an error (HTTP or in-stream); "error": Ferrule's own
# (bad request, no key, ...); "client_cancelled": the client went away first.
OUTCOMES: Final = ("complete", "client_cancelled", "upstream_error", "truncated", "error")
# Response cache result; "" when no response cache took part.
CACHE_STATUSES: Final = ("hit", "miss", "bypass", "")


@dataclass(slots=True)
class RequestRecord:
    """Token fields are Anthropic's billed usage, each input token in exactly one bucket. For a
    response-cache hit they are the replayed response's usage (billed $0, counted as saved)."""

    request_id: str
    route: str  # a fixed route name such as "/v1/chat/completions" (a metrics label)
    model: str  # the Anthropic model id sent upstream
    ts: float = field(default_factory=time.time)  # request start, Unix seconds
    tenant: str | None = None  # hash of the caller's key, never the key
    stream: bool = False
    status: int = 200  # HTTP status sent to the client
    input_tokens: int = 0  # uncached input
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    compression_removed_tokens: int = 0
    cache_status: str = ""  # one of CACHE_STATUSES
    attempts: int = 1  # upstream attempts, retries included
    ttfb_ms: float | None = None  # first response byte sent to the client
    latency_ms: float = 0.0
    backend: str = ""  # "rust" or "python"
    outcome: str = "complete"  # one of OUTCOMES
    usage_estimated: bool = False  # usage not (fully) reported by Anthropic, e.g. cancelled stream
    error_type: str | None = None  # e.g. "rate_limit_error", "overloaded_error", "timeout_error"
    upstream_request_id: str | None = None
    key_name: str | None = None  # the virtual key's name (keys mode), never the key
    upstream_key: str | None = None  # the upstream key pool member's name, never the key

    @property
    def response_cache_hit(self) -> bool:
        return self.cache_status == "hit"

    def set_usage(self, usage: Usage) -> None:
        """Copy the five token buckets (e.g. from ``Usage.from_anthropic``)."""
        self.input_tokens = usage.input_tokens
        self.cache_write_5m_tokens = usage.cache_write_5m_tokens
        self.cache_write_1h_tokens = usage.cache_write_1h_tokens
        self.cache_read_tokens = usage.cache_read_tokens
        self.output_tokens = usage.output_tokens
