"""The Live page's feed: requests in flight and the last completed ones, in this worker.

The request path calls ``started`` and ``finished`` (from ``ferrule.exchange``). With nobody
watching, ``started`` is one attribute test and ``finished`` one ``deque.append`` (bounded, so
the oldest record falls out): no lock, no allocation beyond the record the ledger already holds.
In-flight requests are listed only while a page watches (their count is always known from the
app). Each Granian worker has its own feed: with several workers a page sees the worker its
connection landed on."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ..ledger import RequestRecord

__all__ = ["RECENT", "Live"]

RECENT = 50  # completed requests kept for the page


class Live:
    __slots__ = ("_inflight", "recent", "version", "watchers")

    def __init__(self, recent: int = RECENT) -> None:
        self.recent: deque[RequestRecord] = deque(maxlen=recent)
        self._inflight: dict[int, RequestRecord] = {}
        self.version = 0  # bumped when something a page shows changed
        self.watchers = 0  # open /ui/api/live streams in this worker

    def started(self, record: RequestRecord) -> None:
        if self.watchers:
            self._inflight[id(record)] = record
            self.version += 1

    def finished(self, record: RequestRecord) -> None:
        self.recent.append(record)
        self.version += 1
        if self._inflight:
            self._inflight.pop(id(record), None)

    def snapshot(self, in_flight: int, now: float | None = None) -> dict[str, Any]:
        """What the page shows: no body, no key (key_name is the virtual key's name)."""
        now = time.time() if now is None else now
        if not self.watchers:
            self._inflight.clear()
        flying = sorted(self._inflight.values(), key=lambda r: r.ts)
        return {
            "in_flight": in_flight,
            "in_flight_requests": [
                {
                    "request_id": r.request_id,
                    "route": r.route,
                    "model": r.model,
                    "stream": r.stream,
                    "key_name": r.key_name,
                    "age_s": round(max(0.0, now - r.ts), 1),
                }
                for r in flying
            ],
            "recent": [_done(r) for r in reversed(self.recent)],
        }


def _done(r: RequestRecord) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "ts": r.ts,
        "route": r.route,
        "model": r.model,
        "stream": r.stream,
        "status": r.status,
        "outcome": r.outcome,
        "key_name": r.key_name,
        "input_tokens": r.input_tokens + r.cache_write_5m_tokens + r.cache_write_1h_tokens,
        "cache_read_tokens": r.cache_read_tokens,
        "output_tokens": r.output_tokens,
        "cache": r.cache_status,
        "ttfb_ms": None if r.ttfb_ms is None else round(r.ttfb_ms, 1),
        "latency_ms": round(r.latency_ms, 1),
    }
