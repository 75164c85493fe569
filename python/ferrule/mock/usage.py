"""Token counts: a deterministic input estimate and a small simulation of the prompt cache.

The estimate is one token per four bytes of each prompt segment's canonical JSON (tools, then
system blocks, then message blocks, the order in which the API builds its cache prefix), so
``count_tokens`` and ``usage`` agree: input + cache_creation + cache_read == count_tokens.

The cache follows the prompt-caching guide in outline: a ``cache_control`` breakpoint writes the
prefix that ends at it (when at least ``min_tokens`` long); a later request reads the longest
stored prefix found at one of its breakpoints or up to 20 blocks before one; an entry lives for its
TTL (5 minutes or 1 hour) and a hit refreshes it. Top-level ``cache_control`` marks the last block.
NOTE: prefixes are keyed by content, not by where the blocks sit, and the 1h-before-5m ordering
rule is not enforced.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["CacheUsage", "PromptCache", "Segment", "estimate", "forced", "segments"]

_LOOKBACK = 20
_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def estimate(text: str | bytes) -> int:
    """Tokens in ``text``: one per four UTF-8 bytes, at least one for anything non-empty."""
    data = text.encode() if isinstance(text, str) else text
    return (len(data) + 3) // 4


@dataclass(frozen=True)
class Segment:
    """One cacheable unit of the prompt."""

    tokens: int
    digest: bytes
    ttl: str | None  # the breakpoint's TTL when this block carries cache_control


def _segment(obj: Any) -> Segment:
    ttl: str | None = None
    if isinstance(obj, dict) and isinstance(obj.get("cache_control"), dict):
        ttl = str(obj["cache_control"].get("ttl") or "5m")
        obj = {k: v for k, v in obj.items() if k != "cache_control"}
    data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    return Segment(tokens=estimate(data), digest=hashlib.sha256(data).digest(), ttl=ttl)


def segments(body: dict[str, Any]) -> list[Segment]:
    """The prompt as cacheable segments: tools, system, then every message block in order."""
    out: list[Segment] = []
    for tool in body.get("tools") or []:
        out.append(_segment(tool))
    system = body.get("system")
    if isinstance(system, str) and system:
        out.append(_segment({"type": "text", "text": system}))
    elif isinstance(system, list):
        out.extend(_segment(block) for block in system)
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        role = message.get("role") if isinstance(message, dict) else None
        if isinstance(content, str):
            out.append(_segment({"role": role, "type": "text", "text": content}))
        elif isinstance(content, list):
            out.extend(_segment({"role": role, **b} if isinstance(b, dict) else b) for b in content)
    auto = body.get("cache_control")
    if isinstance(auto, dict) and out and out[-1].ttl is None:
        last = out[-1]
        out[-1] = Segment(last.tokens, last.digest, str(auto.get("ttl") or "5m"))
    return out


@dataclass(frozen=True)
class CacheUsage:
    input_tokens: int
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0

    @property
    def cache_creation(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    def to_json(self, output_tokens: int) -> dict[str, Any]:
        """The ``usage`` object of a message, in the API's field order."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m,
                "ephemeral_1h_input_tokens": self.cache_write_1h,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }


def forced(total: int) -> CacheUsage:
    """Non-zero cache reads and writes (both TTLs) for ``[mock:cache]``, whatever the prompt."""
    read = max(1, total // 2)
    creation = max(2, total // 4)
    one_hour = creation // 2
    return CacheUsage(
        input_tokens=max(1, total - read - creation),
        cache_read=read,
        cache_write_5m=creation - one_hour,
        cache_write_1h=one_hour,
    )


class PromptCache:
    """Prefixes seen before, by model, with their expiry time."""

    def __init__(self, min_tokens: int) -> None:
        self.min_tokens = min_tokens
        self._entries: dict[bytes, tuple[float, float]] = {}  # key -> (expires_at, ttl_seconds)

    def clear(self) -> None:
        self._entries.clear()

    def account(self, model: str, segs: list[Segment], *, now: float | None = None) -> CacheUsage:
        """Usage of one request; stores the prefixes it writes."""
        now = time.monotonic() if now is None else now
        total = sum(s.tokens for s in segs)
        breakpoints = [i for i, s in enumerate(segs) if s.ttl is not None]
        if not breakpoints:
            return CacheUsage(input_tokens=max(1, total))
        keys: list[bytes] = []
        cumulative: list[int] = []
        running = hashlib.sha256(model.encode())
        tokens = 0
        for seg in segs:
            running.update(seg.digest)
            keys.append(running.digest())
            tokens += seg.tokens
            cumulative.append(tokens)

        hit = -1
        for b in breakpoints:
            for j in range(b, max(-1, b - _LOOKBACK - 1), -1):
                entry = self._entries.get(keys[j])
                if entry is not None and entry[0] > now:
                    hit = max(hit, j)
                    break
        read = 0
        if hit >= 0:
            read = cumulative[hit]
            _, ttl_s = self._entries[keys[hit]]
            self._entries[keys[hit]] = (now + ttl_s, ttl_s)

        written = {"5m": 0, "1h": 0}
        covered = read
        for b in breakpoints:
            if b <= hit or cumulative[b] < self.min_tokens:
                continue
            ttl = segs[b].ttl or "5m"
            written[ttl] += cumulative[b] - covered
            covered = cumulative[b]
            self._entries[keys[b]] = (now + _TTL_SECONDS[ttl], _TTL_SECONDS[ttl])
        return CacheUsage(
            input_tokens=max(0, total - covered),
            cache_read=read,
            cache_write_5m=written["5m"],
            cache_write_1h=written["1h"],
        )
