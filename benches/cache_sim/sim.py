"""Anthropic's prompt cache, simulated offline, and the placements compared on it.

The rules (prompt-caching guide; ``../shared/reference/caching-compression-pricing.md``):

- the prompt is a sequence of blocks: tools, system blocks, message blocks. An entry is the
  prefix ending at a block boundary, identified by the content of every block up to it
  (``cache_control`` excluded) and the model;
- a request with breakpoints reads the longest live entry found at one of its breakpoints or at
  most :data:`LOOKBACK` boundaries before one; a hit refreshes that entry's TTL;
- each breakpoint past the read point writes its prefix when the prefix has at least the
  model's minimum tokens; each input token is billed once: read (0.1x), written (1.25x for 5m,
  2x for 1h, by the TTL of the first breakpoint that covers it) or uncached (1x);
- entries live 5 minutes (or 1 hour) from their last write or hit.

NOTE: only the entry actually read is refreshed (as in Ferrule's simulated upstream); whether
Anthropic also refreshes shorter entries a request covers is not documented. This can only make
cross-session reuse rarer, for every placement alike.

Tokens are estimated as one per 4 bytes of each block's canonical JSON (as the simulated upstream
and ``ferrule.breakpoints.estimate_tokens`` do): shares of cost hardly depend on the constant,
only the minimum-length checks do.

Placements compared:

- ``ferrule``: ``ferrule.breakpoints.place_breakpoints`` on every request (checked against the
  API's limits: at most 4, 1h before 5m);
- ``newest``: one breakpoint on the newest block of every request (the reference's baseline);
- ``ideal``: a clairvoyant bound with unlimited breakpoints and unlimited lookback: each request
  reads the longest live entry at any boundary, and writes exactly up to the longest prefix that
  some later request of the run shares (nothing more: it knows which tails are never reused).
  No real placement can beat it, so "within one point of the best placement" is measured
  against it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ferrule.breakpoints import find_breakpoints, min_cacheable_tokens, place_breakpoints

__all__ = ["LOOKBACK", "Prompt", "PromptCache", "Tally", "prompt_of", "run_placements"]

LOOKBACK = 20
TTL_S = {"5m": 300.0, "1h": 3600.0}
PRICE = {"uncached": 1.0, "read": 0.1, "5m": 1.25, "1h": 2.0}


def _tokens(data: bytes) -> int:
    return (len(data) + 3) // 4


@dataclass
class Prompt:
    """A request as the cache sees it: per boundary, the prefix id and cumulative tokens."""

    prefix: list[bytes]
    cumulative: list[int]

    @property
    def total(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0


def prompt_of(body: dict[str, Any]) -> Prompt:
    """Blocks in cache order (tools, system, messages), hashed without ``cache_control``."""
    blocks: list[Any] = list(body.get("tools") or [])
    system = body.get("system")
    if isinstance(system, str):
        blocks.append({"type": "text", "text": system})
    elif isinstance(system, list):
        blocks.extend(system)
    for message in body.get("messages") or []:
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}] if content else []
        blocks.extend({"role": message["role"], **b} for b in content)
    running = hashlib.blake2b(str(body.get("model")).encode(), digest_size=16)
    prefix: list[bytes] = []
    cumulative: list[int] = []
    total = 0
    for block in blocks:
        plain = {k: v for k, v in block.items() if k != "cache_control"}
        data = orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)
        running.update(hashlib.blake2b(data, digest_size=16).digest())
        prefix.append(running.copy().digest())
        total += _tokens(data)
        cumulative.append(total)
    return Prompt(prefix, cumulative)


@dataclass
class Tally:
    """Input tokens by bucket, summed over requests."""

    uncached: int = 0
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    requests: int = 0

    @property
    def total(self) -> int:
        return self.uncached + self.read + self.write_5m + self.write_1h

    @property
    def cost(self) -> float:
        return (
            self.uncached * PRICE["uncached"]
            + self.read * PRICE["read"]
            + self.write_5m * PRICE["5m"]
            + self.write_1h * PRICE["1h"]
        )

    @property
    def share(self) -> float:
        """Input cost as a share of the uncached cost (every token at the base price)."""
        return self.cost / self.total if self.total else 1.0


@dataclass
class PromptCache:
    """Live entries: prefix id -> (expires at, TTL seconds)."""

    min_tokens: int
    entries: dict[bytes, tuple[float, float]] = field(default_factory=dict)

    def _live(self, key: bytes, now: float) -> bool:
        entry = self.entries.get(key)
        return entry is not None and entry[0] > now

    def _read(self, p: Prompt, hit: int, now: float, tally: Tally) -> int:
        if hit < 0:
            return 0
        _, ttl = self.entries[p.prefix[hit]]
        self.entries[p.prefix[hit]] = (now + ttl, ttl)
        tally.read += p.cumulative[hit]
        return p.cumulative[hit]

    def request(
        self, p: Prompt, breakpoints: list[tuple[int, str]], now: float, tally: Tally
    ) -> None:
        """One request with explicit breakpoints ``(position, ttl)`` under the API's rules."""
        tally.requests += 1
        hit = -1
        for b, _ in breakpoints:
            for j in range(b, max(-1, b - LOOKBACK - 1), -1):
                if self._live(p.prefix[j], now):
                    hit = max(hit, j)
                    break
        covered = self._read(p, hit, now, tally)
        for b, ttl in sorted(breakpoints):
            if b <= hit or p.cumulative[b] < self.min_tokens:
                continue
            written = p.cumulative[b] - covered
            if ttl == "1h":
                tally.write_1h += written
            else:
                tally.write_5m += written
            covered = p.cumulative[b]
            self.entries[p.prefix[b]] = (now + TTL_S[ttl], TTL_S[ttl])
        tally.uncached += p.total - covered

    def request_ideal(self, p: Prompt, write_upto: int, now: float, tally: Tally) -> None:
        """Unlimited breakpoints and lookback: read the longest live entry anywhere, write
        every boundary up to ``write_upto`` (-1: nothing)."""
        tally.requests += 1
        hit = next(
            (j for j in range(len(p.prefix) - 1, -1, -1) if self._live(p.prefix[j], now)), -1
        )
        covered = self._read(p, hit, now, tally)
        for b in range(hit + 1, write_upto + 1):
            if p.cumulative[b] >= self.min_tokens:
                self.entries[p.prefix[b]] = (now + TTL_S["5m"], TTL_S["5m"])
                tally.write_5m += p.cumulative[b] - covered
                covered = p.cumulative[b]
        tally.uncached += p.total - covered


def _check_api_limits(marks: list[tuple[int, str]]) -> None:
    if len(marks) > 4:
        raise AssertionError(f"{len(marks)} breakpoints: the API allows 4")
    ttls = [ttl for _, ttl in sorted(marks)]
    if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
        raise AssertionError("a 1h breakpoint after a 5m one: the API rejects it")


Sessions = list[list[dict[str, Any]]]  # sessions of translated request bodies, in replay order


def run_placements(
    sessions: Sessions,
    *,
    model: str,
    gap_s: float = 30.0,
    isolated: bool = False,
    ttl: str = "5m",
    place: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Tally]:
    """Replay every session request by request (``gap_s`` apart, sessions back to back, one
    shared cache unless ``isolated``) under each placement; tallies by placement name."""
    place = place or (lambda body: place_breakpoints(body, ttl=ttl))
    minimum = min_cacheable_tokens(model)
    bodies = [[{**b, "model": model} for b in s] for s in sessions]
    plain = [[prompt_of(b) for b in s] for s in bodies]

    # For the ideal placement: the last request (in replay order, per cache scope) that shares
    # each prefix, so a request knows how far later requests will reuse it.
    def scopes() -> Iterable[list[tuple[int, int]]]:
        order = [(si, ri) for si, s in enumerate(plain) for ri in range(len(s))]
        if not isolated:
            yield order
            return
        for si, s in enumerate(plain):
            yield [(si, ri) for ri in range(len(s))]

    write_upto: dict[tuple[int, int], int] = {}
    for scope in scopes():
        last_use: dict[bytes, int] = {}
        for n, (si, ri) in enumerate(scope):
            for h in plain[si][ri].prefix:
                last_use[h] = n
        for n, (si, ri) in enumerate(scope):
            p = plain[si][ri]
            write_upto[(si, ri)] = max(
                (j for j, h in enumerate(p.prefix) if last_use[h] > n), default=-1
            )

    tallies = {name: Tally() for name in ("ferrule", "newest", "ideal")}
    caches: dict[str, PromptCache] = {}
    now = 0.0
    for si, session in enumerate(bodies):
        if isolated or not caches:
            caches = {name: PromptCache(minimum) for name in tallies}
        for ri, body in enumerate(session):
            now += gap_s
            p = plain[si][ri]
            marked = place(body)
            marks = [(b.position, b.ttl) for b in find_breakpoints(marked)]
            _check_api_limits(marks)
            if prompt_of(marked).prefix != p.prefix:
                raise AssertionError("placement changed the prompt's content")
            caches["ferrule"].request(p, marks, now, tallies["ferrule"])
            caches["newest"].request(p, [(len(p.prefix) - 1, "5m")], now, tallies["newest"])
            caches["ideal"].request_ideal(p, write_upto[(si, ri)], now, tallies["ideal"])
    return tallies
