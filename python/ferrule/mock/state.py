"""What one mock process remembers between requests: the script queue, the recorded requests,
the stream counters, the prompt cache and the rate-limit window.

Everything lives in the worker process that serves the request, so tests run the mock with one
worker. No locks: an ASGI worker runs its requests on one event loop.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .directives import Directives
from .usage import PromptCache

__all__ = ["RECORDED_REQUESTS", "MockState", "RateWindow"]

RECORDED_REQUESTS = 100


@dataclass
class RateWindow:
    """One-minute rate-limit accounting behind the ``anthropic-ratelimit-*`` headers."""

    requests_limit: int = 4000
    input_tokens_limit: int = 2_000_000
    output_tokens_limit: int = 400_000
    started: float = 0.0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def _roll(self, now: float) -> None:
        if now - self.started >= 60.0:
            self.started = now - (now % 60.0)
            self.requests = self.input_tokens = self.output_tokens = 0

    def count(
        self, *, input_tokens: int = 0, output_tokens: int = 0, now: float | None = None
    ) -> None:
        self._roll(time.time() if now is None else now)
        self.requests += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens

    def headers(
        self, *, exhausted: bool = False, now: float | None = None
    ) -> list[tuple[str, str]]:
        now = time.time() if now is None else now
        self._roll(now)
        reset = datetime.fromtimestamp(self.started + 60.0, tz=timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        tokens_limit = self.input_tokens_limit + self.output_tokens_limit
        rows = (
            ("requests", self.requests_limit, self.requests),
            ("tokens", tokens_limit, self.input_tokens + self.output_tokens),
            ("input-tokens", self.input_tokens_limit, self.input_tokens),
            ("output-tokens", self.output_tokens_limit, self.output_tokens),
        )
        out: list[tuple[str, str]] = []
        for name, limit, used in rows:
            remaining = 0 if exhausted and name == "requests" else max(0, limit - used)
            out += [
                (f"anthropic-ratelimit-{name}-limit", str(limit)),
                (f"anthropic-ratelimit-{name}-remaining", str(remaining)),
                (f"anthropic-ratelimit-{name}-reset", reset),
            ]
        return out


@dataclass
class MockState:
    cache: PromptCache
    script: deque[Directives] = field(default_factory=deque)
    recorded: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECORDED_REQUESTS))
    rate: RateWindow = field(default_factory=RateWindow)
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0
    requests_cancelled: int = 0
    open_streams: int = 0  # live, so a reset while streams run cannot make it negative

    def reset(self) -> None:
        self.script.clear()
        self.recorded.clear()
        self.cache.clear()
        self.rate = RateWindow()
        self.requests = self.streams_started = self.streams_completed = 0
        self.streams_cancelled = self.requests_cancelled = 0

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_cancelled": self.streams_cancelled,
            "open_streams": self.open_streams,
            "requests_cancelled": self.requests_cancelled,
        }
